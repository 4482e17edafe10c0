"""The real daemon end to end: `python -m edge run` on generated video, the demo bundle, real mosquitto.

Each fault test counts what the daemon sent (its one log line per event, written after the event is
on disk) against what a real subscriber received, and reports sent / received / duplicates / lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge.adapters.outbox import IncidentMark, Outbox
from edge.synthetic import write_stream
from testbed.broker import PASSWORD, Broker, Subscriber
from testbed.daemon import outbox_events

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "dev-e2e"
SEGMENTS = [("calm", 8.0), ("fight", 5.0), ("calm", 8.0)]
EVENT_LINE = re.compile(r"msg=event .*event_id=(\S+) seq=(\d+)")


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[float, float]]:
    """A calm / fight / calm video and the fight's (start, end) in stream seconds."""
    path = tmp_path_factory.mktemp("video") / "stream.mp4"
    spans = write_stream(path, SEGMENTS, fps=25)
    fight = next((start, end) for kind, start, end in spans if kind == "fight")
    return path, fight


@pytest.fixture(scope="module")
def event_schema() -> dict[str, Any]:
    return json.loads((ROOT / "docs" / "schemas" / "event.json").read_text())


def write_config(tmp_path: Path, video: Path | str, broker: Broker | None = None, *, loop: bool = False,
                 password: str | None = None, log_level: str = "info") -> Path:
    lines = [
        f'device_id = "{DEVICE}"',
        f'state_dir = "{tmp_path / "state"}"',
        f'log_level = "{log_level}"',
        "[model]",
        'bundle = "demo"',
        "[outbox]",
        "flush_timeout_s = 5.0",
    ]
    if broker is not None:
        lines += ["[mqtt]", f'url = "{broker.url}"', "keepalive_s = 5", "stats_interval_s = 1.0"]
        if broker.username:
            lines.append(f'username = "{broker.username}"')
        if password is not None:
            lines.append(f'password = "{password}"')
        if broker.tls:
            lines.append(f'ca_file = "{broker.tls.ca_file}"')
    lines += ["[[cameras]]", 'id = "cam0"', f'source = "{video}"', 'kind = "file"', "realtime = false",
              f"loop = {'true' if loop else 'false'}", "open_timeout_s = 2.0"]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def start_daemon(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config), "--fast", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def events_of(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.messages if m.topic.endswith("/events")]


def sent_keys(stderr: str) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2))) for m in EVENT_LINE.finditer(stderr)]


def received_keys(sub: Subscriber) -> list[tuple[str, int]]:
    return [(e["event_id"], e["seq"]) for e in events_of(sub)]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_one_incident_over_the_fight_reaches_a_subscriber(mosquitto_broker, subscriber, stream, event_schema,
                                                          tmp_path):
    video, (fight_start, fight_end) = stream
    sub = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/#")
    code, out, err = finish(start_daemon(write_config(tmp_path, video, mosquitto_broker)))
    assert code == 0, err
    assert sub.wait_for(lambda msgs: any(m.payload == b"stopped" for m in msgs), 30), "no 'stopped' status"
    events = events_of(sub)
    for event in events:
        jsonschema.validate(event, event_schema)
    assert {e["event_id"] for e in events} == {events[0]["event_id"]}, "expected exactly one incident"
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("end") == 1, kinds
    assert [e["seq"] for e in events] == list(range(len(events)))
    # Frame times are the file's start plus stream time; the camera's "online" status marks the start.
    online = next(json.loads(m.payload) for m in sub.messages if m.topic.endswith("cam0/status")
                  and json.loads(m.payload)["online"])
    # Read faster than real time, the file is placed so that its last frame is when reading started.
    origin = parse_time(online["since"]) - timedelta(seconds=sum(seconds for _, seconds in SEGMENTS))
    started = (parse_time(events[-1]["started_at"]) - origin).total_seconds()
    ended = (parse_time(events[-1]["ended_at"]) - origin).total_seconds()
    print(f"incident {started:.2f}-{ended:.2f} s, fight {fight_start:.2f}-{fight_end:.2f} s")
    assert started < fight_end and ended > fight_start, "the incident does not overlap the fight"
    statuses = [m.payload for m in sub.messages if m.topic == f"rclstm/{DEVICE}/status"]
    assert statuses[0] == b"online" and statuses[-1] == b"stopped"
    stats = [json.loads(m.payload) for m in sub.messages if m.topic == f"rclstm/{DEVICE}/stats"]
    assert stats and stats[-1]["frames_in"] > 0 and stats[-1]["outbox_depth"] >= 0
    assert {"frames_sampled", "inference_ms", "dropped", "uptime_s", "version"} <= set(stats[-1])
    assert sent_keys(err) == received_keys(sub)
    assert out == "", "with a broker, events go to MQTT only"


def test_broker_outage_and_sigkill_lose_no_event(broker_factory, subscriber, stream, tmp_path):
    """Broker stopped and restarted mid-stream, then the daemon SIGKILLed during a second outage."""
    video, _ = stream
    broker = broker_factory(persistence=True)
    sub = subscriber(broker, f"rclstm/{DEVICE}/+/events", persistent_id="fault-counter")
    config = write_config(tmp_path, video, broker, loop=True)
    first = start_daemon(config)
    try:
        assert sub.wait_for(lambda msgs: len(msgs) >= 2, 90), "no events before the outage"
        broker.stop()
        time.sleep(4)  # events keep coming into the outbox meanwhile
        broker.start()
        before = len(sub.messages)
        assert sub.wait_for(lambda msgs: len(msgs) >= before + 2, 90), "nothing arrived after the restart"
        broker.stop()
        time.sleep(3)
    finally:
        first.send_signal(signal.SIGKILL)
        _, _, err1 = finish(first)
    broker.start()
    # A SIGKILL can land between an event's commit and its log line: such an event is not in the log
    # but is in the outbox, and the next start sends it. It counts as sent, not as a stranger.
    queued = [(e["event_id"], e["seq"]) for e in outbox_events(tmp_path / "state")]
    sent = sent_keys(err1) + [key for key in queued if key not in sent_keys(err1)]
    second = start_daemon(config)
    try:
        assert sub.wait_for(lambda msgs: set(sent) <= set(received_keys(sub)), 120), "events lost"
    finally:
        second.send_signal(signal.SIGTERM)
        code, _, err2 = finish(second)
    assert code == 0, err2
    sent += sent_keys(err2)
    sub.wait_for(lambda msgs: set(sent) <= set(received_keys(sub)), 30)
    received = received_keys(sub)
    lost = set(sent) - set(received)
    duplicates = len(received) - len(set(received))
    print(f"sent {len(sent)} received {len(received)} duplicates {duplicates} lost {len(lost)}")
    assert len(sent) >= 4 and not lost
    assert set(received) <= set(sent), "received an event nobody sent"
    # Every incident ends, also the one the SIGKILL left open (closed by the second start).
    ends = {e["event_id"]: e["end_reason"] for e in events_of(sub) if e["type"] == "end"}
    assert {e["event_id"] for e in events_of(sub)} == set(ends), "an incident never ended"
    print("end reasons:", dict(Counter(ends.values())))


def test_incident_left_open_by_a_dead_daemon_is_closed_at_the_next_start(mosquitto_broker, subscriber, stream,
                                                                          event_schema, tmp_path):
    video, _ = stream
    sub = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/#")
    config = write_config(tmp_path, video, mosquitto_broker)
    # What a daemon killed mid-incident leaves on disk: the start in the outbox (sent or not) and
    # marked open. The example start is from the docs, so it is also a real, valid message.
    example = next(line for line in (ROOT / "docs" / "mqtt.md").read_text().splitlines()
                   if line.startswith('{"schema_version"') and '"type":"update"' in line)
    last = json.loads(example)
    box = Outbox(tmp_path / "state" / "outbox.db")
    box.put(f"rclstm/{DEVICE}/{last['camera_id']}/events", example.encode(),
            incident=IncidentMark(last["event_id"], open=True))
    box.close()
    # One whose remembered message no longer parses (say, written by another version): logged, dropped.
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "outbox.db")) as db, db:
        db.execute("INSERT INTO open_incidents VALUES ('garbled', 'rclstm/x/door/events', x'7b6e6f74')")
    code, _, err = finish(start_daemon(config))
    assert code == 0, err
    assert "left open by the previous run" in err
    assert re.search(r"incident garbled left open by the previous run cannot be closed: .*; dropped", err)
    # The outbox sends what it held first (the example start), then this run's events.
    assert sub.wait_for(lambda msgs: sent_keys(err) == received_keys(sub)[1:], 30)
    events = events_of(sub)
    for event in events:
        jsonschema.validate(event, event_schema)
    replayed, closed = events[0], events[1]
    assert replayed == last
    assert (closed["event_id"], closed["type"], closed["seq"], closed["end_reason"]) == (
        last["event_id"], "end", last["seq"] + 1, "interrupted")
    assert closed["ended_at"] == closed["emitted_at"] == last["emitted_at"]
    assert all(e["event_id"] != last["event_id"] for e in events[2:]), "the next run started afresh"
    assert Outbox(tmp_path / "state" / "outbox.db").left_open() == []
    # Its camera ("door", no longer configured) does not stay retained as ON.
    anomaly = [m for m in sub.messages if m.topic == f"rclstm/{DEVICE}/door/anomaly"]
    assert anomaly and anomaly[-1].payload == b"OFF"


def test_sigkill_leaves_the_will_offline(mosquitto_broker, subscriber, stream, tmp_path):
    video, _ = stream
    sub = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/status")
    proc = start_daemon(write_config(tmp_path, video, mosquitto_broker, loop=True))
    try:
        assert sub.wait_for(lambda msgs: any(m.payload == b"online" for m in msgs), 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        finish(proc)
    assert sub.wait_for(lambda msgs: msgs[-1].payload == b"offline", 30)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_refused_credentials_clear_line_backoff_and_idle_cpu(mosquitto_auth_broker, tmp_path):
    """A missing camera keeps the pipeline idle, so the CPU left is the MQTT client's own."""
    config = write_config(tmp_path, tmp_path / "no-such-video.mp4", mosquitto_auth_broker)
    proc = start_daemon(config, env={"RCLSTM_MQTT_PASSWORD": "not-the-password-42"})
    try:
        deadline = time.monotonic() + 60
        while "refused the connection" not in mosquitto_auth_broker.log_path.read_text() and \
                "not authorised" not in mosquitto_auth_broker.log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "daemon never tried the broker"
            time.sleep(0.2)
        attempts_before = mosquitto_auth_broker.log_path.read_text().count("New connection from")
        cpu_before = _cpu_seconds(proc.pid)
        time.sleep(6)
        cpu = _cpu_seconds(proc.pid) - cpu_before
        attempts = mosquitto_auth_broker.log_path.read_text().count("New connection from") - attempts_before
    finally:
        proc.send_signal(signal.SIGTERM)
        code, out, err = finish(proc)
    print(f"cpu {cpu:.2f} s and {attempts} connection attempts in 6 s")
    assert cpu < 1.0, f"{cpu:.2f} s of CPU in 6 s: a reconnect storm"
    assert attempts <= 4
    errors = [line for line in err.splitlines() if "level=error" in line and "logger=edge.adapters.mqtt" in line]
    assert len(errors) == 1 and "refused the connection" in errors[0] and "mqtt.username" in errors[0], err
    assert "Traceback" not in err and "not-the-password-42" not in out + err
    assert code == 0


def test_a_full_run_never_prints_the_password(mosquitto_auth_broker, subscriber, stream, tmp_path):
    video, _ = stream
    sub = subscriber(mosquitto_auth_broker, "#")
    config = write_config(tmp_path, video, mosquitto_auth_broker, password=PASSWORD, log_level="debug")
    config.chmod(0o644)  # readable by others: the daemon must warn, without showing the secret
    code, out, err = finish(start_daemon(config))
    assert code == 0, err
    assert "readable by other users" in err
    everything = out + err + "".join(m.payload.decode(errors="replace") for m in sub.messages)
    assert PASSWORD not in everything
    assert any(m.topic.endswith("/events") for m in sub.messages), "the run did not log in and publish"


def test_run_without_broker_prints_events_and_never_imports_tensorflow(stream, event_schema, tmp_path):
    video, _ = stream
    config = write_config(tmp_path, video)
    script = (
        "import json, sys\n"
        "from edge.app.cli import main\n"
        f"code = main(['run', '--config', {str(config)!r}, '--fast'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(json.dumps({'modules': heavy}), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == {"modules": []}
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events and all(jsonschema.validate(e, event_schema) is None for e in events)
    assert [e["type"] for e in events][::len(events) - 1] == ["start", "end"]
    # The log is logfmt only: what the runtime's C++ code prints goes through it too.
    log_lines = proc.stderr.strip().splitlines()[:-1]
    assert log_lines and all(line.startswith("ts=") for line in log_lines), log_lines


def test_runtime_chatter_is_logged_at_debug(stream, tmp_path):
    video, _ = stream
    code, _, err = finish(start_daemon(write_config(tmp_path, video, log_level="debug")))
    assert code == 0, err
    assert all(line.startswith("ts=") for line in err.splitlines()), err
    if "ai-edge-litert" in err:  # the runtime that prints it; tflite-runtime 2.14 is quiet
        created = r"level=debug logger=edge.adapters.runtime msg=\"runtime: INFO: Created TensorFlow Lite XNNPACK"
        assert re.search(created, err)


def test_check_passes_on_a_good_setup(mosquitto_tls_broker, subscriber, stream, tmp_path):
    video, _ = stream
    sub = subscriber(mosquitto_tls_broker, f"rclstm/{DEVICE}/check")
    config = write_config(tmp_path, video, mosquitto_tls_broker)
    proc = subprocess.run([sys.executable, "-m", "edge", "check", "--config", str(config)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, "RCLSTM_MQTT_PASSWORD": PASSWORD})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "PASS config", "WARN config", "PASS camera cam0", "PASS model", "PASS broker", "PASS state_dir"]
    assert "site is not set" in lines[1] and "over TLS" in lines[4]
    assert sub.wait_for(lambda msgs: len(msgs) == 1, 10)
    assert PASSWORD not in proc.stdout + proc.stderr


def test_check_fails_with_reasons(mosquitto_auth_broker, tmp_path):
    bundle = tmp_path / "tampered"
    from edge.models import resolve_bundle

    shutil.copytree(resolve_bundle("demo"), bundle)
    model = bundle / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    config = write_config(tmp_path, "rtsp://127.0.0.1:9/nothing", mosquitto_auth_broker, password="wrong-one")
    config.write_text(config.read_text().replace('bundle = "demo"', f'bundle = "{bundle}"')
                      .replace('kind = "file"', 'kind = "rtsp"'))
    proc = subprocess.run([sys.executable, "-m", "edge", "check", "--config", str(config)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    lines = {line.split(":")[0]: line for line in proc.stdout.splitlines()}
    assert lines.keys() >= {"PASS config", "FAIL camera cam0", "FAIL model", "FAIL broker"}, proc.stdout
    assert "sha256" in lines["FAIL model"]
    assert "refused" in lines["FAIL broker"]
    assert len(lines["FAIL camera cam0"]) > len("FAIL camera cam0: ")
    assert "Traceback" not in proc.stderr


def test_tampered_bundle_stops_run_with_one_line(stream, tmp_path):
    from edge.models import resolve_bundle

    video, _ = stream
    bundle = tmp_path / "bundle"
    shutil.copytree(resolve_bundle("demo"), bundle)
    (bundle / "model.tflite").write_bytes((bundle / "model.tflite").read_bytes()[:-100])
    proc = subprocess.run([sys.executable, "-m", "edge", "run", "--model", str(bundle), "--source", str(video),
                           "--fast"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "sha256" in proc.stderr and "copy the bundle again" in proc.stderr


def test_demo_shows_an_incident_on_stdout_and_mqtt(mosquitto_broker, subscriber):
    sub = subscriber(mosquitto_broker, "rclstm/demo/+/events")
    proc = subprocess.run([sys.executable, "-m", "edge", "demo", "--broker", mosquitto_broker.url],
                          capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, proc.stderr
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {"start", "end"} <= {e["type"] for e in printed}
    assert "incident(s)" in proc.stderr
    assert sub.wait_for(lambda msgs: len(msgs) >= len(printed), 20)
    assert [json.loads(m.payload) for m in sub.messages] == printed


def test_snapshot_of_the_peak_frame_fits_the_limit(mosquitto_broker, subscriber, stream, tmp_path):
    import cv2
    import numpy as np

    video, _ = stream
    sub = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/#")
    config = write_config(tmp_path, video, mosquitto_broker)
    config.write_text(config.read_text().replace("[mqtt]\n", "[mqtt]\nsnapshots = true\nsnapshot_max_bytes = 4000\n"))
    code, _, err = finish(start_daemon(config))
    assert code == 0, err
    assert sub.wait_for(lambda msgs: any(m.payload == b"stopped" for m in msgs), 30)
    prefix = f"rclstm/{DEVICE}/cam0/snapshot/"
    snapshots = {m.topic.removeprefix(prefix): m.payload for m in sub.messages if m.topic.startswith(prefix)}
    ends = [e for e in events_of(sub) if e["type"] == "end"]
    assert set(snapshots) == {e["event_id"] for e in ends} and ends, "one snapshot per incident, named by its id"
    # Queued after the end, so delivered after it (the outbox keeps one order).
    order = [m.topic.removeprefix(prefix) if m.topic.startswith(prefix) else json.loads(m.payload)["event_id"]
             for m in sub.messages if m.topic.startswith(prefix) or m.topic.endswith("/events")]
    assert all(order.index(event_id) < len(order) - 1 - order[::-1].index(event_id) for event_id in snapshots)
    for jpeg in snapshots.values():
        assert len(jpeg) <= 4000 and jpeg[:2] == b"\xff\xd8"
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.ndim == 3
