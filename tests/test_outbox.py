"""The SQLite outbox: order, bounds, crash safety and disk-full behaviour, on real files."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge.adapters.outbox import IncidentMark, Outbox, OutboxInUse

ROOT = Path(__file__).resolve().parents[1]


def test_put_pending_ack_in_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    ids = [box.put(f"t/{i}", f"payload {i}".encode()) for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [r.topic for r in box.pending()] == [f"t/{i}" for i in range(5)]
    assert [r.id for r in box.pending(after_id=ids[1], limit=2)] == ids[2:4]
    assert box.depth() == 5
    assert box.size() == sum(len(f"t/{i}") + len(f"payload {i}") for i in range(5))
    box.ack(ids[0])
    box.ack(ids[0])  # a second PUBACK for a resent message is harmless
    box.ack(ids[3])
    assert [r.id for r in box.pending()] == [ids[1], ids[2], ids[4]]
    assert box.depth() == 3
    row = box.pending()[0]
    assert (row.payload, row.qos, row.retain) == (b"payload 1", 1, False)


def test_open_incidents_are_remembered_with_their_last_message_until_the_end(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    box.put("cam/a/events", b"a start", incident=IncidentMark("a", open=True))
    box.put("cam/b/events", b"b start", incident=IncidentMark("b", open=True))
    box.put("cam/a/events", b"a update", incident=IncidentMark("a", open=True))
    box.put("stats", b"not an incident")
    box.put("cam/b/events", b"b end", incident=IncidentMark("b", open=False))
    for row in box.pending():
        box.ack(row.id)  # acknowledged or not, an incident stays open until its end is stored
    box.close()
    again = Outbox(tmp_path / "outbox.db")
    assert again.left_open() == [("a", "cam/a/events", b"a update")]
    again.forget_open("a")
    assert again.left_open() == []


def test_unacknowledged_rows_survive_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db")
    first = box.put("a", b"1")
    box.put("b", b"2", retain=True)
    box.ack(first)
    box.close()
    again = Outbox(tmp_path / "outbox.db")
    rows = again.pending()
    assert [(r.topic, r.payload, r.retain) for r in rows] == [("b", b"2", True)]
    assert again.depth() == 1 and again.size() == 2
    assert again._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_full_by_rows_drops_oldest_and_counts_persistently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path / "outbox.db", max_rows=3)
    for i in range(5):
        box.put("t", str(i).encode())
    assert [r.payload for r in box.pending()] == [b"2", b"3", b"4"]
    assert box.depth() == 3 and box.dropped == 2
    assert "dropped the 1 oldest" in caplog.text
    box.close()
    assert Outbox(tmp_path / "outbox.db", max_rows=3).dropped == 2


def test_full_by_bytes_drops_oldest(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", max_rows=100, max_bytes=2500)
    for i in range(4):
        box.put("t", bytes([i]) * 999)  # 1000 bytes each with the topic
    assert [r.payload[0] for r in box.pending()] == [2, 3]
    assert box.size() == 2000 and box.dropped == 2


def test_garbage_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database" * 100)
    box = Outbox(path)
    assert box.depth() == 0
    assert box.put("t", b"x") is not None
    assert len(list(tmp_path.glob("outbox.db.corrupt-*"))) == 1
    assert "is corrupt (file is not a database)" in caplog.text


WRITER = textwrap.dedent(
    """
    import sys
    from edge.adapters.outbox import IncidentMark, Outbox
    box = Outbox(sys.argv[1])
    i = 0
    while True:
        row = box.put("cam/events", b"event %d " % i + b"x" * 500)
        print(row, flush=True)
        i += 1
    """
)


def test_sigkill_mid_write_keeps_every_committed_row(tmp_path: Path) -> None:
    """A power cut is simulated by SIGKILL during a write loop: the db opens, is intact and replays."""
    path = tmp_path / "outbox.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    committed = []
    assert proc.stdout is not None
    while len(committed) < 200:
        committed.append(int(proc.stdout.readline()))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed += [int(line) for line in proc.stdout.read().split()]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    box = Outbox(path)
    rows = box.pending(limit=100_000)
    ids = [r.id for r in rows]
    assert ids == sorted(ids)
    assert set(committed) <= set(ids), "a row whose put() returned was lost"
    assert all(r.payload.startswith(b"event ") for r in rows)
    assert box.depth() == len(rows) >= len(committed)


DISK_FULL = textwrap.dedent(
    """
    import resource, signal, sys
    from edge.adapters.outbox import IncidentMark, Outbox
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    box = Outbox(sys.argv[1])
    box.put("t", b"before")
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    results = [box.put("t", b"y" * 20_000) for _ in range(40)]
    failed = sum(r is None for r in results)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    after = box.put("t", b"after")
    print(failed, box.errors, after is not None, box.pending(limit=1000)[-1].payload.decode())
    """
)


def test_disk_full_is_counted_and_recovers(tmp_path: Path) -> None:
    """A file-size limit stands in for a full disk: puts fail without raising, then work again."""
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path / "outbox.db")],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    failed, errors, recovered, last = proc.stdout.split()
    assert int(failed) > 0 and int(errors) == int(failed)
    assert recovered == "True" and last == "after"
    assert "cannot store a message" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_concurrent_put_and_ack_keep_the_counters(tmp_path: Path) -> None:
    """A writer thread and an acker share one connection without deadlock or drift in the counters."""
    import threading

    box = Outbox(tmp_path / "outbox.db")
    stop = threading.Event()

    def writer() -> None:
        for i in range(100):
            box.put("t", str(i).encode())
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    acked = 0
    deadline = time.monotonic() + 60
    while (not stop.is_set() or box.depth()) and time.monotonic() < deadline:
        for row in box.pending(limit=10):
            box.ack(row.id)
            acked += 1
    thread.join()
    assert acked == 100 and box.depth() == 0 and box.size() == 0


def test_a_second_process_on_the_same_state_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    """Two daemons on one outbox would publish and delete each other's rows; the second one does not start."""
    first = Outbox(tmp_path / "outbox.db")
    first.put("t", b"kept")
    with pytest.raises(OutboxInUse, match="another rclstm-edge process is using"):
        Outbox(tmp_path / "outbox.db")
    opener = "import sys; from pathlib import Path; from edge.adapters.outbox import Outbox; Outbox(Path(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", opener, str(tmp_path / "outbox.db")],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "another rclstm-edge process is using" in done.stderr
    first.close()
    first.close()  # twice is harmless
    again = Outbox(tmp_path / "outbox.db")
    assert again.depth() == 1
    again.close()
