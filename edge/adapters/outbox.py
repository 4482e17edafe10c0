"""The outbox: every event is written to SQLite before it is published and deleted only on PUBACK.

paho keeps unacknowledged QoS 1 messages in memory, so a crash, a power cut or a restart during a
broker outage would lose them; this table is what makes delivery at-least-once across all of those.

WAL with ``synchronous=FULL``: an event is a few hundred bytes and an incident makes a handful, so
an fsync per commit costs nothing here, and it is what guarantees that a row ``put`` returned for
survives a power cut (NORMAL in WAL mode may lose the last commits). The table is bounded in rows
and bytes: on a device that stays offline for weeks the oldest events are dropped, counted and
logged, rather than filling the SD card. SQLite errors (disk full, I/O errors) never reach the
caller as exceptions: the daemon keeps running, and they are counted and logged.

Damage is told apart from bad luck. Only SQLite saying the file is corrupt or not a database sets
the file aside, and then every row that can still be read is copied into the new outbox first (the
log says how many were recovered and how many could not be read). Any other error while opening (no
space, no inodes, "unable to open database file") is retried with back-off and never renames an
intact file; when it does not clear, ``OutboxUnavailable`` says so in one line. Each row carries a
CRC-32 of its topic and payload, checked before it is handed out: a row whose bytes changed on disk
is quarantined (kept in its own table, counted, logged), never published.

A WAL that an unclean stop left and that was then deleted or cut short at a frame boundary looks
intact to SQLite: the messages committed in it are simply gone. A file beside the database
(``outbox.db-last-id``) holds the highest message id ever committed, written after each commit; at
open, ids the database has never reached are messages that were stored and are now missing, and the
log says how many (up to that many events lost: some may have been acknowledged already).

The same database remembers, per open incident, the last message sent about it, in the same
transaction as that message: a daemon that dies with an incident open (SIGKILL, power cut) finds it
at its next start and closes it, so a backend never keeps an incident open forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import zlib
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
    created REAL NOT NULL,
    crc INTEGER
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, topic TEXT, payload BLOB, qos INTEGER, retain INTEGER, created REAL, crc INTEGER
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS open_incidents (event_id TEXT PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL);
"""


OPEN_RETRY_S = 60.0
_SALVAGE_PROBES = 1_000_000  # ids probed one by one between the readable ends of a damaged table


class OutboxUnavailable(OSError):
    """The outbox cannot be opened for a reason that is not corruption, and retrying did not help."""


class OutboxInUse(OutboxUnavailable):
    """Another process holds the outbox's directory.

    Two daemons on one state dir would each publish and delete the other's rows and count them as
    their own (measured: a negative depth and a traceback at stop), so the second one does not start.
    """


def _hold(directory: Path, outbox: Path) -> int:
    """An exclusive lock on the state directory, held while the outbox is open.

    The directory itself is locked, not a lock file: on a disk out of inodes a lock file could not be
    created, and the outbox must still open there (its rows wait for space, see ``_open``).
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutboxInUse(f"outbox {outbox}: another rclstm-edge process is using {directory}; stop it, or give "
                          "this one its own state_dir") from None
    return fd


def checksum(topic: str, payload: bytes) -> int:
    """What a row's ``crc`` holds: CRC-32 of the topic's UTF-8 bytes, a NUL, and the payload."""
    return zlib.crc32(payload, zlib.crc32(topic.encode() + b"\0"))


def usable_state_dir(wanted: Path) -> Path:
    """The configured state directory, or a per-user one when it cannot be written (a dev machine).

    Created private (0700): it holds events and snapshots; systemd's StateDirectory sets its own mode.
    """
    for candidate in (wanted, _user_state_dir()):
        try:
            candidate.mkdir(mode=0o700, parents=True, exist_ok=True)
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

    def __init__(self, path: Path, max_rows: int = 10_000, max_bytes: int = 50_000_000,
                 open_retry_s: float = OPEN_RETRY_S) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.errors = 0
        self.recovered = 0
        self.lost = 0
        self._failing = 0  # consecutive failed puts, so a long outage is one line, and its end another
        self._lock = threading.Lock()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._held = _hold(self.path.parent, self.path)
        existed = self.path.exists()
        damage = wal_damage(Path(f"{self.path}-wal"))
        self._set_aside_at: Path | None = None
        try:
            self._db = self._open(open_retry_s)
        except OSError:
            os.close(self._held)
            raise
        self._marker = _LastId(Path(f"{self.path}{LAST_ID_SUFFIX}"))
        missing = self._missing_since_marker() if existed and self._set_aside_at is None else None
        if missing:
            self.lost += missing[1] - missing[0] + 1
        if damage or missing:
            log.error("outbox %s: %s", self.path, _wal_loss(damage, missing))
        self._marker.write(self._highest_id())
        self._rows, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0) FROM messages"
        ).fetchone()
        self._dropped = self._counter("dropped")
        self._quarantined = self._counter("quarantined")
        if self._rows:
            log.info("outbox has %d unacknowledged messages from a previous run; they will be sent", self._rows)

    def _open(self, retry_s: float) -> sqlite3.Connection:
        """Open the outbox; retry what is not corruption, salvage what is."""
        deadline = time.monotonic() + retry_s
        delay, said = 0.5, False
        while True:
            try:
                return self._connect()
            except sqlite3.DatabaseError as exc:
                if _is_corrupt(exc):
                    return self._set_aside(exc)
                problem = f"outbox {self.path} cannot be opened ({exc})"
            except OSError as exc:
                problem = f"outbox {self.path} cannot be opened ({exc.strerror or exc})"
            if time.monotonic() + delay > deadline:
                raise OutboxUnavailable(f"{problem}; still failing after {retry_s:.0f} s: free space or inodes "
                                        f"on {self.path.parent}, or check its permissions") from None
            if not said:
                log.error("%s; not corruption, the file is kept; retrying for up to %.0f s", problem, retry_s)
                said = True
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _connect(self) -> sqlite3.Connection:
        old_umask = os.umask(0o077)  # the database, its -wal and -shm: private to the service
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        finally:
            os.umask(old_umask)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            (status,) = db.execute("PRAGMA quick_check").fetchone()
            if status != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {status}")
            db.executescript(_SCHEMA)
            columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
            if "crc" not in columns:  # an outbox from before checksums: its rows stay unchecked
                db.execute("ALTER TABLE messages ADD COLUMN crc INTEGER")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _set_aside(self, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
        """Move a corrupt outbox aside, copy every readable row into a new one, and say how many."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        self.path.rename(aside)
        self._set_aside_at = aside
        wal = Path(f"{self.path}-wal")
        if wal.exists():
            wal.rename(f"{aside}-wal")  # read together with the file it belongs to
        Path(f"{self.path}-shm").unlink(missing_ok=True)
        rows, unreadable = _salvage(aside)
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO messages (id, topic, payload, qos, retain, created, crc) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except sqlite3.Error as again:
            raise OutboxUnavailable(f"outbox {self.path}: the corrupt file was moved to {aside.name} but a new "
                                    f"one cannot be written ({again}); {len(rows)} readable message(s) are "
                                    "still in the moved file") from None
        self.recovered = len(rows)
        self.lost = unreadable or 0
        lost = "an unknown number" if unreadable is None else str(unreadable)
        log.error("outbox %s is corrupt (%s): moved it to %s; recovered %d unsent message(s) into a new outbox, "
                  "%s could not be read and are lost", self.path, exc, aside.name, len(rows), lost)
        return db

    def _highest_id(self) -> int:
        """The highest message id this database ever committed (AUTOINCREMENT never reuses one)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        return int(row[0]) if row else 0

    def _missing_since_marker(self) -> tuple[int, int] | None:
        """First and last id of messages the marker says were committed but the database never saw."""
        recorded, highest = self._marker.read(), self._highest_id()
        return (highest + 1, recorded) if recorded is not None and recorded > highest else None

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
                row_id = self._insert(topic, payload, qos, retain, size, incident)
            except sqlite3.Error as exc:
                return self._put_failed(exc, topic, payload, qos, retain, size, incident)
            if self._failing:
                log.warning("outbox: storing messages works again after %d failed write(s)", self._failing)
                self._failing = 0
            return row_id

    def _put_failed(self, exc: sqlite3.Error, topic: str, payload: bytes, qos: int, retain: bool, size: int,
                    incident: IncidentMark | None) -> int | None:
        """Disk full: make room from the oldest rows once; otherwise count it, said once until it recovers."""
        if _is_full(exc) and self._rows:
            # Disk full: freeing the oldest rows releases pages SQLite can reuse for this one.
            log.log(logging.WARNING if not self._failing else logging.DEBUG,
                    "outbox: disk full; dropping the oldest message to make room")
            try:
                self._drop_oldest(1)
                return self._insert(topic, payload, qos, retain, size, incident)
            except sqlite3.Error as again:
                exc = again
        self.errors += 1
        self._failing += 1
        level = logging.ERROR if self._failing == 1 else logging.DEBUG
        log.log(level, "outbox: cannot store a message for %s (%s); it will be sent without a copy on disk "
                "(%d write error(s) in total; said again when writing works)", topic, exc, self.errors)
        return None

    def _insert(self, topic: str, payload: bytes, qos: int, retain: bool, size: int,
                incident: IncidentMark | None) -> int:
        overflow_rows = max(0, self._rows + 1 - self.max_rows)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute(
                "INSERT INTO messages (topic, payload, qos, retain, created, crc) VALUES (?, ?, ?, ?, ?, ?)",
                (topic, sqlite3.Binary(payload), qos, int(retain), time.time(), checksum(topic, payload)),
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
        self._marker.write(int(cursor.lastrowid))  # after the commit: the marker never runs ahead of the data
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
        """Unacknowledged messages in the order they were stored; a row whose checksum does not match
        is quarantined instead (logged and counted), never handed out."""
        with self._lock:
            try:
                cursor = self._db.execute(
                    "SELECT id, topic, payload, qos, retain, crc FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                    (after_id or 0, limit),
                )
                rows = cursor.fetchall()
                good = [Row(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in rows
                        if r[5] is None or checksum(r[1], bytes(r[2])) == r[5]]
                for bad in {r[0] for r in rows} - {r.id for r in good}:
                    self._quarantine(bad)
                return good
            except sqlite3.Error as exc:
                self.errors += 1
                log.error("outbox: cannot read pending messages (%s)", exc)
                return []

    def _quarantine(self, row_id: int) -> None:
        size = self._db.execute("SELECT LENGTH(payload) + LENGTH(topic) FROM messages WHERE id = ?",
                                (row_id,)).fetchone()[0]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT OR REPLACE INTO quarantine SELECT id, topic, payload, qos, retain, created, crc "
                             "FROM messages WHERE id = ?", (row_id,))
            self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
            self._db.execute("INSERT INTO counters (name, value) VALUES ('quarantined', 1) "
                             "ON CONFLICT(name) DO UPDATE SET value = value + 1")
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._rows -= 1
        self._bytes -= size
        self._quarantined += 1
        log.error("outbox: message %d is damaged (its checksum does not match); quarantined, not published "
                  "(%d quarantined in total)", row_id, self._quarantined)

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

    def oldest_age_s(self) -> float:
        """Seconds the oldest unacknowledged message has waited (0 when empty or unreadable)."""
        with self._lock:
            try:
                row = self._db.execute("SELECT MIN(created) FROM messages").fetchone()
            except sqlite3.Error:
                return 0.0
        return round(max(0.0, time.time() - row[0]), 1) if row and row[0] is not None else 0.0

    @property
    def quarantined(self) -> int:
        """Messages whose bytes were damaged on disk, kept out of the broker's way (persisted)."""
        return self._quarantined

    @property
    def dropped(self) -> int:
        """Messages dropped because the outbox was full, over its whole life (persisted)."""
        return self._dropped

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._marker.close()
            if self._held >= 0:
                os.close(self._held)  # releases the directory lock
                self._held = -1


LAST_ID_SUFFIX = "-last-id"


class _LastId:
    """The highest committed message id, 8 bytes rewritten in place after each commit.

    Written after the commit's fsync and not synced itself: after a power cut it may lag behind the
    database (no alarm), but it is never ahead of what was committed, so a gap means lost WAL frames.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        old_umask = os.umask(0o077)
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:  # no inodes: the outbox works without the check
            log.warning("outbox: cannot keep %s (%s); a lost write-ahead log would go unnoticed", path.name,
                        exc.strerror)
            self._fd = None
        finally:
            os.umask(old_umask)

    def read(self) -> int | None:
        data = os.pread(self._fd, 8, 0) if self._fd is not None else b""
        return int.from_bytes(data, "little") if len(data) == 8 else None

    def write(self, value: int) -> None:
        if self._fd is None:
            return
        try:
            os.pwrite(self._fd, value.to_bytes(8, "little"), 0)
        except OSError as exc:  # a full disk: the marker lags, which never raises a false alarm
            log.debug("outbox: cannot update %s (%s)", self.path.name, exc.strerror)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _wal_loss(damage: str | None, missing: tuple[int, int] | None) -> str:
    """One line for what an unclean stop's write-ahead log lost: its damage, the missing ids, or both."""
    if missing is None:
        assert damage is not None
        return damage
    first, last = missing
    count = last - first + 1
    ids = f"id {first}" if count == 1 else f"ids {first} to {last}"
    what = damage or "the write-ahead log left by an unclean stop is missing or was cut short"
    return (f"{what}; {count} message(s) stored before it ({ids}) are not in the outbox: up to {count} "
            "event(s) lost (fewer if the broker had acknowledged some)")


_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_READ_MAX = 256 * 1024 * 1024


def wal_damage(wal: Path) -> str | None:
    """What SQLite will silently skip in the -wal file an unclean stop left, in one line; None if nothing.

    SQLite replays a WAL up to its first frame whose checksum fails and ignores the rest without a
    word; committed messages in those frames are lost. Reading the frames as SQLite does tells a
    damaged WAL (committed transactions after a bad frame) from the torn tail of an unfinished write.
    """
    try:
        with wal.open("rb") as fh:
            data = fh.read(_WAL_READ_MAX)
    except OSError:
        return None
    if not data:
        return None
    if len(data) < 32 or int.from_bytes(data[:4], "big") not in _WAL_MAGIC:
        return (f"the write-ahead log {wal.name} left by an unclean stop has a damaged header; the messages "
                "committed in it since the last checkpoint are lost (how many cannot be known)")
    big = data[3] & 1
    page = int.from_bytes(data[8:12], "big")
    salt = data[16:24]
    sums = _wal_checksum(data[:24], big, (0, 0))
    if sums != (int.from_bytes(data[24:28], "big"), int.from_bytes(data[28:32], "big")):
        return (f"the write-ahead log {wal.name} left by an unclean stop has a damaged header; the messages "
                "committed in it since the last checkpoint are lost (how many cannot be known)")
    size, offset, bad_at, lost_commits = 24 + page, 32, None, 0
    while offset + size <= len(data):
        header = data[offset:offset + 24]
        if header[8:16] != salt:
            break  # frames of an earlier generation: not part of this log
        commit = int.from_bytes(header[4:8], "big") != 0
        if bad_at is None:
            sums = _wal_checksum(header[:8] + data[offset + 24:offset + size], big, sums)
            if sums != (int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")):
                bad_at = (offset - 32) // size
        if bad_at is not None and commit:
            lost_commits += 1
        offset += size
    if bad_at is None or not lost_commits:
        return None
    return (f"the write-ahead log {wal.name} left by an unclean stop is damaged at frame {bad_at}: "
            f"{lost_commits} committed transaction(s) after it cannot be replayed and their messages are lost")


def _wal_checksum(data: bytes, big: int, sums: tuple[int, int]) -> tuple[int, int]:
    import struct

    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    s0, s1 = sums
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """SQLite says the file itself is damaged or is not a database (not: no space, cannot open, I/O)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or text.startswith("quick_check")


_COLUMNS = "id, topic, payload, qos, retain, created, crc"


def _salvage(path: Path) -> tuple[list[tuple], int | None]:
    """Every readable row of a damaged outbox, and how many could not be read (None: unknown).

    The table is read forwards until the first error, backwards until the first error, and the ids
    between are probed one by one, so one damaged page costs only its own rows.
    """
    rows: dict[int, tuple] = {}
    try:
        db = sqlite3.connect(path)
    except sqlite3.Error:
        return [], None
    try:
        try:
            columns = [r[1] for r in db.execute("PRAGMA table_info(messages)")]
        except sqlite3.Error:
            return [], None
        if not columns:
            return [], None
        select = _COLUMNS if "crc" in columns else _COLUMNS.replace("crc", "NULL")
        failed: list[int | None] = []  # per direction: the last id read before an error, or None
        for order in ("ASC", "DESC"):
            last = -1
            try:
                for row in db.execute(f"SELECT {select} FROM messages ORDER BY id {order}"):
                    rows[row[0]] = row
                    last = row[0]
                failed.append(None)
            except sqlite3.Error:
                failed.append(last)
        if failed == [None, None]:
            return _readable(rows), 0
        low = max(failed[0] if failed[0] is not None else 0, 0)
        high = failed[1] if failed[1] not in (None, -1) else _last_id(db, rows)
        if high is None:
            return _readable(rows), None
        unreadable = 0
        for row_id in range(low + 1, min(high, low + 1 + _SALVAGE_PROBES)):
            if row_id in rows:
                continue
            try:
                row = db.execute(f"SELECT {select} FROM messages WHERE id = ?", (row_id,)).fetchone()
            except sqlite3.Error:
                unreadable += 1
                continue
            if row is not None:
                rows[row_id] = row
        if not rows and unreadable == 0:
            return [], None
        return _readable(rows), unreadable
    finally:
        db.close()


def _last_id(db: sqlite3.Connection, rows: dict[int, tuple]) -> int | None:
    """One past the highest id ever given out (AUTOINCREMENT remembers it), when it can be read."""
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
    except sqlite3.Error:
        row = None
    if row is not None:
        return int(row[0]) + 1
    return max(rows) + 1 if rows else None


def _readable(rows: dict[int, tuple]) -> list[tuple]:
    return [rows[k] for k in sorted(rows)]


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc).lower()
