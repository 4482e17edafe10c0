"""Interval windows, the group bootstrap, the event-level splice, and crosseval end to end on two generated sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converter import dataset as ds
from converter.bootstrap import METRICS, group_bootstrap
from converter.device_rule import classifier_defaults, decision_defaults
from converter.events import Player, Span, Stream, needs_splice, span_alarms, spliced_streams, stream_scores
from converter.sampling import WindowSampling
from edge.adapters.runtime import BundleModel


def test_interval_windows_for_a_known_clip() -> None:
    """A 5.03 s clip at 30 fps, 20 frames 0.1 s apart, hop 4: windows start every 0.4 s while 2 s still fit."""
    sampling = WindowSampling("interval", frames=20, interval_s=0.1, hop=4)
    windows = sampling.eval_indices(152, 30.0)
    assert len(windows) == 8  # starts 0.0, 0.4, ... 2.8 s; 3.2 + 2.0 > 5.03
    assert all(len(w) == 21 for w in windows)
    assert np.array_equal(windows[0], np.arange(0, 61, 3))  # every third frame: 0.1 s at 30 fps
    assert [int(w[0]) for w in windows] == [0, 12, 24, 36, 48, 60, 72, 84]  # 0.4 s = 12 frames apart
    training = sampling.train_indices(152, 30.0, np.random.default_rng(0))
    assert len(training) == 2  # floor(5.03 s / 2 s) windows per epoch, each 2 s long at random starts
    assert all(np.array_equal(np.diff(w), np.full(20, 3)) for w in training)


def test_a_clip_just_short_of_a_window_is_sampled_over_its_span_and_a_shorter_one_skipped() -> None:
    sampling = WindowSampling("interval", frames=20, interval_s=0.1)
    assert sampling.skip_reason(59, 30.0) is None  # 1.93 s: within 90 % of the 2 s window
    only = sampling.eval_indices(59, 30.0)
    assert len(only) == 1 and only[0][0] == 0 and only[0][-1] == 58
    assert "under 90% of a 2.00 s window" in str(sampling.skip_reason(50, 30.0))  # 1.63 s
    assert WindowSampling("spread", 20).skip_reason(19, 25.0) == "only 19 frames, fewer than the 20 a window needs"


def test_the_manifest_says_interval_sampling_and_its_interval() -> None:
    from edge.bundle import Sampling

    recorded = Sampling(**WindowSampling("interval", 20, 0.1).manifest([(152, 30.0), (59, 30.0)]))
    assert (recorded.method, recorded.frame_interval_s, recorded.window_s) == ("interval", 0.1, 2.0)
    assert recorded.interval_min_s == pytest.approx(58 / 30 / 20)  # the short clip's shrunk interval
    spread = Sampling(**WindowSampling("spread", 20).manifest([(50, 25.0), (60, 25.0), (100, 25.0)]))
    assert spread.method == "spread" and spread.frame_interval_s == pytest.approx(60 / 25 / 20)


def test_bootstrap_of_a_constant_accuracy_input_has_zero_width() -> None:
    truth = [True, False] * 10
    result = group_bootstrap(truth, truth, [f"g{i // 2}" for i in range(20)], resamples=200)
    for metric in METRICS:
        assert result[metric] == {"value": 1.0, "low": 1.0, "high": 1.0}, metric


def test_bootstrap_over_two_groups_gives_the_expected_bounds() -> None:
    """Group a all right, group b all wrong: resamples are aa (1.0), ab/ba (0.5) or bb (0.0)."""
    truth = [True, False, True, False]
    predicted = [True, False, False, True]
    result = group_bootstrap(truth, predicted, ["a", "a", "b", "b"], resamples=2000, seed=3)
    assert result["accuracy"] == {"value": 0.5, "low": 0.0, "high": 1.0}
    assert result["balanced_accuracy"]["value"] == 0.5
    # Resampling clips instead of groups would never draw an all-wrong set this often: groups move together.
    single = group_bootstrap(truth, predicted, ["a", "b", "c", "d"], resamples=2000, seed=3)
    assert single["accuracy"]["low"] == 0.0 and single["accuracy"]["high"] == 1.0


def _decoded(name: str, group: str, n_frames: int, fps: float, level: int) -> ds.Decoded:
    frames = np.full((n_frames, 8, 8, 3), level, np.uint8)
    frames[::2, :4] += 40  # movement in every other frame
    label = "fight" if name.startswith("f") else "calm"
    return ds.Decoded(ds.Clip(Path(f"/x/{label}/{name}.mp4"), label, group, "s"), frames, fps)


def test_splice_concatenates_a_groups_clips_and_records_their_spans() -> None:
    items = [_decoded("f1", "s:g1", 50, 25.0, 10), _decoded("c1", "s:g1", 60, 30.0, 20),
             _decoded("c2", "s:g2", 40, 25.0, 30)]
    streams = spliced_streams(items, [True, False, False], seed=0)
    assert [s.group for s in streams] == ["s:g1", "s:g2"] and all(s.spliced for s in streams)
    first = streams[0]
    assert len(first.frames) == len(first.timestamps) == 110
    assert np.all(np.diff(first.timestamps) > 0)
    spans = sorted(first.spans, key=lambda s: s.start)
    assert spans[0].start == 0.0 and spans[0].end == spans[1].start and spans[1].end == pytest.approx(4.0)
    assert {(s.clip, s.anomalous) for s in spans} == {("s/fight/f1.mp4", True), ("s/calm/c1.mp4", False)}
    assert spliced_streams(items, [True, False, False], seed=0)[0].spans == first.spans  # seeded order
    settings = decision_defaults()
    hop = classifier_defaults().hop
    assert needs_splice(items, 0.1, 20, settings, hop)  # 2 s clips: an incident needs 2.8 s
    assert not needs_splice([_decoded("f", "g", 150, 30.0, 0)], 0.1, 20, settings, hop)


def test_span_rules_found_and_false_alarm() -> None:
    stream = Stream("g (3 clips)", "g", "s", np.zeros((1, 1, 1, 3), np.uint8), np.zeros(1),
                    [Span("calm1", 0.0, 2.0, False), Span("fight", 2.0, 4.0, True), Span("calm2", 4.0, 6.0, False)],
                    True)
    window_s = 2.0
    # Alert at 4.5 s: its window's middle (3.5 s) is in the fight; it stays open into calm2 but did not start there.
    tail_s = 3.0
    assert span_alarms(stream.spans, [(4.5, 7.0)], window_s, tail_s) == [False, True, False]
    # Alert at 5.5 s (placed at 4.5 s, in calm2), closing at 8 s: a false alarm in calm2; the fight is missed.
    assert span_alarms(stream.spans, [(5.5, 8.0)], window_s, tail_s) == [False, False, True]
    assert span_alarms(stream.spans, [], window_s, tail_s) == [False, False, False]
    # An incident that outlives the fight by more than the tail is a false alarm on every calm span it swallows.
    longer = [*stream.spans, Span("calm3", 6.0, 8.0, False), Span("calm4", 8.0, 10.0, False)]
    assert span_alarms(longer, [(3.5, 30.0)], window_s, tail_s) == [False, True, False, False, True]
    assert span_alarms(longer, [(1.5, 30.0)], window_s, tail_s) == [True, True, False, False, True]


def test_stream_windows_follow_the_device_grid() -> None:
    item = _decoded("f", "g", 100, 25.0, 0)
    stream = spliced_streams([item], [True], seed=0)[0]
    settings = decision_defaults()
    calls = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return np.tile([0.2, 0.8], (len(batch), 1))

    ts, scores = stream_scores(Player(predict, "diff", 20, 0.1, settings, (1,), classifier_defaults()), stream)
    # 4 s at 0.1 s = 40 samples (0.0-3.9 s), 39 inputs; windows of 20 every 4 samples: starts 0..16.
    assert len(ts) == 5 and np.allclose(np.diff(ts), 0.4) and ts[0] == pytest.approx(2.0)
    assert calls[0][1:] == (20, 8, 8, 3) and np.allclose(scores, 0.8)


@pytest.fixture(scope="module")
def two_generated_sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two sources that differ: short small clips (spliced at event level) and long larger ones (one stream each)."""
    from converter.synth import write_dataset

    root = tmp_path_factory.mktemp("sources")
    write_dataset(root / "short", clips_per_class=4, seed=1, size=(64, 48), frames_range=(30, 36))
    write_dataset(root / "long", clips_per_class=4, seed=2, size=(96, 72), frames_range=(60, 70))
    return root / "short", root / "long"


@pytest.fixture(scope="module")
def crosseval_out(two_generated_sources: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`crosseval` run once on the two generated sources (1 seed, tiny model); its --out folder.

    At a hop of 3, not the device's default 4: the event level must be scored on the hop the run was
    given, and the bundle converted from it must carry that hop with its decision settings.
    """
    from converter.cli import main

    short, long = two_generated_sources
    out = tmp_path_factory.mktemp("crosseval") / "out"
    assert main(["crosseval", str(short), f"far={long}", "--anomaly-classes", "fight", "--out", str(out),
                 "--seeds", "1", "--epochs", "1", "--filters", "4", "--pools", "8", "--frames", "8",
                 "--sampling", "interval", "--interval", "0.1", "--hop", "3", "--batch-size", "8",
                 "--bootstrap", "100", "--cache", str(out.parent / "cache")]) == 0
    return out


@pytest.mark.slow
def test_crosseval_end_to_end_writes_every_field(crosseval_out: Path) -> None:
    out = crosseval_out
    results = json.loads((out / "results.json").read_text())
    assert (out / "crosseval.png").read_bytes()[:4] == b"\x89PNG"
    assert set(results) == {"created_at", "argv", "options", "sources", "labels", "anomaly_labels", "class_map",
                            "grouping", "sampling", "event_interval_s", "decision", "classifier", "seeds", "protocols",
                            "bootstrap", "complete", "summary", "runs", "units", "streams", "decision_sweep"}
    assert results["complete"] is True
    assert [s["name"] for s in results["sources"]] == ["short", "far"]
    assert results["sampling"]["method"] == "interval" and results["decision"]["start_windows"] == 3
    assert results["classifier"] == {"hop": 3, "scene_cut": 0.6}
    rows = {(r["protocol"], r["level"], r["source"]): r for r in results["summary"]}
    assert set(rows) == {(p, level, s) for p in ("loso", "group") for level in ("clip", "event")
                         for s in ("short", "far")}
    for row in rows.values():
        assert set(row["metrics"]) == set(METRICS)
        assert all(set(m) == {"value", "low", "high"} for m in row["metrics"].values())
        assert row["per_seed"][0]["seed"] == 0 and set(METRICS) <= set(row["per_seed"][0])
    assert rows["loso", "clip", "short"]["units"] == 8 and rows["loso", "clip", "far"]["units"] == 8
    assert rows["loso", "event", "short"]["unit"] == "span" and rows["loso", "event", "far"]["unit"] == "clip"
    loso = [r for r in results["runs"] if r["protocol"] == "loso"]
    assert {r["test"] for r in loso} == {"short", "far"}
    for run in loso:
        assert {n.split("/")[0] for n in run["test_clip_names"]} == {run["test"]}
        assert run["test"] not in {n.split("/")[0] for n in run["train_clip_names"]}
    event_units = [u for u in results["units"] if u["level"] == "event"]
    assert {"stream", "clip", "group", "source", "start_s", "end_s", "anomalous", "alarm", "incidents"} <= set(
        event_units[0])
    # Every event stream's window scores are kept, and replaying them at the shipped settings gives the same alarms.
    assert {(u["protocol"], u["seed"], u["stream"]) for u in event_units} == {
        (w["protocol"], w["seed"], w["stream"]) for w in results["streams"]}
    from converter.decision_sweep import replay
    from converter.device_rule import decision_defaults

    again = replay(results, decision_defaults())
    for source in ("short", "far"):
        mine = [u for u in event_units if u["protocol"] == "loso" and u["source"] == source]
        assert again[source]["units"] == len(mine)
        assert again[source]["recall"] == rows["loso", "event", source]["metrics"]["recall"]["value"]
    sweep = results["decision_sweep"]
    assert sweep["protocol"] == "loso" and len(sweep["rows"]) == 52
    # rescore re-derives the event level from the recorded scores: under unchanged rules, the same figures.
    from converter.cli import main

    copy = out / "rescored.json"
    copy.write_text(json.dumps(results))
    assert main(["rescore", str(copy)]) == 0
    again_results = json.loads(copy.read_text())
    assert again_results["summary"] == results["summary"] and again_results["units"] == results["units"]
    copy.write_text(json.dumps({**results, "streams": []}))
    assert main(["rescore", str(copy)]) == 2
    assert main(["rescore", str(out / "missing.json")]) == 2
    from converter.decision_sweep import FALSE_ALARM_CAP

    allowed = [r for r in sweep["rows"] if r["worst_false_alarm_rate"] <= FALSE_ALARM_CAP]
    if allowed:  # the best setting under the false-alarm cap; else the one with the fewest false alarms
        assert sweep["best"]["worst_balanced_accuracy"] == max(r["worst_balanced_accuracy"] for r in allowed)
    else:
        assert sweep["best"]["worst_false_alarm_rate"] == min(r["worst_false_alarm_rate"] for r in sweep["rows"])


@pytest.mark.slow
def test_train_and_evaluate_on_two_sources_with_a_class_map(
    two_generated_sources: tuple[Path, Path], crosseval_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run.json records sources, class map and sampling; evaluate finds the held-out clips of both sources by name."""
    from converter.cli import main

    short, long = two_generated_sources
    run_dir, cache = tmp_path / "run", str(tmp_path / "cache")
    sources = [str(short), f"far={long}", "--class-map", "calm=normal,fight=fight"]
    assert main(["train", *sources, "--anomaly-classes", "fight", "--out", str(run_dir), "--epochs", "1",
                 "--filters", "4", "--pools", "8", "--frames", "8", "--sampling", "interval", "--batch-size", "8",
                 "--cache", cache]) == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert [s["name"] for s in run["sources"]] == ["short", "far"] and run["labels"] == ["normal", "fight"]
    assert run["class_map"] == {"calm": "normal", "fight": "fight"} and run["sampling"]["method"] == "interval"
    assert {name.split("/")[0] for name in run["test_clips"]} == {"short", "far"}  # stratified per source
    capsys.readouterr()
    assert main(["evaluate", str(run_dir / "model.keras"), *sources[:2], "--json", "--cache", cache]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clips"] == len(run["test_clips"]) and result["missing_test_clips"] == []
    assert result["sampling"] == "interval" and set(result["binary"]) >= {"accuracy", "recall"}

    # The bundle's manifest is the model card: the sources with their terms, the crosseval figures, the budget.
    bundle = tmp_path / "bundle"
    assert main(["convert", str(run_dir / "model.keras"), "--out", str(bundle), "--crosseval",
                 str(crosseval_out / "results.json"), "--licence", "short=MIT", "--licence", "far=evaluation only",
                 "--cache", cache]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["data"] == [{"name": "short", "clips": 8, "licence": "MIT"},
                                {"name": "far", "clips": 8, "licence": "evaluation only"}]
    summary = json.loads((crosseval_out / "results.json").read_text())["summary"]
    assert len(manifest["crosseval"]) == len(summary)
    first = manifest["crosseval"][0]
    assert (first["protocol"], first["level"], first["source"]) == (summary[0]["protocol"], summary[0]["level"],
                                                                   summary[0]["source"])
    assert first["balanced_accuracy"]["value"] == summary[0]["metrics"]["balanced_accuracy"]["value"]
    budget = manifest["budget"]
    assert budget["mac_per_frame"] > 0 and "ai-edge-litert" in budget["x86_ms_per_frame"]
    best = json.loads((crosseval_out / "results.json").read_text())["decision_sweep"]["best"]
    assert (manifest["decision"]["threshold"], manifest["decision"]["start_windows"]) == (
        best["threshold"], best["start_windows"])
    assert BundleModel(bundle).recommended_decision() == {"threshold": best["threshold"],
                                                          "start_windows": best["start_windows"]}
    assert manifest["decision"]["hop"] == 3 and BundleModel(bundle).recommended_classifier() == {"hop": 3}
    capsys.readouterr()
    assert main(["inspect", str(bundle)]) == 0
    shown = capsys.readouterr().out
    assert "far: 8 clips, evaluation only" in shown and "loso clip short" in shown and "device budget" in shown
    assert f"decision settings: threshold {best['threshold']}" in shown
    # A licence for a source the run never had, or a file that is not a crosseval result, is one line, exit 2.
    assert main(["convert", str(run_dir / "model.keras"), "--out", str(tmp_path / "b2"), "--licence", "nope=MIT",
                 "--cache", cache]) == 2
    assert "--licence nope: no such source" in capsys.readouterr().err
    assert main(["convert", str(run_dir / "model.keras"), "--out", str(tmp_path / "b3"), "--crosseval",
                 str(run_dir / "run.json"), "--cache", cache]) == 2
    assert "not a crosseval results.json" in capsys.readouterr().err


def _sweep_input(clips: dict[str, list[tuple[float, bool]]] | None = None) -> dict:
    """Recorded window scores of held-out sources, as crosseval writes them (windows of 2 s at 0.1 s).

    By default source a's fight scores 0.6 (found only below a 0.6 threshold) and its calm clip 0.45;
    source b's fight scores 0.9 and its calm clip 0.55, so a threshold of 0.6 with one window is the
    only setting that is right everywhere. ``clips`` gives each source's (score, anomalous) clips instead.
    """
    if clips is None:
        clips = {"a": [(0.6, True), (0.45, False)], "b": [(0.9, True), (0.55, False)]}
    ts = [2.0 + 0.4 * i for i in range(8)]
    units, streams = [], []
    for source, mine in clips.items():
        for i, (score, anomalous) in enumerate(mine):
            name = f"{source}/{i}"
            units.append({"protocol": "loso", "seed": 0, "level": "event", "stream": name, "clip": name,
                          "group": name, "source": source, "start_s": 0.0, "end_s": 5.0, "anomalous": anomalous})
            streams.append({"protocol": "loso", "seed": 0, "stream": name, "source": source, "ts": ts,
                            "scores": [score] * len(ts)})
    return {"options": {"frames": 20}, "event_interval_s": 0.1, "decision": decision_defaults().model_dump(),
            "classifier": {"hop": 4},
            "units": units, "streams": streams}


def test_decision_sweep_picks_the_setting_best_on_the_worst_source() -> None:
    from converter.decision_sweep import replay, sweep_results, sweep_table

    results = _sweep_input()
    current = replay(results, decision_defaults())  # threshold 0.7: a's fight is missed
    assert current["a"]["recall"] == 0.0 and current["b"]["balanced_accuracy"] == 1.0
    sweep = sweep_results(results, thresholds=(0.4, 0.6, 0.7), start_windows=(1, 3))
    assert (sweep["best"]["threshold"], sweep["best"]["worst_balanced_accuracy"]) == (0.6, 1.0)
    assert sweep["current"]["worst_balanced_accuracy"] == 0.5
    assert len(sweep["rows"]) == 6 and "threshold 0.60" in sweep_table(sweep)
    assert sweep["best"]["worst_false_alarm_rate"] == 0.0 and "false alarms 0.000" in sweep_table(sweep)


def test_decision_sweep_gives_up_a_little_balanced_accuracy_rather_than_alarm_on_calm_footage() -> None:
    """The setting best by balanced accuracy alone alarms on a quarter of a's calm clips; it is passed over."""
    from converter.decision_sweep import FALSE_ALARM_CAP, sweep_results

    calm = [(0.45, False)] + [(0.2, False)] * 3
    results = _sweep_input({"a": [(0.6, True), (0.42, True), *calm], "b": [(0.9, True), (0.2, False)]})
    sweep = sweep_results(results, thresholds=(0.4, 0.5), start_windows=(1,))
    low, high = sweep["rows"]
    # At 0.4 every fight of a is found (balanced accuracy 0.875) but 1 calm clip in 4 alarms.
    assert (low["worst_balanced_accuracy"], low["worst_false_alarm_rate"]) == (0.875, 0.25)
    assert low["worst_false_alarm_rate"] > FALSE_ALARM_CAP
    assert (high["worst_balanced_accuracy"], high["worst_false_alarm_rate"]) == (0.75, 0.0)
    assert sweep["best"]["threshold"] == 0.5 and sweep["false_alarm_cap"] == FALSE_ALARM_CAP
    # When no setting stays under the cap, the one with the fewest false alarms is chosen.
    noisy = _sweep_input({"a": [(0.6, True), (0.45, False), (0.35, False)], "b": [(0.9, True), (0.2, False)]})
    fallback = sweep_results(noisy, thresholds=(0.3, 0.4), start_windows=(1,))
    assert [r["worst_false_alarm_rate"] for r in fallback["rows"]] == [1.0, 0.5]
    assert fallback["best"]["threshold"] == 0.4
