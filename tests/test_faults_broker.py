"""Broker faults with the real daemon: a 30 s outage while incidents keep coming, a broker that forgets
everything, and SIGTERM in the middle of a burst. Each test reports sent / received / duplicates / lost.

Anomalies come from a looping generated video (calm, then a fight, again and again) with eager decision
settings, so events keep arriving while the broker is away, the way a real incident would not wait.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from edge.synthetic import write_stream
from testbed.broker import Subscriber
from testbed.daemon import DEVICE, EAGER, Key, camera, launch, outbox_events, received, tally, write_config
from tests.fixtures_rtsp import wait_until

EVENTS = f"rclstm/{DEVICE}/+/events"


@pytest.fixture(scope="module")
def fights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five seconds of calm then fight; looped, an incident every pass."""
    path = tmp_path_factory.mktemp("video") / "fights.mp4"
    write_stream(path, [("calm", 2.0), ("fight", 3.0)], fps=25)
    return path


def outbox_keys(state_dir: Path) -> set[Key]:
    """The events still waiting in the daemon's outbox."""
    return {(e["event_id"], e["type"], e["seq"]) for e in outbox_events(state_dir)}


def report(name: str, counts: dict[str, int]) -> None:
    print(f"{name}: " + " ".join(f"{key} {value}" for key, value in counts.items()))


@pytest.mark.slow
def test_thirty_second_outage_loses_nothing(broker_factory, subscriber, fights, tmp_path):
    broker = broker_factory(persistence=True)  # the consumer's session survives the broker restart
    sub = subscriber(broker, EVENTS, persistent_id="outage-consumer")
    config = write_config(tmp_path, [camera(str(fights), loop=True)], broker, decision=EAGER)
    daemon = launch(config, tmp_path)  # real-time pacing: 25 fps, like a camera
    try:
        assert sub.wait_for(lambda msgs: len(msgs) >= 2, 90), daemon.stderr
        broker.stop()
        unacknowledged = outbox_keys(tmp_path / "state")  # a superset of what was in flight at the cut
        before = len(daemon.sent())
        time.sleep(30)
        during = len(daemon.sent()) - before
        broker.start()
        assert sub.wait_for(lambda _: set(daemon.sent()) <= set(received(sub)), 120), "events lost"
    finally:
        code = daemon.stop()
    sent = daemon.sent()
    assert sub.wait_for(lambda _: set(sent) <= set(received(sub)), 30)
    got = received(sub)
    counts = tally(sent, got)
    report("30 s outage", {**counts, "emitted_during_outage": during, "unacked_at_cut": len(unacknowledged)})
    assert code == 0, daemon.stderr
    assert during >= 3, "anomalies must keep coming during the outage"
    assert counts["lost"] == 0
    assert set(got) == set(sent), "the deduplicated set must be exactly what the daemon sent"
    # A copy can come from either leg. The device publishing again an event the broker had not acknowledged
    # is a fresh PUBLISH (DUP 0); the broker redelivering to the consumer's persistent session a message
    # whose PUBACK its restart lost is marked DUP 1 (MQTT 3.1.1 and 5.0, 3.3.1.1). Only the first is the
    # device's doing, and only for what was still in its outbox at the cut.
    first_copies = received(sub, first_copies=True)
    resent = {key for key in first_copies if first_copies.count(key) > 1}
    assert resent <= unacknowledged, "only messages the broker had not acknowledged may be published twice"
    for event_id in {key[0] for key in got}:  # per incident, in order: start, updates, end
        seqs = sorted({key[2] for key in got if key[0] == event_id})
        assert seqs == list(range(len(seqs)))


def test_broker_without_persistence_gets_state_and_queued_events(mosquitto_broker, subscriber, fights, tmp_path):
    """A broker restarted with nothing: no retained state, no sessions. The daemon rebuilds both sides."""
    broker = mosquitto_broker
    sub = subscriber(broker, f"rclstm/{DEVICE}/#")
    config = write_config(tmp_path, [camera(str(fights), loop=True)], broker, decision=EAGER)
    daemon = launch(config, tmp_path)
    try:
        assert sub.wait_for(lambda _: len(received(sub)) >= 1, 90), daemon.stderr
        broker.stop()
        before = len(daemon.sent())
        assert wait_until(lambda: len(daemon.sent()) >= before + 3, 60), "no events during the outage"
        queued = set(daemon.sent()[before:])
        broker.start()  # empty: no retained messages, no subscriptions
        fresh = Subscriber(broker, f"rclstm/{DEVICE}/#")  # subscribes long before the daemon's back-off ends
        try:
            assert fresh.wait_for(lambda _: queued <= set(received(fresh)), 60), "queued events did not arrive"
            assert daemon.wait_log("(reconnect)", 10)
        finally:
            fresh.close()
        late = Subscriber(broker, f"rclstm/{DEVICE}/+/status")
        late_device = Subscriber(broker, f"rclstm/{DEVICE}/status")
        try:
            assert late.wait_for(lambda msgs: len(msgs) >= 1, 10) and late_device.wait_for(lambda m: len(m) >= 1, 10)
            camera_state = late.messages[0]
            device_state = late_device.messages[0]
        finally:
            late.close()
            late_device.close()
    finally:
        code = daemon.stop()
    report("broker restarted empty, events queued in the outbox",
           tally(sorted(queued), [key for key in received(fresh) if key in queued]))
    assert code == 0, daemon.stderr
    assert device_state.retain and device_state.payload == b"online", "device status not retained again"
    assert camera_state.retain and camera_state.topic == f"rclstm/{DEVICE}/cam0/status"
    assert json.loads(camera_state.payload)["online"] is True


def test_sigterm_mid_burst_flushes_and_says_stopped(mosquitto_broker, subscriber, fights, tmp_path):
    sub = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/#")
    config = write_config(tmp_path, [camera(str(fights), loop=True, realtime=False)], mosquitto_broker,
                          decision=EAGER, outbox={"flush_timeout_s": 10.0})
    daemon = launch(config, tmp_path)
    try:
        assert wait_until(lambda: len(daemon.sent()) >= 10, 90), daemon.stderr
    finally:
        code = daemon.stop(signal.SIGTERM)
    sent = daemon.sent()
    assert sub.wait_for(lambda msgs: msgs and msgs[-1].topic.endswith("/status") and msgs[-1].payload == b"stopped",
                        10), "no 'stopped' after SIGTERM"
    counts = tally(sent, received(sub))
    report("SIGTERM mid-burst, broker up", {**counts, "left_in_outbox": len(outbox_keys(tmp_path / "state"))})
    assert code == 0, daemon.stderr
    assert counts["lost"] == 0 and counts["duplicates"] == 0
    assert outbox_keys(tmp_path / "state") == set(), "flushed within flush_timeout_s"
    assert "kept for the next start" not in daemon.stderr


def test_sigterm_with_the_broker_down_keeps_the_outbox_for_the_next_start(mosquitto_broker, subscriber, fights,
                                                                          tmp_path):
    broker = mosquitto_broker
    config = write_config(tmp_path, [camera(str(fights), loop=True, realtime=False)], broker,
                          decision=EAGER, outbox={"flush_timeout_s": 1.0})
    daemon = launch(config, tmp_path)
    try:
        assert daemon.wait_log("first connect", 60), daemon.stderr
        broker.stop()
        assert wait_until(lambda: len(daemon.sent()) >= 5, 90), daemon.stderr
    finally:
        code = daemon.stop(signal.SIGTERM)
    kept = outbox_keys(tmp_path / "state")
    assert code == 0, daemon.stderr
    assert "kept for the next start" in daemon.stderr
    assert kept, "events sent while the broker was down must still be on disk"
    broker.start()
    sub = subscriber(broker, EVENTS)
    calm = tmp_path / "calm.mp4"
    write_stream(calm, [("calm", 2.0)], fps=25)
    config = write_config(tmp_path, [camera(str(calm), realtime=False)], broker)
    second = launch(config, tmp_path, name="second")
    assert second.proc.wait(60) == 0, second.stderr
    counts = tally(sorted(kept), received(sub))
    report("SIGTERM with the broker down, kept events after the restart", counts)
    assert kept <= set(received(sub))
    assert outbox_keys(tmp_path / "state") == set()
    assert set(received(sub)) <= set(daemon.sent())
