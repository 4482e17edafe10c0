"""The command line as a user meets it: real subprocesses, exit codes and the lines they print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest

from edge.synthetic import write_stream

ROOT = Path(__file__).resolve().parents[1]


def rclstm(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_schema_event_prints_the_committed_schema() -> None:
    proc = rclstm("schema", "event")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema == json.loads((ROOT / "docs" / "schemas" / "event.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)


def test_config_errors_are_one_line_each_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('colour = "red"\n[decision]\nthreshold = 2\n[[cameras]]\nid = "a b"\nsource = 0\n')
    proc = rclstm("run", "--config", str(config))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    assert all(line.startswith("config error: ") for line in lines)
    assert {line.split(":")[1].split()[0] for line in lines} == {"colour", "decision.threshold", "cameras.0.id"}
    assert "Traceback" not in proc.stderr


def test_bad_flag_values_are_config_errors(tmp_path: Path) -> None:
    proc = rclstm("run", "--broker", "http://nope", "--device-id", "has space", "--source", "x.mp4")
    assert proc.returncode == 2
    assert "config error: mqtt.url = 'http://nope'" in proc.stderr
    assert "config error: device_id = 'has space'" in proc.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    proc = rclstm("check", "--config", str(tmp_path / "absent.toml"))
    assert proc.returncode == 2
    expected = f"FAIL config: {tmp_path / 'absent.toml'}: cannot read the config file (No such file or directory)"
    assert proc.stdout.strip() == expected


def test_usage_error_exits_2() -> None:
    proc = rclstm("run", "--no-such-flag")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, "missing; convert the model again"),
        ({"manifest.json": "{not json"}, "not valid JSON"),
        ({"manifest.json": '{"name": "x"}'}, "manifest.json: "),
    ],
)
def test_broken_bundle_is_one_line_and_non_zero(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name, text in files.items():
        (bundle / name).write_text(text)
    video = tmp_path / "none.mp4"
    video.write_bytes(b"")  # exists: the bundle is what fails
    proc = rclstm("run", "--model", str(bundle), "--source", str(video), "--fast")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr


def _times(stdout: str) -> list[datetime]:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert events, stdout
    return [datetime.fromisoformat(e[key].replace("Z", "+00:00"))
            for e in events for key in ("started_at", "ended_at", "emitted_at") if e[key]]


@pytest.mark.parametrize("command", ["fast", "demo"])
def test_event_times_never_lie_in_the_future(tmp_path: Path, command: str) -> None:
    """A file read faster than real time is anchored so its last frame is when reading started."""
    if command == "fast":
        video = tmp_path / "fight.mp4"
        write_stream(video, [("calm", 6.0), ("fight", 5.0), ("calm", 6.0)], fps=25)
        proc = rclstm("run", "--source", str(video), "--fast", "--model", "demo")
    else:
        proc = rclstm("demo")
    finished = datetime.now(timezone.utc)
    assert proc.returncode == 0, proc.stderr
    times = _times(proc.stdout)
    assert max(times) <= finished, (max(times), finished)
    assert min(times) >= finished - timedelta(seconds=120)


def test_run_with_a_missing_file_exits_2_at_once(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent.mp4"
    proc = rclstm("run", "--source", str(missing), "--model", "demo", timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: camera cam0: {missing}: no such file; check the path"]


def test_check_lines_are_its_own(tmp_path: Path, mosquitto_broker) -> None:
    """No doubled camera prefix, no OpenCV/FFmpeg lines, an unusable state_dir fails, a missing site warns."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'device_id = "pi-1"\nstate_dir = "/proc/rclstm"\n[model]\nbundle = "demo"\n'
        f'[mqtt]\nurl = "{mosquitto_broker.url}"\n'
        '[[cameras]]\nid = "door"\nsource = "rtsp://127.0.0.1:9/stream"\nopen_timeout_s = 2\n'
        f'[[cameras]]\nid = "yard"\nsource = "{tmp_path / "gone.mp4"}"\n'
    )
    proc = rclstm("check", "--config", str(config))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "PASS config", "WARN config", "FAIL camera door", "FAIL camera yard", "PASS model", "PASS broker",
        "FAIL state_dir"]
    assert 'site is not set, so every event says site "default"' in lines[1]
    assert lines[2].startswith("FAIL camera door: cannot open rtsp source rtsp://127.0.0.1:9/stream: ")
    assert lines[3].startswith(f"FAIL camera yard: cannot open file source {tmp_path / 'gone.mp4'}: no such file")
    assert lines[6].startswith("FAIL state_dir: state_dir /proc/rclstm is not writable (")
    assert "@ 0x" not in proc.stdout + proc.stderr and "WARN:" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_version_and_help_texts() -> None:
    from edge import __version__

    assert rclstm("--version").stdout.strip() == f"rclstm-edge {__version__}"
    check = rclstm("check", "--help").stdout
    assert "--config CONFIG  the TOML config file to check" in " ".join(check.split()) or "TOML config" in check
    install = " ".join(rclstm("install", "--help").stdout.split())
    for text in ("this device's id", "the store or site this device is in", "MQTT username", "a wheel built"):
        assert text in install, install


def test_a_bundle_near_chance_is_named_by_check_and_run(tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "coin"
    shutil.copytree(ROOT / "edge/models/demo-synth", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for metrics in manifest["metrics"].values():
        metrics["accuracy"] = 0.5
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    video = tmp_path / "calm.mp4"
    write_stream(video, [("calm", 3.0)], fps=25)
    config = tmp_path / "config.toml"
    config.write_text(f'site = "s"\n[model]\nbundle = "{bundle}"\n[[cameras]]\nid = "c"\nsource = "{video}"\n')
    check = rclstm("check", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    expected = (f"WARN model: bundle demo-synth {manifest['version']} records accuracy 0.50 on its held-out clips, "
                "about chance (0.50)")
    assert any(line.startswith(expected) for line in check.stdout.splitlines()), check.stdout
    run = rclstm("run", "--config", str(config), "--fast")
    assert run.returncode == 0, run.stderr
    assert "records accuracy 0.50 on its held-out clips, about chance" in run.stderr


def test_an_old_config_with_hop_under_decision_still_runs_and_says_where_it_moved(tmp_path: Path) -> None:
    """Installed configs from before [classifier] keep working: check and run name each moved key in one line."""
    video = tmp_path / "calm.mp4"
    write_stream(video, [("calm", 3.0)], fps=25)
    config = tmp_path / "config.toml"
    config.write_text(f'site = "s"\n[model]\nbundle = "demo"\n[decision]\nhop = 2\n'
                      f'[[cameras]]\nid = "c"\nsource = "{video}"\n')
    expected = "decision.hop = 2 is deprecated there; move it to classifier.hop ([classifier] table)"
    check = rclstm("check", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"WARN config: {expected}" in check.stdout.splitlines(), check.stdout
    run = rclstm("run", "--config", str(config), "--fast")
    assert run.returncode == 0, run.stderr
    said = [line for line in run.stderr.splitlines() if "deprecated" in line]
    assert len(said) == 1 and f'level=warning logger=edge msg="{expected}"' in said[0], run.stderr


def test_check_says_which_decision_settings_apply_and_whose_they_are(tmp_path: Path) -> None:
    """The builtin model recommends its own threshold; check shows it, and a configured value wins."""
    from edge.bundle import read_manifest
    from edge.core.config import DEFAULT_HOP
    from edge.models import resolve_bundle

    recommended = read_manifest(resolve_bundle("builtin")).decision
    assert recommended is not None
    video = tmp_path / "calm.mp4"
    write_stream(video, [("calm", 1.0)], fps=10)
    config = tmp_path / "config.toml"
    config.write_text(f'device_id = "pi-1"\nsite = "s"\n[decision]\nthreshold = 0.6\n'
                      f'[[cameras]]\nid = "door"\nsource = "{video}"\n')
    proc = rclstm("check", "--config", str(config))
    model = next(line for line in proc.stdout.splitlines() if line.startswith("PASS model"))
    hop = f"hop {recommended.hop} (the model's)" if recommended.hop else f"hop {DEFAULT_HOP} (default)"
    assert model.endswith(f"decision threshold 0.6 (config), start_windows {recommended.start_windows} (the model's), "
                          f"{hop}")
