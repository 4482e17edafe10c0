"""Issue 12's input cases, through the real command line: damaged video, values that validate but
could not run, passwords that are not UTF-8, and secrets in outputs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.faults import damaged_mp4

ROOT = Path(__file__).resolve().parents[1]


def _edge(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env if env is not None else dict(os.environ))


def _raw_ffmpeg_lines(video: Path) -> int:
    """How many lines FFmpeg writes to fd 2 reading ``video`` as the daemon's source does (one decoder thread,
    the packets read ahead for the sampler), with no logger in between."""
    code = ("import sys, threading\nfrom edge.adapters.sources import CameraSource\n"
            "from edge.core.config import CameraConfig\nfrom edge.stages.sampler import Sampler\n"
            "sampler = Sampler(0.1)\ncamera = CameraConfig(id='c', source=sys.argv[1], realtime=False)\n"
            "for frame in CameraSource(camera).frames(threading.Event(), sampler):\n"
            "    sampler.offer(frame)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_FFMPEG")}
    done = subprocess.run([sys.executable, "-c", code, str(video)], capture_output=True, text=True, env=env,
                          timeout=120, check=True, cwd=ROOT)
    return len(done.stderr.splitlines())


def test_ffmpeg_lines_go_through_the_logger_bounded_in_every_command(tmp_path: Path) -> None:
    """Every stderr line is logfmt; FFmpeg's own lines are logger=ffmpeg records, at most NATIVE_BURST per
    window, and the summary lines count exactly the ones left out, so nothing is hidden silently."""
    from edge.adapters.logs import NATIVE_BURST, NATIVE_WINDOW_S

    video = damaged_mp4(tmp_path / "clip.mp4")
    raw = _raw_ffmpeg_lines(video)
    assert raw > NATIVE_BURST, raw  # the damage is enough to need the limit
    started = time.monotonic()
    run = _edge("run", "--source", str(video), "--fast", "--state-dir", str(tmp_path / "state"),
                env={**os.environ, "OPENCV_FFMPEG_LOGLEVEL": "24"})  # would print to stdout if it were kept
    windows = int((time.monotonic() - started) // NATIVE_WINDOW_S) + 1
    assert run.returncode == 0, run.stderr
    assert "OPENCV:FFMPEG" not in run.stdout
    lines = run.stderr.splitlines()
    assert lines and [line for line in lines if not line.startswith("ts=")] == []
    ffmpeg = [line for line in lines if "logger=ffmpeg" in line]
    summaries = [line for line in ffmpeg if " suppressed=" in line]
    logged = len(ffmpeg) - len(summaries)
    assert 0 < logged <= NATIVE_BURST * windows, len(ffmpeg)
    assert logged + sum(int(line.rsplit("suppressed=", 1)[1]) for line in summaries) == raw
    assert all("@ 0x" not in line for line in ffmpeg)

    replay = _edge("replay", str(video), "--out", str(tmp_path / "replay"), "--no-plots", "--model", "demo")
    assert replay.returncode == 0, replay.stderr
    assert [line for line in replay.stderr.splitlines() if not line.startswith("ts=")] == []


def _check(tmp_path: Path, toml: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(toml)
    return _edge("check", "--config", str(config), env=env, timeout=60)


@pytest.mark.parametrize(("toml", "key", "fix"), [
    ('[[cameras]]\nid = "c"\nsource = 2147483648\n', "cameras.0.source", "0 to 255"),
    ('[[cameras]]\nid = "c"\nsource = 256\n', "cameras.0.source", "/dev path"),
    ('[[cameras]]\nid = "c"\nsource = true\n', "cameras.0.source", "not a TOML boolean"),
    ('[[cameras]]\nid = "c"\nsource = 1.0\n', "cameras.0.source", "quoted string"),
    (f'[mqtt]\nurl = "mqtt://h:1883"\nprefix = "{"p" * 70_000}"\n', "mqtt.prefix", "at most 65335"),
    ('[mqtt]\nurl = "mqtt://h:0"\n', "mqtt.url", "port 0; use 1 to 65535"),
    ('[mqtt]\nurl = "mqtt://h:70000"\n', "mqtt.url", "1 to 65535"),
])
def test_values_that_could_not_run_are_refused_in_one_line(tmp_path: Path, toml: str, key: str, fix: str) -> None:
    done = _check(tmp_path, toml)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    [line] = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert key in line and fix in line and len(line) < 400


def test_the_longest_allowed_prefix_makes_topics_a_real_broker_accepts(mosquitto_broker, subscriber) -> None:
    from edge.adapters.mqtt import Publisher, Topics
    from edge.core.config import MAX_PREFIX, validate_config

    config = validate_config({"device_id": "d" * 64, "mqtt": {"url": mosquitto_broker.url, "prefix": "p" * MAX_PREFIX}})
    topic = f"{Topics(config.mqtt.prefix, config.device_id).camera('c' * 64, 'snapshot')}/{'u' * 36}"
    assert len(topic) <= 65535
    sub = subscriber(mosquitto_broker, "#")
    publisher = Publisher(config.mqtt, config.device_id, None, None)
    publisher.start()
    try:
        assert publisher.connected.wait(10)
        assert publisher.publish_direct(topic, b"fits")
        assert sub.wait_for(lambda messages: any(m.topic == topic for m in messages), timeout=10)
    finally:
        publisher.stop()


NOT_UTF8 = b"\xff\xfepass\x80"


def test_a_password_file_that_is_not_utf8_is_one_line_in_check_and_run(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_bytes(NOT_UTF8)
    toml = (f'state_dir = "{tmp_path / "state"}"\n'
            f'[mqtt]\nurl = "mqtt://127.0.0.1:9"\nusername = "u"\npassword_file = "{secret}"\n')
    done = _check(tmp_path, toml + '[[cameras]]\nid = "c"\nsource = "/nonexistent.mp4"\n')
    assert "Traceback" not in done.stdout + done.stderr
    assert "password is not UTF-8" in done.stdout
    run = _edge("run", "--config", str(tmp_path / "config.toml"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "password is not UTF-8" in run.stderr


@pytest.mark.parametrize("where", ["env", "credential"])
def test_a_password_from_env_or_credential_that_is_not_utf8_is_one_line(tmp_path: Path, where: str) -> None:
    env: dict = {k.encode(): v.encode() for k, v in os.environ.items()}
    env.pop(b"RCLSTM_MQTT_PASSWORD", None)
    if where == "env":
        env[b"RCLSTM_MQTT_PASSWORD"] = NOT_UTF8
    else:
        (tmp_path / "creds").mkdir()
        (tmp_path / "creds" / "mqtt-password").write_bytes(NOT_UTF8)
        env[b"CREDENTIALS_DIRECTORY"] = str(tmp_path / "creds").encode()
    done = _check(tmp_path, '[mqtt]\nurl = "mqtt://127.0.0.1:9"\nusername = "u"\n'
                            '[[cameras]]\nid = "c"\nsource = "/nonexistent.mp4"\n', env=env)
    assert "Traceback" not in done.stdout + done.stderr
    assert "password is not UTF-8" in done.stdout


def test_a_config_error_never_echoes_a_password_in_mqtt_url(tmp_path: Path) -> None:
    done = _check(tmp_path, '[mqtt]\nurl = "mqtt://user:SECRET@h:0"\n')
    assert done.returncode == 2
    assert "SECRET" not in done.stdout + done.stderr
    assert "mqtt://user:***@h:0" in done.stdout


def test_check_hides_a_camera_urls_password(rtsp_server, tmp_path: Path) -> None:
    url = rtsp_server.url.replace("rtsp://", "rtsp://viewer:SECRET@")
    done = _check(tmp_path, f'[[cameras]]\nid = "good"\nsource = "{url}"\n')
    assert "PASS camera good" in done.stdout, done.stdout
    assert "SECRET" not in done.stdout + done.stderr
    assert "viewer:***@" in done.stdout


def test_a_broker_that_accepts_but_never_answers_is_not_called_a_tls_port(caplog: pytest.LogCaptureFixture) -> None:
    import socket
    import threading
    import time

    from edge.adapters.mqtt import Publisher
    from edge.core.config import validate_config

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[object] = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    port = server.getsockname()[1]
    config = validate_config({"device_id": "d", "mqtt": {"url": f"mqtt://127.0.0.1:{port}", "keepalive_s": 5}})
    publisher = Publisher(config.mqtt, "d", None, None)
    publisher.start()
    try:
        deadline = time.monotonic() + 30
        while "never answered" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        publisher.stop()
        server.close()
    assert "accepted the connection but never answered within 5 s" in caplog.text
    assert "TLS port" not in caplog.text


@pytest.mark.parametrize(("make", "reason"), [
    (lambda tmp: tmp, "is a directory"),
    (lambda tmp: Path("/dev/null"), "is a device, not a video file"),
])
def test_a_directory_or_device_as_a_file_source_says_what_it_is(tmp_path: Path, make, reason: str) -> None:
    source = make(tmp_path)
    done = _check(tmp_path, f'[[cameras]]\nid = "c"\nkind = "file"\nsource = "{source}"\n')
    [line] = [line for line in done.stdout.splitlines() if line.startswith("FAIL camera c")]
    assert reason in line and "no such file" not in line


@pytest.mark.parametrize("damage", ["directory", "dev-zero"])
def test_check_goes_on_when_the_manifest_is_not_a_file(tmp_path: Path, damage: str) -> None:
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT / "edge" / "models" / "demo-synth", bundle)
    manifest = bundle / "manifest.json"
    manifest.unlink()
    if damage == "directory":
        manifest.mkdir()
    else:
        manifest.symlink_to("/dev/zero")  # read without bound, this never ends
    done = _check(tmp_path, f'[model]\nbundle = "{bundle}"\n[[cameras]]\nid = "c"\nsource = "/nonexistent.mp4"\n')
    assert "Traceback" not in done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("FAIL model")]
    assert "not a regular file" in line
    assert any(line.startswith(("PASS broker", "FAIL broker")) for line in done.stdout.splitlines()), done.stdout
