"""The outbox: every event is written to SQLite before it is published and deleted only on PUBACK.

paho keeps unacknowledged QoS 1 messages in memory, so a crash, a power cut or a restart during a
broker outage would lose them; this table is what makes delivery at-least-once across all of those.

WAL with ``synchronous=FULL``: an event is a few hundred bytes and an incident makes a handful, so
an fsync per commit costs nothing here, and it is what guarantees that a row ``put`` returned for
survives a power cut (NORMAL in WAL mode may lose the last commits). The table is bounded in rows
and bytes: on a device that stays offline for weeks the oldest events are dropped, counted and
logged, rather than filling the SD card. SQLite errors (disk full, I/O errors) never reach the
caller as exceptions: the daemon keeps running, and they are counted and logged.

The same database remembers, per open incident, the last message sent about it, in the same
transaction as that message: a daemon that dies with an incident open (SIGKILL, power cut) finds it
at its next start and closes it, so a backend never keeps an incident open forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

OUTBOX_NAME = "outbox.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS open_incidents (event_id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL);
"""


def usable_state_dir(wanted: Path) -> Path:
    """The configured state directory, or a per-user one when it cannot be written (a dev machine)."""
    for candidate in (wanted, _user_state_dir()):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            if candidate != wanted:
                log.warning("state_dir %s is not writable; using %s", wanted, candidate)
            return candidate
    raise OSError(f"state_dir {wanted} is not writable and neither is {_user_state_dir()}; set state_dir")


def _user_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rclstm-edge"


class Row(NamedTuple):
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class IncidentMark(NamedTuple):
    """Which incident a message belongs to and whether the incident is still open after it."""

    event_id: str
    open: bool


class Outbox:
    """A bounded, crash-safe FIFO of messages waiting for a broker acknowledgement.

    Thread-safe: camera threads ``put``, the MQTT network thread ``ack``s and the publisher reads
    ``pending``; one connection behind one lock keeps that simple and is plenty for event rates.
    """

    def __init__(self, path: Path, max_rows: int = 10_000, max_bytes: int = 50_000_000) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.errors = 0
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()
        self._rows, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0) FROM messages"
        ).fetchone()
        self._dropped = self._counter("dropped")
        if self._rows:
            log.info("outbox has %d unacknowledged messages from a previous run; they will be sent", self._rows)

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            # A file that is not a database (or is damaged beyond SQLite's own recovery) must not
            # keep the daemon from starting: keep it for inspection and start an empty outbox.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("outbox %s cannot be opened (%s); moved it to %s and started a new one", self.path, exc, aside)
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            (status,) = db.execute("PRAGMA quick_check").fetchone()
            if status != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {status}")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
            incident: IncidentMark | None = None) -> int | None:
        """Store a message; its row id, or None when SQLite failed (counted in ``errors`` and logged).

        With ``incident``, the message is also remembered as the incident's last one while it is open,
        and forgotten with the message that ends it.
        """
        size = len(payload) + len(topic.encode())
        with self._lock:
            try:
                return self._insert(topic, payload, qos, retain, size, incident)
            except sqlite3.Error as exc:
                if _is_full(exc) and self._rows:
                    # Disk full: freeing the oldest rows releases pages SQLite can reuse for this one.
                    log.warning("outbox: disk full; dropping the oldest message to make room")
                    try:
                        self._drop_oldest(1)
                        return self._insert(topic, payload, qos, retain, size, incident)
                    except sqlite3.Error as again:
                        exc = again
                self.errors += 1
                log.error("outbox: cannot store a message for %s (%s); it will be sent without a copy on disk",
                          topic, exc)
                return None

    def _insert(self, topic: str, payload: bytes, qos: int, retain: bool, size: int,
                incident: IncidentMark | None) -> int:
        overflow_rows = max(0, self._rows + 1 - self.max_rows)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(
                "INSERT INTO messages (topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                (topic, sqlite3.Binary(payload), qos, int(retain), time.time()),
            )
            if incident is not None and incident.open:
                self._db.execute("INSERT OR REPLACE INTO open_incidents (event_id, topic, payload) VALUES (?, ?, ?)",
                                 (incident.event_id, topic, sqlite3.Binary(payload)))
            elif incident is not None:
                self._db.execute("DELETE FROM open_incidents WHERE event_id = ?", (incident.event_id,))
            dropped = self._evict(overflow_rows, self._bytes + size - self.max_bytes, exclude=cursor.lastrowid)
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._rows += 1 - dropped[0]
        self._bytes += size - dropped[1]
        self._note_dropped(dropped[0])
        return int(cursor.lastrowid)

    def _evict(self, rows: int, excess_bytes: int, exclude: int) -> tuple[int, int]:
        """Delete the oldest rows (inside the caller's transaction) until both bounds hold."""
        victims: list[tuple[int, int]] = []
        freed = 0
        if rows > 0 or excess_bytes > 0:
            cursor = self._db.execute(
                "SELECT id, LENGTH(payload) + LENGTH(topic) FROM messages WHERE id != ? ORDER BY id", (exclude,)
            )
            for row_id, size in cursor:
                if len(victims) >= rows and freed >= excess_bytes:
                    break
                victims.append((row_id, size))
                freed += size
        if victims:
            self._db.executemany("DELETE FROM messages WHERE id = ?", [(v[0],) for v in victims])
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (len(victims),),
            )
        return len(victims), freed

    def _drop_oldest(self, count: int) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            dropped = self._evict(count, 0, exclude=-1)
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._rows -= dropped[0]
        self._bytes -= dropped[1]
        self._note_dropped(dropped[0])

    def _note_dropped(self, count: int) -> None:
        if count:
            self._dropped += count
            log.warning("outbox full (max_rows=%d, max_bytes=%d): dropped the %d oldest unsent message(s), "
                        "%d dropped in total", self.max_rows, self.max_bytes, count, self._dropped)

    def _rollback(self) -> None:
        # SQLite may already have rolled back on its own (e.g. after SQLITE_FULL).
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def pending(self, after_id: int | None = None, limit: int = 100) -> list[Row]:
        """Unacknowledged messages in the order they were stored."""
        with self._lock:
            try:
                cursor = self._db.execute(
                    "SELECT id, topic, payload, qos, retain FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id or 0, limit),
                )
                return [Row(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in cursor]
            except sqlite3.Error as exc:
                self.errors += 1
                log.error("outbox: cannot read pending messages (%s)", exc)
                return []

    def ack(self, row_id: int) -> None:
        """Forget a message the broker acknowledged."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT LENGTH(payload) + LENGTH(topic) FROM messages WHERE id = ?", (row_id,)
                ).fetchone()
                if row is None:
                    return  # dropped while in flight, or acknowledged twice after a resend
                self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                self._rows -= 1
                self._bytes -= row[0]
            except sqlite3.Error as exc:
                # The row stays and is sent again after a restart: a duplicate, never a loss.
                self.errors += 1
                log.error("outbox: cannot delete acknowledged message %d (%s)", row_id, exc)

    def left_open(self) -> list[tuple[str, str, bytes]]:
        """(event id, topic, last message) of every incident a previous run left open, oldest message first."""
        with self._lock:
            try:
                rows = self._db.execute("SELECT event_id, topic, payload FROM open_incidents ORDER BY rowid").fetchall()
            except sqlite3.Error as exc:
                self.errors += 1
                log.error("outbox: cannot read open incidents (%s)", exc)
                return []
        return [(event_id, topic, bytes(payload)) for event_id, topic, payload in rows]

    def forget_open(self, event_id: str) -> None:
        """Drop an open incident that cannot be closed (its last message no longer parses)."""
        with self._lock:
            try:
                self._db.execute("DELETE FROM open_incidents WHERE event_id = ?", (event_id,))
            except sqlite3.Error as exc:
                self.errors += 1
                log.error("outbox: cannot forget open incident %s (%s)", event_id, exc)

    def depth(self) -> int:
        return self._rows

    def size(self) -> int:
        """Bytes of topics and payloads waiting, as bounded by ``max_bytes``."""
        return self._bytes

    @property
    def dropped(self) -> int:
        """Messages dropped because the outbox was full, over its whole life (persisted)."""
        return self._dropped

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc).lower()
