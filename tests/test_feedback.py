"""Verdicts from a backend: every kind of bad message refused with one line and a count, and the real path
(backend -> mosquitto with the documented ACL -> daemon -> the clip's record) with the reference subscriber."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.adapters.clips import ClipStore
from edge.core.config import ClipsConfig
from edge.synthetic import write_stream
from testbed.broker import Broker, Subscriber
from testbed.daemon import camera, launch, write_config
from tests.test_clips import make_clip
from tests.test_security import acl_broker, publish_as  # noqa: F401  (acl_broker is a fixture)

ROOT = Path(__file__).resolve().parents[1]
INCIDENT = uuid.UUID("739a0f44-a00b-476e-a48b-0758c164c067")
CALM = uuid.UUID("00000000-0000-4000-8000-000000000001")


def verdict(**changes: object) -> bytes:
    message = {"schema_version": 1, "event_id": str(INCIDENT), "device_id": "pi-1", "verdict": "false_alarm",
               **changes}
    return json.dumps({k: v for k, v in message.items() if v is not None}).encode()


@pytest.fixture
def store(tmp_path: Path) -> ClipStore:
    clips = ClipStore(tmp_path, ClipsConfig(enabled=True, min_free_bytes=0), "pi-1")
    now = datetime.now(timezone.utc)  # recent clips: max_age_days (30) would otherwise remove them
    make_clip(clips, now - timedelta(days=2), kind="incident", clip_id=INCIDENT)
    make_clip(clips, now - timedelta(days=1), kind="calm", clip_id=CALM)
    return clips


@pytest.mark.parametrize(("payload", "said"), [
    (b"{not json", "not JSON"),
    (b"", "not JSON"),
    (b"[1, 2]", "(message): Input should be an object"),
    (verdict(verdict="maybe"), "verdict: Input should be 'false_alarm' or 'confirmed'"),
    (verdict(verdict=None), "verdict: Field required"),
    (verdict(event_id="not-a-uuid"), "event_id: Input should be a valid UUID"),
    (verdict(schema_version=2), "schema_version: Input should be 1"),
    (verdict(by="me"), "by: Extra inputs are not permitted"),
    (verdict(judged_at="2026-11-26T04:31:12"), "judged_at: Input should have timezone info"),
    (verdict(note="x" * 501), "note: String should have at most 500 characters"),
    (verdict(note="x" * 4096), "bytes, more than 4096"),
    (verdict(device_id="pi-2"), "device_id 'pi-2' is not this device ('pi-1')"),
    (verdict(event_id=str(uuid.uuid4())), "no clip of that incident on this device"),
    (verdict(event_id=str(CALM)), "no clip of that incident on this device"),
], ids=["garbage", "empty", "array", "unknown-verdict", "no-verdict", "bad-id", "version", "extra-key", "naive-time",
        "long-note", "oversized", "other-device", "unknown-event", "calm-clip-id"])
def test_a_bad_verdict_is_refused_with_one_line_and_counted(store: ClipStore, payload: bytes, said: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="edge.adapters.clips"):
        assert store.receive_feedback(payload) is False
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    line = caplog.records[0].getMessage()
    assert line.startswith("feedback refused: ") and said in line and "\n" not in line
    assert (store.feedback_refused, store.feedback_accepted) == (1, 0)
    assert all(record.feedback is None for record, _ in store.clips())


def test_a_good_verdict_is_kept_beside_its_clip_and_a_later_one_replaces_it(store: ClipStore) -> None:
    assert store.receive_feedback(verdict(note="two people hugging", judged_by="op-7"))
    assert store.receive_feedback(verdict(verdict="confirmed"))
    record = next(r for r, _ in ClipStore(store.root.parent, store.cfg, "pi-1").clips() if r.kind == "incident")
    assert record.verdict == "confirmed" and record.feedback is not None and record.feedback.note is None
    assert store.stats()["feedback_accepted"] == 2 and store.stats()["feedback_refused"] == 0


def send_verdict(broker: Broker, user: str | None, device: str, event_id: str,
                 judged: str) -> subprocess.CompletedProcess:
    """The reference subscriber's --verdict, as a backend operator runs it (``user`` logs in with USER-pw)."""
    login = [] if user is None else ["--username", user, "--password-env", "BACKEND_PW"]
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "subscriber.py"), "--broker", broker.url, *login,
         "--verdict", device, event_id, judged, "--judged-by", "op-7"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "BACKEND_PW": f"{user}-pw"})


def test_verdicts_reach_the_device_through_the_documented_acl(acl_broker: Broker, tmp_path: Path) -> None:  # noqa: F811
    video = tmp_path / "store.mp4"
    write_stream(video, [("calm", 2.0), ("fight", 4.0), ("calm", 30.0)], fps=25)
    backend = Subscriber(Broker(acl_broker.workdir, acl_broker.port, username="backend", password="backend-pw"),
                         "rclstm/#")
    config = write_config(tmp_path, [camera(str(video), "door", kind="file")], acl_broker, device_id="devA",
                          mqtt={"username": "devA", "password": "devA-pw"},
                          clips={"enabled": True, "min_free_bytes": 0, "calm_every_s": 0})
    daemon = launch(config, tmp_path)
    try:
        ended = lambda msgs: [json.loads(m.payload) for m in msgs  # noqa: E731
                              if m.topic == "rclstm/devA/door/events" and json.loads(m.payload)["type"] == "end"]
        assert backend.wait_for(lambda msgs: bool(ended(msgs)), 60), daemon.stderr
        event_id = ended(backend.messages)[0]["event_id"]
        sent = send_verdict(acl_broker, "backend", "devA", event_id, "false_alarm")
        assert sent.returncode == 0, sent.stderr
        topic = "rclstm/devA/feedback"
        refusals = [publish_as(acl_broker, "backend", topic, b"{not json"),
                    publish_as(acl_broker, "backend", topic, verdict(device_id="devB", event_id=event_id)),
                    publish_as(acl_broker, "backend", topic, verdict(device_id="devA"))]
        assert not any(getattr(r, "is_failure", True) for r in refusals), "the broker let the backend send verdicts"
        forged = publish_as(acl_broker, "backend", "rclstm/devA/door/events")
        wrong_device = send_verdict(acl_broker, "devB", "devA", event_id, "confirmed")
        assert daemon.wait_log("verdict recorded", 30), daemon.stderr
        while daemon.stderr.count("feedback refused") < 3:
            assert daemon.wait_log("feedback refused", 30) and daemon.proc.poll() is None, daemon.stderr
    finally:
        assert daemon.stop() == 0, daemon.stderr
    assert backend.wait_for(lambda msgs: any(m.payload == b"stopped" for m in msgs), 30)
    stats = [json.loads(m.payload) for m in backend.messages if m.topic == "rclstm/devA/stats"][-1]
    backend.close()
    assert (stats["feedback_accepted"], stats["feedback_refused"]) == (1, 3)
    assert getattr(forged, "is_failure", False), "the backend may publish verdicts and nothing else"
    assert wrong_device.returncode == 1 and "refused the verdict" in wrong_device.stderr
    refused = [line for line in daemon.stderr.splitlines() if "feedback refused" in line]
    assert ["not JSON" in refused[0], "'devB' is not this device" in refused[1],
            "no clip of that incident" in refused[2]] == [True, True, True]
    clips = ClipStore(tmp_path / "state", ClipsConfig(enabled=True, min_free_bytes=0), "devA").clips()
    judged = [r for r, _ in clips if str(r.clip_id) == event_id]
    assert len(judged) == 1 and judged[0].verdict == "false_alarm" and judged[0].feedback is not None
    assert judged[0].feedback.judged_by == "op-7"


@pytest.mark.parametrize(("args", "said"), [
    (["pi-1", str(INCIDENT), "maybe"], "--verdict ... 'maybe': the verdict must be false_alarm or confirmed"),
    (["pi-1", "not-a-uuid", "confirmed"], "error: the verdict is not valid: 'not-a-uuid' is not a 'uuid'"),
], ids=["unknown-verdict", "bad-event-id"])
def test_the_subscriber_refuses_to_send_a_bad_verdict(args: list[str], said: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "subscriber.py"), "--broker", "mqtt://127.0.0.1:9",
                           "--verdict", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert "cannot connect" not in done.stderr, "checked before connecting"
