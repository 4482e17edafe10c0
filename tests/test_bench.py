"""`python -m bench --quick` end to end on generated clips and the session's tiny model.

Benchmarks are never timed assertions: this proves every benchmark runs on real components (the
converter, both runtimes, the daemon as a process, a real mosquitto) and writes every table with
rows whose values make sense (positive costs, agreement fractions, frames held, memory in range).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import Settings
from bench.pipeline_overhead import KINDS, kind_passes
from testbed.broker import mosquitto_binary

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("model_cost", "pipeline_overhead", "floor", "memory_startup", "latency", "accuracy", "scaling")


@pytest.fixture(scope="module")
def quick_results(trained_run: Path, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    mosquitto_binary()  # fails with the install hint when the broker is missing
    work = tmp_path_factory.mktemp("bench")
    out = work / "quick.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--model", str(trained_run / "model.keras"),
         "--data", str(synth_data), "--work", str(work / "cache"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "## Model cost per classification" in done.stdout
    return json.loads(out.read_text())


def test_every_table_has_rows_and_the_machine(quick_results: dict) -> None:
    machine = quick_results["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["python"] and machine["ai_edge_litert"]
    assert sorted(quick_results["tables"]) == sorted(TABLES)
    for name in TABLES:
        table = quick_results["tables"][name]
        assert table["rows"], f"{name}: no rows ({table['notes']})"
        assert not any(n.startswith("failed") for n in table["notes"]), table["notes"]
        for row in table["rows"]:
            assert set(row) <= set(table["columns"]), (name, row)


def test_model_cost_rows_compare_three_paths_on_the_same_windows(quick_results: dict) -> None:
    rows = quick_results["tables"]["model_cost"]["rows"]
    assert {r["mode"] for r in rows} == {"float32", "dynamic"}
    for row in rows:
        assert row["a_keras_ms"] > 0 and row["b_window_ms"] > 0 and row["c_stream_ms"] > 0
        assert row["a_over_c"] == pytest.approx(row["a_keras_ms"] / row["c_stream_ms"], rel=0.02)
        for pair in ("a_b", "a_c", "b_c"):
            assert 0.0 <= row[f"top1_agree_{pair}"] <= 1.0
        # The whole-window bundle and the streaming pair are the same network in the same mode.
        assert row["top1_agree_b_c"] == 1.0


def test_pipeline_memory_and_scaling_figures_are_sane(quick_results: dict) -> None:
    tables = quick_results["tables"]
    overhead = {r["stream"]: r for r in tables["pipeline_overhead"]["rows"]}
    # Quick streams are a few seconds long, so the marginal (long - short) figures are noise-sized and may
    # even come out negative; what must hold is that every stream kind was measured on both sides.
    assert list(overhead) == ["H.264 640x360", "H.264 1280x720", "MPEG-4 640x360", "MPEG-4 320x240",
                              "MJPEG 640x360 over HTTP"]
    for row in overhead.values():
        assert all(isinstance(row[c], float) for c in ("read_ms", "daemon_ms", "ratio"))
        assert row["goal_met"] in ("yes", "no") and 20 < row["daemon_rss_mb"] < 2000
    assert overhead["MJPEG 640x360 over HTTP"]["codec"] == "mjpeg"
    sizes = {d["stream"]: d["long"]["size"] for d in tables["pipeline_overhead"]["streams"]}
    assert sizes["MPEG-4 320x240"] == [320, 240]
    for detail in tables["pipeline_overhead"]["streams"]:
        assert len(detail["ratios"]) == 1 and detail["long"]["seconds"] > detail["short"]["seconds"]
    # Each long stream plays its segments as many times as the run says for its kind (once in a quick run).
    one_pass = {d["stream"]: d["long"]["seconds"] / d["passes"] for d in tables["pipeline_overhead"]["streams"]}
    assert all(p == pytest.approx(one_pass["MJPEG 640x360 over HTTP"], abs=0.2) for p in one_pass.values())
    floor = {r["stream"]: r for r in tables["floor"]["rows"]}
    assert list(floor) == list(overhead)[:4]  # the files; the MJPEG camera is left out
    for row in floor.values():
        assert all(isinstance(row[f"{c}_ms"], float) for c in ("read", "grab", "retrieve", "prepare", "input"))
        assert row["goal_reachable"] in ("yes", "no")
    memory = tables["memory_startup"]["rows"]
    litert = [r for r in memory if r["runtime"] == "ai-edge-litert"]
    assert [r["stream"] for r in litert] == ["64x64 (floor)", "640x360", "1280x720"]
    assert litert[0]["camera_mb"] is None
    assert litert[2]["goal"] == "<= 90 MB" and litert[1]["goal"] == "<= 150 MB"
    for row in memory:
        assert 20 < row["peak_rss_mb"] < 2000
        # The split is taken at the highest sample, so it adds up to at most the kernel's high-water mark
        # (give or take the three figures' rounding to 0.1 MB).
        assert row["anon_mb"] > 5 and row["file_mb"] > 5
        assert row["anon_mb"] + row["file_mb"] <= row["peak_rss_mb"] + 0.151
        assert 0 < row["to_running_s"] <= row["to_first_window_s"]
        # The stack alone (bench.stack) is a floor under the daemon: our code and its pydantic config
        # weigh more than 5 MB on top of it.
        assert row["stack_mb"] > 20 and row["over_stack_mb"] > 5
        assert row["over_stack_mb"] == pytest.approx(row["peak_rss_mb"] - row["stack_mb"], abs=0.11)
    # A 1280x720 frame is 225 times a 64x64 one: decoding and converting it shows above the floor.
    assert litert[2]["camera_mb"] > 3
    assert [r["cameras"] for r in tables["scaling"]["rows"]] == [1, 2]
    for row in tables["scaling"]["rows"]:
        assert 0 < row["fps_held_min"] <= row["fps_held_mean"] <= 26 and row["cpu_cores"] > 0


def test_latency_and_accuracy_rows(quick_results: dict) -> None:
    tables = quick_results["tables"]
    for row in tables["latency"]["rows"]:
        assert row["detected"] in ("yes", "no") and row["goal_s"] > 0
        assert row["latency_s"] is None or row["latency_s"] > 0
    assert tables["latency"]["events_received"] >= 0
    models = [r["model"] for r in tables["accuracy"]["rows"]]
    assert models == ["keras (float32)", "bundle float32", "bundle dynamic"]
    for row in tables["accuracy"]["rows"]:
        assert row["clips"] > 0 and 0.0 <= row["accuracy"] <= 1.0 and row["size_kb"] > 0
    assert all("ai-edge-litert" in r["runtimes"] for r in tables["accuracy"]["rows"][1:])


def test_unknown_model_is_a_one_line_usage_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--model", str(tmp_path / "none.keras")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "--model" in done.stderr and "no such file" in done.stderr


@pytest.mark.parametrize("step", ["grab", "retrieve", "prepare", "input"])
def test_the_floor_loop_does_the_daemons_work_up_to_its_step(step: str, tmp_path: Path) -> None:
    from bench.floor import steps_loop
    from edge.bundle import read_manifest
    from edge.models import resolve_bundle
    from testbed.faults import pattern_video

    # 2 s at 25 fps. The shipped bundle samples every 0.25 s, 6.25 frames: the frame nearest each target
    # (0, 0.24, 0.48 of a tie at 0.5, 0.76, 1.0, ...) is taken, 8 of them up to 1.75 s, and since the next
    # frame's time is known, no frame that is passed over is retrieved.
    bundle = resolve_bundle("builtin")
    assert read_manifest(bundle).sampling.frame_interval_s == 0.25
    video = pattern_video(tmp_path / "pattern.mp4", 320, 240, frames=50, fps=25.0)
    frames, retrieved, prepared = steps_loop(str(video), str(bundle), step)
    assert frames == 50
    assert retrieved == {"grab": 0}.get(step, 8)
    assert prepared == {"grab": 0, "retrieve": 0}.get(step, 8)


def test_a_stream_written_without_an_h264_encoder_is_rebuilt_once_there_is_one(synth_data: Path,
                                                                                  tmp_path: Path) -> None:
    """A stream asked for as H.264 but cached as MPEG-4 (no encoder when it was built) is not passed off as
    H.264 once an encoder is installed: it is written again."""
    from bench.streams import build_stream, h264_command

    if h264_command(tmp_path / "probe.mp4", (64, 48)) is None:
        pytest.skip("no H.264 encoder here (ffmpeg with libx264 or GStreamer's x264enc; .ci/run installs one)")
    segments = [("fight", 1.0)]
    first = build_stream(synth_data, segments, tmp_path, (64, 48), "h264")
    assert first["codec"] == "h264"
    meta_path = Path(first["path"]).with_suffix(".json")
    meta_path.write_text(json.dumps({**first, "codec": "mpeg4"}))  # as a machine without the encoder wrote it
    again = build_stream(synth_data, segments, tmp_path, (64, 48), "h264")
    assert again["codec"] == "h264" and json.loads(meta_path.read_text())["codec"] == "h264"
    assert build_stream(synth_data, segments, tmp_path, (64, 48), "h264") == json.loads(meta_path.read_text())


def test_a_full_run_plays_cheap_streams_for_longer(tmp_path: Path) -> None:
    """Start-up's CPU swings by tenths of a second from run to run: a full run's long stream plays each kind's
    segments often enough that this weighs little against what the stream costs (cheaper kinds: more passes);
    a quick run only checks that everything runs, once."""
    full, quick = (Settings(quick=q, model=None, data=None, work=tmp_path) for q in (False, True))
    passes = {name: kind_passes(full, k) for name, _, _, _, k in KINDS}
    assert passes["MPEG-4 320x240"] > passes["MPEG-4 640x360"] > passes["H.264 640x360"] >= 3
    assert passes["MJPEG 640x360 over HTTP"] == 1  # a live camera plays in real time
    assert {kind_passes(quick, k) for *_, k in KINDS} == {1}
