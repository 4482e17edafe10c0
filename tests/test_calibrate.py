"""Calibration: real calm-only recordings through the daemon's chain, the choice proven by replaying it,
the selection rule on scripted scores, labelled recall, the config edit, and bad input at the CLI."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.adapters.runtime import BundleModel
from edge.core.config import Config, DecisionConfig, load_config, tomllib, validate_config
from edge.core.values import Prediction
from edge.stages.decision import Decider
from edge.synthetic import render_clip, write_stream, write_video
from edge.tools.calibrate import Recording, calibrate, report, sweep
from edge.tools.calibrate.sweep import just_above
from edge.tools.config_edit import ConfigEditError, edit_decision
from edge.tools.scan import file_camera, scan, select_camera

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
STEP = 0.28  # seconds between windows, as the demo bundle with hop 4 gives
CONFIG_TEXT = """\
# Store 12, back office Pi
device_id = "pi-12"  # as in the inventory

[model]
bundle = "demo"

[decision]
threshold = 0.5  # device-wide default

[[cameras]]
id = "door"
source = "rtsp://cam/door"  # front door

[[cameras]]
id = "till"
source = 0

[cameras.decision]
# set by hand after the refit
threshold = 0.7  # keep
end_windows = 4
"""


def rclstm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ})


@pytest.fixture(scope="module")
def config() -> Config:
    return Config.model_validate({"model": {"bundle": "demo"}, "cameras": [
        {"id": "door", "source": "rtsp://cam/door"}, {"id": "till", "source": 0}]})


@pytest.fixture(scope="module")
def calm(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two ordinary days in miniature: calm-only recordings of one store, no incident in them."""
    folder = tmp_path_factory.mktemp("calm")
    write_stream(folder / "monday.mp4", [("calm", 30.0)], seed=11)
    write_stream(folder / "tuesday.mp4", [("calm", 20.0)], seed=12)
    return [folder / "monday.mp4", folder / "tuesday.mp4"]


def predictions(scores: list[float], t0: float = 0.0) -> list[Prediction]:
    labels = ["calm", "fight"]
    out = []
    for i, score in enumerate(scores):
        ts = t0 + i * STEP
        out.append(Prediction(probs=np.array([1 - score, score], np.float32), labels=labels,
                              top_label="fight" if score >= 0.5 else "calm", anomaly_score=score, ts=ts,
                              wall=START + timedelta(seconds=ts), anomaly_label="fight"))
    return out


def decider_incidents(preds: list[Prediction], settings: DecisionConfig) -> int:
    decider = Decider(settings)
    for p in preds:
        decider.update(p)
    return decider.incidents


def test_calm_recordings_give_a_threshold_with_no_false_alarm_and_a_lower_one_with_some(
    config: Config, calm: list[Path]
) -> None:
    cal = calibrate(config, "door", calm, target=1.0)
    chosen = cal.chosen
    # No labels: the camera's start_windows (here the model's recommended one), or fewer at its threshold.
    configured = cal.base.start_windows
    assert chosen is not None and cal.options[configured] is not None
    assert chosen.threshold == cal.options[configured].threshold  # type: ignore[union-attr]
    assert all(cal.options[k] is None or cal.options[k].threshold > chosen.threshold  # type: ignore[union-attr]
               for k in cal.options if k < chosen.start_windows)
    assert cal.hours == pytest.approx(50 / 3600, rel=0.01)
    assert chosen.point.incidents == 0 and chosen.point.false_alarms_per_day == 0.0
    lower = round(chosen.threshold - 1e-4, 4)
    assert chosen.highest_quiet_run is not None and lower <= chosen.highest_quiet_run < chosen.threshold
    assert chosen.margin == pytest.approx(chosen.threshold - chosen.highest_quiet_run)

    # Proof through the daemon's own chain, file by file: the chosen setting stays silent...
    camera = select_camera(config, "door", None)
    model = BundleModel.configured(config.model)
    base, classifier = config.decision_for(camera), config.classifier_for(camera)
    chosen_settings = base.model_copy(update={"threshold": chosen.threshold, "start_windows": chosen.start_windows})
    for video in calm:
        result = scan(file_camera(camera, video), chosen_settings, classifier, model, "pi", "store")
        assert result.events == [], video
        # ...and on the cached scores a fresh Decider agrees, while one step lower raises alarms.
        cached = [w.prediction for w in result.windows]
        assert decider_incidents(cached, chosen_settings) == 0
    lower_settings = chosen_settings.model_copy(update={"threshold": lower})
    alarms = sum(len([e for e in scan(file_camera(camera, v), lower_settings, classifier, model, "pi", "store").events
                      if e.type == "start"]) for v in calm)
    assert alarms >= 1

    # More windows needed to start can only allow a lower (or the same) threshold.
    thresholds = [cal.options[k].threshold for k in sorted(cal.options)]  # type: ignore[union-attr]
    assert thresholds == sorted(thresholds, reverse=True)


def test_the_choice_rule_on_scripted_scores() -> None:
    quiet = [0.1] * 40 + [0.7] + [0.1] * 20 + [0.55, 0.6] + [0.1] * 40
    labelled = [0.1] * 10 + [0.65, 0.68] + [0.1] * 10
    base = DecisionConfig(end_windows=2, cooldown_s=5.0)
    recordings = [Recording(Path("quiet"), len(quiet) * STEP, predictions(quiet))]
    fight = Recording(Path("fight"), len(labelled) * STEP, predictions(labelled), [(10 * STEP, 12 * STEP)])

    cal = sweep(recordings, [], base.model_copy(update={"start_windows": 1}), 1.4, 0.0, "door")
    # The lowest threshold each run of k quiet windows does not reach, to 4 decimals.
    assert {k: c.threshold for k, c in cal.options.items() if c} == {1: 0.7001, 2: 0.5501, 3: 0.1001, 4: 0.1001}
    assert cal.chosen is not None and cal.chosen.start_windows == 1
    assert cal.chosen.highest_quiet_run == pytest.approx(0.7) and cal.chosen.margin == pytest.approx(1e-4)
    assert "why: no labelled incidents, so the camera's start_windows (1) stays" in report(cal)

    # Without labels the configured start_windows stays, or fewer that reach the same threshold; a count
    # with no passing threshold gives way to the nearest larger one.
    for configured, expected in ((2, (2, 0.5501)), (3, (3, 0.1001)), (4, (3, 0.1001)), (9, (3, 0.1001))):
        chosen = sweep(recordings, [], base.model_copy(update={"start_windows": configured}), 1.4, 0.0, "door").chosen
        assert chosen is not None and (chosen.start_windows, chosen.threshold) == expected, configured
    bursts = [Recording(Path("busy"), 40 * STEP, predictions(([1.0] * 3 + [0.1]) * 10))]  # no threshold < 1 quiets 1-3
    busy = sweep(bursts, [], base.model_copy(update={"start_windows": 1}), 1.4, 0.0, "door")
    assert [k for k, c in busy.options.items() if c is None] == [1, 2, 3]
    assert busy.chosen is not None and (busy.chosen.start_windows, busy.chosen.threshold) == (4, 0.1001)

    # With a labelled incident too short for one window at 0.7001, two windows at 0.5501 catch it.
    cal = sweep(recordings, [fight], base, 1.4, 0.0, "door")
    assert cal.chosen is not None and (cal.chosen.start_windows, cal.chosen.threshold) == (2, 0.5501)
    assert cal.chosen.point.recall == 1.0 and cal.options[1].point.recall == 0.0  # type: ignore[union-attr]
    assert cal.chosen.point.delay_s == pytest.approx(STEP)  # the second window of the run raises it
    assert cal.labelled_count == 1

    # A "quiet" recording that is one long alarm: no threshold under 1 keeps it quiet.
    loud = [Recording(Path("loud"), 50 * STEP, predictions([1.0] * 50))]
    cal = sweep(loud, [], base, 1.4, 1.0, "door")
    assert cal.chosen is None and set(cal.options.values()) == {None}
    assert just_above(0.7) == 0.7001 and just_above(0.0041) == 0.0042


def test_intervals_file_gives_recall_and_delay(config: Config, calm: list[Path], tmp_path: Path) -> None:
    spans = write_stream(tmp_path / "incident.mp4", [("calm", 4.0), ("fight", 5.0), ("calm", 4.0)], seed=21)
    _, start, end = spans[1]
    intervals = tmp_path / "intervals.txt"
    intervals.write_text(f"# the fight in aisle 3\nincident.mp4 {start:g} {end:g}\n")
    cal = calibrate(config, "door", calm[:1], target=1.0, intervals_file=intervals)
    assert cal.chosen is not None and cal.labelled_count == 1
    assert cal.labelled[0].path == tmp_path / "incident.mp4" and cal.labelled[0].intervals == [(start, end)]
    point = cal.chosen.point
    assert point.recall == 1.0
    assert point.delay_s is not None and 0.0 <= point.delay_s <= 3.0
    # The recall curve covers the grid for every start_windows.
    assert all(p.recall is not None for p in cal.points)


def test_labelled_folders_count_anomaly_labels_as_incidents(config: Config, calm: list[Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    write_video(tmp_path / "labelled" / "fight" / "brawl.mp4", render_clip("fight", 100, 160, 120, rng), 25.0)
    write_video(tmp_path / "labelled" / "calm" / "queue.avi", render_clip("calm", 100, 160, 120, rng), 25.0)
    cal = calibrate(config, "door", calm[:1], target=1.0, labelled_dir=tmp_path / "labelled")
    by_name = {r.path.name: r for r in cal.labelled}
    assert by_name["queue.avi"].intervals == []
    assert by_name["brawl.mp4"].intervals == [(0.0, pytest.approx(4.0, abs=0.05))]
    assert cal.chosen is not None and cal.chosen.point.recall == 1.0


def test_cli_writes_the_choice_into_the_camera_section_only(calm: list[Path], tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG_TEXT)
    out = tmp_path / "cal"
    proc = rclstm("calibrate", "--config", str(path), "--camera", "door", str(calm[0]), "--write", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "calibration.json").read_text())
    threshold, start_windows = report["chosen"]["threshold"], report["chosen"]["start_windows"]
    assert f"chosen: threshold {threshold:g}, start_windows {start_windows}" in proc.stdout
    assert (out / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config = load_config(path)
    door, till = config.cameras
    assert (config.decision_for(door).threshold, config.decision_for(door).start_windows) == (threshold, start_windows)
    assert config.decision_for(till) == config.decision.model_copy(update={"threshold": 0.7, "end_windows": 4})
    edited = path.read_text()
    diff = list(difflib.ndiff(CONFIG_TEXT.splitlines(), edited.splitlines()))
    assert [line for line in diff if line.startswith("- ")] == []  # every comment and key kept
    assert len([line for line in diff if line.startswith("+ ")]) == 4
    block = f"[cameras.decision]\nthreshold = {threshold!r}\nstart_windows = {start_windows}\n"
    assert f'source = "rtsp://cam/door"  # front door\n\n{block}\n[[cameras]]\nid = "till"' in edited

    # Again for the camera that already has a decision table: its value is replaced, its comment kept.
    proc = rclstm("calibrate", "--config", str(path), "--camera", "till", str(calm[1]), "--write", "--out", str(out),
                  "--no-plots")
    assert proc.returncode == 0, proc.stderr
    till_threshold = json.loads((out / "calibration.json").read_text())["chosen"]["threshold"]
    text = path.read_text()
    assert f"threshold = {till_threshold!r}  # keep" in text and "# set by hand after the refit" in text
    assert load_config(path).decision_for(load_config(path).cameras[1]).end_windows == 4


def test_edit_decision_layouts() -> None:
    dotted = '[[cameras]]\nid = "a"\nsource = 0\ndecision.threshold = 0.3 # tuned\n\n[mqtt]\nurl = "mqtt://h:1883"\n'
    edited = edit_decision(dotted, "a", 0.25, 3)
    assert "decision.threshold = 0.25 # tuned\ndecision.start_windows = 3\n" in edited
    assert edited.endswith('[mqtt]\nurl = "mqtt://h:1883"\n')

    last = '[[cameras]]\nid = "a"\nsource = 0'  # no trailing newline, no decision yet
    assert edit_decision(last, "a", 0.5, 2) == last + "\n\n[cameras.decision]\nthreshold = 0.5\nstart_windows = 2\n"

    inline = '[[cameras]]\nid = "a"\nsource = 0\ndecision = { threshold = 0.3 }\n'
    with pytest.raises(ConfigEditError, match="by hand"):
        edit_decision(inline, "a", 0.25, 3)
    with pytest.raises(ConfigEditError, match="camera b is not in the config file"):
        edit_decision(last, "b", 0.25, 3)

    # A camera whose [cameras.decision] still holds hop (before [classifier]): edited, hop kept where it is.
    old_layout = '[[cameras]]\nid = "a"\nsource = 0\n[cameras.decision]\nhop = 2\nthreshold = 0.3\n'
    edited = edit_decision(old_layout, "a", 0.25, 3)
    assert edited == old_layout.replace("threshold = 0.3\n", "threshold = 0.25\nstart_windows = 3\n")
    config = validate_config(tomllib.loads(edited))
    assert config.classifier_for(config.cameras[0]).hop == 2 and len(config.deprecations) == 1


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(calm: list[Path], tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG_TEXT)
    cfg = ["--config", str(path)]
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(3000))

    assert "no recordings given" in one_line_error(rclstm("calibrate", *cfg, "--camera", "door"))
    line = one_line_error(rclstm("calibrate", *cfg, "--camera", "lobby", str(calm[0])))
    assert line == f"config error: --camera lobby: no camera with that id in {path}; cameras: door, till"
    line = one_line_error(rclstm("calibrate", *cfg, "--camera", "door", str(calm[0]), str(tmp_path / "gone.mp4")))
    assert line == f"error: {tmp_path / 'gone.mp4'}: no such file; check the path of the recording"
    line = one_line_error(rclstm("calibrate", *cfg, "--camera", "door", str(junk)))
    assert line.startswith(f"error: {junk}: cannot open file source") and "not a video OpenCV can decode" in line

    intervals = tmp_path / "intervals.txt"
    intervals.write_text(f"{calm[0]} 4 2\n")
    line = one_line_error(rclstm("calibrate", *cfg, "--camera", "door", str(calm[0]), "--intervals", str(intervals)))
    assert line.startswith(f"error: --intervals {intervals}:1: expected 'path start_s end_s'")
    (tmp_path / "labelled" / "brawl").mkdir(parents=True)
    line = one_line_error(rclstm("calibrate", *cfg, "--camera", "door", str(calm[0]), "--labelled",
                                 str(tmp_path / "labelled")))
    assert "'brawl' is not one of the model's labels (calm, fight)" in line
    assert path.read_text() == CONFIG_TEXT
