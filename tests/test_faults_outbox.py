"""Issue 12's outbox cases on real files: a small tmpfs (size and inode limits) for full disks, real
damaged SQLite files, a real ``python -m edge run`` for the first start."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from edge.adapters.outbox import Outbox, OutboxUnavailable
from testbed.faults import checkpointed_outbox, fill_inodes, fill_space, unclean_wal

ROOT = Path(__file__).resolve().parents[1]


def test_intact_outbox_is_kept_when_it_cannot_be_opened_for_lack_of_inodes(
        tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmpfs / "state"
    box = Outbox(state / "outbox.db")
    for i in range(12):
        box.put("cam/events", f"event {i}".encode())
    box.close()
    fillers = fill_inodes(tmpfs)
    with pytest.raises(OutboxUnavailable, match=r"cannot be opened .*still failing"):
        Outbox(state / "outbox.db", open_retry_s=1.0)
    assert sorted(p.name for p in state.iterdir()) == ["outbox.db", "outbox.db-last-id"], \
        "an intact outbox was renamed"
    assert "not corruption, the file is kept" in caplog.text
    for path in fillers:
        path.unlink()
    again = Outbox(state / "outbox.db")
    assert [r.payload for r in again.pending()] == [f"event {i}".encode() for i in range(12)]


def test_full_disk_at_first_start_is_one_line_and_no_fake_corrupt_file(tmpfs: Path, tmp_path: Path) -> None:
    state = tmpfs / "state"
    state.mkdir()
    fill_space(tmpfs)
    fill_inodes(tmpfs)
    config = tmp_path / "config.toml"
    config.write_text(f'state_dir = "{state}"\n[mqtt]\nurl = "mqtt://127.0.0.1:9"\n[outbox]\nopen_retry_s = 1\n'
                      '[[cameras]]\nid = "cam"\nsource = "/nonexistent.mp4"\n')
    for _ in range(2):  # systemd restarting it: the same line, no new files
        run = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(config)], capture_output=True,
                             text=True, cwd=ROOT, timeout=120, env={**os.environ, "RCLSTM_MQTT_PASSWORD": ""})
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr
        assert "still failing after 1 s" in run.stderr
        assert not list(state.glob("*corrupt*"))


def test_real_corruption_salvages_every_readable_row_and_counts_the_rest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.db"
    payloads = checkpointed_outbox(path, 173)
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    pages = len(data) // page
    middle = pages // 2
    data[middle * page:(middle + 1) * page] = os.urandom(page)  # one leaf page of rows garbled
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        box = Outbox(path)
    recovered = [r.payload for r in box.pending(limit=1000)]
    assert recovered and set(recovered) <= set(payloads)
    lost = len(payloads) - len(recovered)
    assert 0 < lost < 20, "more than one page of rows was lost"
    assert box.recovered == len(recovered) and box.lost == lost
    assert f"recovered {len(recovered)} unsent message(s)" in caplog.text
    assert f"{lost} could not be read and are lost" in caplog.text
    assert len(list(tmp_path.glob("outbox.db.corrupt-*"))) == 1


def test_a_damaged_payload_is_quarantined_never_handed_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.db"
    payloads = checkpointed_outbox(path, 5, size=50)
    data = bytearray(path.read_bytes())
    at = data.index(b"event 0003 ") + 8
    data[at] ^= 0x01  # "event 0003" becomes "event 0002"-like: one bit, invisible to quick_check
    path.write_bytes(bytes(data))
    box = Outbox(path)
    assert [r.payload for r in box.pending()] == [p for i, p in enumerate(payloads) if i != 3]
    assert box.quarantined == 1 and box.depth() == 4
    assert "damaged (its checksum does not match); quarantined" in caplog.text
    box.close()
    assert Outbox(path).quarantined == 1  # counted across restarts


def test_clean_stop_on_a_full_disk_says_exactly_how_many_events_are_lost(
        tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edge.core.config import validate_config
    from edge.sinks.mqtt import MqttSink

    config = validate_config({"device_id": "d", "state_dir": str(tmpfs / "state"),
                              "mqtt": {"url": "mqtt://127.0.0.1:9"}})  # nothing listens: nothing is acked
    sink = MqttSink(config)
    sink.open([], "model 1")
    assert sink.outbox is not None
    fill_space(tmpfs)
    fill_inodes(tmpfs)
    total = 25
    for i in range(total):
        sink._queue("rclstm/d/cam/events", f'{{"event_id": "{uuid.uuid4()}", "i": {i}}}'.encode() + b" " * 20_000)
    kept = sink.outbox.depth()
    dropped = sink.outbox.dropped
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        sink.close(0.5)
    lost = total - kept - dropped
    assert lost > 0, "the disk was not full"
    assert f"{kept} message(s) kept on disk for the next start; {lost} message(s)" in caplog.text
    assert "are lost" in caplog.text


def test_a_long_write_outage_is_one_line_when_it_starts_and_one_when_it_ends(
        tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmpfs / "state" / "outbox.db")
    filler = fill_space(tmpfs)
    fillers = fill_inodes(tmpfs)
    with caplog.at_level(logging.DEBUG):
        failed = [box.put("cam/events", b"y" * 50_000) for _ in range(8)]
        assert failed.count(None) >= 2
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "cannot store" in r.getMessage()]
        assert len(errors) == 1
        filler.unlink()
        for path in fillers:
            path.unlink()
        assert box.put("cam/events", b"after") is not None
    assert "storing messages works again after" in caplog.text
    assert box.errors == failed.count(None)




def test_a_garbled_wal_after_an_unclean_stop_is_said_not_silent(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.db"
    wal = unclean_wal(path)
    data = bytearray(wal.read_bytes())
    assert len(data) > 10_000
    data[len(data) // 2] ^= 0xFF  # one byte in the middle of the log
    wal.write_bytes(bytes(data))
    box = Outbox(path)
    survived = box.depth()
    assert survived < 30
    assert "is damaged at frame" in caplog.text and "cannot be replayed" in caplog.text


def test_an_intact_wal_after_an_unclean_stop_is_replayed_without_complaint(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.db"
    unclean_wal(path)
    box = Outbox(path)
    assert box.depth() == 30
    assert "write-ahead log" not in caplog.text


def test_paho_memory_is_bounded_while_disk_and_broker_are_both_down_and_nothing_is_lost(
        tmpfs: Path, broker_factory, subscriber) -> None:
    """Disk full and broker stopped: what the outbox cannot store goes to paho only up to its bound, the rest
    waits in the sink's own bounded queue and is stored once the disk has room; the broker, back, gets all."""
    from edge.core.config import validate_config
    from edge.sinks.mqtt import MqttSink

    broker = broker_factory(persistence=True)  # the consumer's session survives the broker's restart
    consumer = subscriber(broker, "rclstm/d/cam/events", persistent_id="bounded-consumer")
    broker.stop()
    config = validate_config({"device_id": "d", "state_dir": str(tmpfs / "state"), "mqtt": {"url": broker.url}})
    sink = MqttSink(config)
    sink.open([], "model 1")
    assert sink.publisher is not None and sink.outbox is not None
    sink.publisher.max_unsaved_bytes = 10 * 1_100  # about ten of these messages in paho's memory
    filler, fillers = fill_space(tmpfs), fill_inodes(tmpfs)
    ids = [str(uuid.uuid4()) for _ in range(40)]
    for event_id in ids:
        sink._queue("rclstm/d/cam/events", f'{{"event_id": "{event_id}"}}'.encode() + b" " * 1_000)
    in_paho = sink.publisher.unsaved()
    assert 0 < in_paho <= 10 and sink.held() == len(ids) - in_paho - sink.outbox.depth() > 0
    filler.unlink()
    for path in fillers:
        path.unlink()
    sink.delivery()  # the stats tick: the held messages go into the outbox
    assert sink.held() == 0 and sink.lost == 0
    broker.start()
    received = lambda messages: {json.loads(m.payload)["event_id"] for m in messages}  # noqa: E731
    assert consumer.wait_for(lambda messages: received(messages) >= set(ids), timeout=120), \
        f"{len(set(ids) - received(consumer.messages))} of {len(ids)} events missing"
    sink.close(5.0)


@pytest.mark.parametrize("damage", ["deleted", "cut at a frame", "cut mid-frame"])
def test_a_lost_or_cut_wal_after_an_unclean_stop_says_how_many_messages_are_missing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    """SQLite opens such a database without a word; the last-id marker beside it tells what is missing."""
    path = tmp_path / "outbox.db"
    wal = unclean_wal(path)
    data = wal.read_bytes()
    page = int.from_bytes(data[8:12], "big")
    frames = (len(data) - 32) // (24 + page)
    if damage == "deleted":
        wal.unlink()
    else:
        keep = 32 + (frames // 2) * (24 + page) + (0 if damage == "cut at a frame" else 100)
        wal.write_bytes(data[:keep])
    box = Outbox(path)
    survived = box.depth()
    assert survived < 30
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    missing = 30 - survived
    assert f"{missing} message(s) stored before it" in line and f"up to {missing} event(s) lost" in line, line
    assert box.lost == missing
    box.close()
    caplog.clear()
    Outbox(path).close()  # said once: the next start finds nothing new missing
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
