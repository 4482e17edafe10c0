"""examples/subscriber.py against the real daemon and a real mosquitto: each event handled once.

The daemon really re-sends: its second run starts with the first run's events back in its outbox
(what a crash between PUBLISH and PUBACK leaves behind), and drains them to the broker again.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge.adapters.outbox import Outbox
from edge.synthetic import write_stream
from testbed.broker import Broker

ROOT = Path(__file__).resolve().parents[1]
SUBSCRIBER = ROOT / "examples" / "subscriber.py"
DEVICE = "dev-sub"


class Proc:
    """A subprocess whose output lines are collected as they come, so a test can wait on them."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.out: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            with self._cond:
                lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not predicate()):
                    return predicate()
                self._cond.wait(min(remaining, 0.5))
            return True

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        return code


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A calm / fight / calm video (one incident) and a calm-only one (no incident)."""
    folder = tmp_path_factory.mktemp("video")
    fight = folder / "fight.mp4"
    write_stream(fight, [("calm", 6.0), ("fight", 5.0), ("calm", 6.0)], fps=25)
    calm = folder / "calm.mp4"
    write_stream(calm, [("calm", 3.0)], fps=25)
    return fight, calm


def start_consumer(broker: Broker, *args: str) -> Proc:
    proc = Proc([sys.executable, str(SUBSCRIBER), "--broker", broker.url, "--topic", f"rclstm/{DEVICE}/+/events",
                 *args])
    assert proc.wait_for(lambda: any(line.startswith("subscribed to") for line in proc.err)), proc.err
    return proc


def run_daemon(broker: Broker, video: Path, state: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--source", str(video), "--fast", "--model", "demo",
         "--broker", broker.url, "--device-id", DEVICE, "--state-dir", str(state)],
        capture_output=True, text=True, cwd=ROOT, timeout=180,
    )
    assert done.returncode == 0, done.stderr


def summary(proc: Proc) -> dict[str, int]:
    last = proc.err[-1]
    return {name: int(value) for name, value in (item.split("=") for item in last.split())}


def test_each_event_printed_once_valid_and_redeliveries_recognised(mosquitto_broker, subscriber, streams, tmp_path):
    fight, calm = streams
    store = tmp_path / "events.db"
    state = tmp_path / "state"

    capture = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/+/events")
    first = start_consumer(mosquitto_broker, "--json", "--store", str(store), "--share", "backend")
    run_daemon(mosquitto_broker, fight, state)
    assert first.wait_for(lambda: any('"type":"end"' in line for line in first.out)), first.err
    assert first.stop() == 0
    events = [e for e in map(json.loads, first.out) if "event_id" in e]
    kinds = [e["type"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("end") == 1, kinds
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert len({e["event_id"] for e in events}) == 1
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert summary(first) == {"received": len(events), "new": len(events), "duplicates": 0, "invalid": 0}
    assert capture.wait_for(lambda msgs: len(msgs) == len(events))
    payloads = [m.payload for m in capture.messages]  # the bytes exactly as the daemon sent them
    assert [json.loads(p) for p in payloads] == events

    # The daemon starts again with those events unacknowledged in its outbox, and a restarted
    # consumer with the same store sees them again: every one is a duplicate, none is printed.
    box = Outbox(state / "outbox.db")
    for payload in payloads:
        box.put(f"rclstm/{DEVICE}/cam0/events", payload)
    box.close()
    second = start_consumer(mosquitto_broker, "--store", str(store))
    run_daemon(mosquitto_broker, calm, state)
    assert second.wait_for(lambda: sum(line.startswith("duplicate") for line in second.err) == len(events)), \
        second.err
    _publish(mosquitto_broker, f"rclstm/{DEVICE}/cam0/events", b'{"schema_version": 1, "type": "start"}')
    assert second.wait_for(lambda: any(line.startswith("invalid message") for line in second.err)), second.err
    assert second.stop() == 0
    assert [line for line in second.out if not line.startswith("state ")] == [], "a redelivered event was printed again"
    assert summary(second) == {"received": len(events) + 1, "new": 0, "duplicates": len(events), "invalid": 1}
    with sqlite3.connect(store) as db:
        stored = db.execute("SELECT event_id, type, seq FROM events ORDER BY seq").fetchall()
    assert stored == [(e["event_id"], e["type"], e["seq"]) for e in events]


def test_human_lines_and_in_memory_dedupe(mosquitto_broker, subscriber, streams, tmp_path):
    """Without --store the keys live in memory; a copy of the start published by hand is skipped."""
    fight, _ = streams
    capture = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/+/events")
    sub = start_consumer(mosquitto_broker)
    run_daemon(mosquitto_broker, fight, tmp_path / "state")
    assert sub.wait_for(lambda: any(" end " in line for line in sub.out)), sub.err
    start = capture.messages[0].payload
    _publish(mosquitto_broker, f"rclstm/{DEVICE}/cam0/events", start)
    assert sub.wait_for(lambda: any(line.startswith("duplicate") for line in sub.err)), sub.err
    assert sub.stop() == 0
    event = json.loads(start)
    sub.out[:] = [line for line in sub.out if not line.startswith("state ")]
    assert sub.out[0].split()[1:3] == ["start", f"default/{DEVICE}/cam0"]
    assert f"event={event['event_id']} seq=0" in sub.out[0]
    assert sum(" start " in line for line in sub.out) == 1 and sum(" end " in line for line in sub.out) == 1
    assert summary(sub)["duplicates"] == 1


def _events(proc: Proc) -> list[dict]:
    return [e for e in map(json.loads, list(proc.out)) if "event_id" in e]


def test_persistent_session_gets_what_was_published_while_it_was_down(mosquitto_broker, subscriber, streams, tmp_path):
    """--client-id keeps the MQTT 5 session: stopped, the device publishes, restarted, every event arrives."""
    fight, _ = streams
    store = tmp_path / "events.db"
    capture = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/+/events")
    args = ("--client-id", "backend-1", "--store", str(store), "--json", "--no-status")
    first = start_consumer(mosquitto_broker, *args)
    assert first.stop() == 0
    clean = start_consumer(mosquitto_broker, "--json", "--no-status")  # a clean session, for contrast
    assert clean.stop() == 0

    run_daemon(mosquitto_broker, fight, tmp_path / "state")
    assert capture.wait_for(lambda msgs: any(b'"type":"end"' in m.payload for m in msgs))
    published = [json.loads(m.payload) for m in capture.messages]
    assert len(published) >= 3  # start, update(s), end

    second = start_consumer(mosquitto_broker, *args)
    assert second.wait_for(lambda: len(_events(second)) == len(published)), second.err
    assert second.stop() == 0
    assert _events(second) == published
    assert summary(second) == {"received": len(published), "new": len(published), "duplicates": 0, "invalid": 0}
    again = start_consumer(mosquitto_broker, "--json", "--no-status")
    time.sleep(1.0)
    assert again.stop() == 0 and _events(again) == []  # a clean session has nothing queued


def test_shows_device_will_camera_status_and_anomaly_state(mosquitto_broker, streams, tmp_path):
    """The retained state after a clean stop, then a daemon killed mid-run: the broker's Will says offline."""
    fight, _ = streams
    run_daemon(mosquitto_broker, fight, tmp_path / "state")
    sub = start_consumer(mosquitto_broker)
    assert sub.wait_for(lambda: {line.split()[1] for line in sub.out if line.startswith("state ")}
                        >= {"device", "camera", "anomaly"}), sub.out
    assert f"state device {DEVICE} stopped (retained)" in sub.out
    assert f"state anomaly {DEVICE}/cam0 OFF (retained)" in sub.out
    assert any(line.startswith(f"state camera {DEVICE}/cam0 offline (end of file) since 20") for line in sub.out)

    daemon = Proc([sys.executable, "-m", "edge", "run", "--source", str(fight), "--model", "demo",
                   "--broker", mosquitto_broker.url, "--device-id", DEVICE, "--state-dir", str(tmp_path / "state2")])
    try:
        assert sub.wait_for(lambda: f"state device {DEVICE} online" in sub.out), sub.out
        assert sub.wait_for(lambda: f"state camera {DEVICE}/cam0" in " ".join(sub.out[-3:]))
        daemon.proc.kill()  # no clean disconnect: the broker publishes the Will
        assert sub.wait_for(lambda: f"state device {DEVICE} offline" in sub.out, timeout=30), sub.out
    finally:
        daemon.stop()
    assert sub.stop() == 0


def _publish(broker: Broker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "http://localhost:1883"], "must look like mqtt://host:1883"),
        (["--broker", "mqtt://localhost:1883", "--share", "a/b"], "must not contain"),
        (["--broker", "mqtt://localhost:1883", "--password-env", "RCLSTM_NO_SUCH_VARIABLE_42"], "is not set"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, str(SUBSCRIBER), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1]


def test_missing_jsonschema_names_the_fix(mosquitto_broker) -> None:
    """Run as a site without jsonschema installed would: the import fails."""
    code = ("import runpy, sys; sys.modules['jsonschema'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, str(SUBSCRIBER), "--broker", mosquitto_broker.url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: jsonschema is not installed: pip install jsonschema (or pass --no-validate)"
