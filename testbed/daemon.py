"""A daemon subprocess, a systemd notify socket and event counts, for the fault and security tests and the benchmarks.

The daemon runs as `python -m edge run` exactly as systemd starts it; its stderr goes to a file (a
pipe nobody reads would fill up and block the daemon's logging mid-test). Counting follows the
end-to-end tests: the daemon logs one line per event after the event is on disk ("sent"), a real
subscriber records what the broker delivered ("received").
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from testbed.broker import Broker, Subscriber

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "dev-faults"
# The daemon's one line per event, written once the event is in the outbox.
EVENT_LINE = re.compile(r"msg=event camera=\S+ type=(\S+) event_id=(\S+) seq=(\d+)")
# Events that come often: every window above the threshold starts one, updates every half second.
EAGER = {"threshold": 0.5, "start_windows": 1, "end_windows": 1, "cooldown_s": 0.0, "update_interval_s": 0.5}

Key = tuple[str, str, int]  # (event_id, type, seq): what a consumer deduplicates on


def outbox_events(state_dir: Path) -> list[dict[str, Any]]:
    """The events waiting in a daemon's outbox, in sending order (read-only: the daemon may be running)."""
    db = sqlite3.connect(f"file:{state_dir / 'outbox.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT topic, payload FROM messages ORDER BY id").fetchall()
    finally:
        db.close()
    return [json.loads(payload) for topic, payload in rows if topic.endswith("/events")]


def camera(source: str | int, camera_id: str = "cam0", **settings: Any) -> dict[str, Any]:
    return {"id": camera_id, "source": source, **settings}


def write_config(tmp_path: Path, cameras: list[dict[str, Any]], broker: Broker | None = None,
                 **sections: dict[str, Any]) -> Path:
    """A config file (mode 600) for ``cameras``; ``sections`` are merged over the defaults per table."""
    data: dict[str, Any] = {
        "device_id": DEVICE,
        "state_dir": str(tmp_path / "state"),
        "log_level": "info",
        "model": {"bundle": "demo"},
        "outbox": {"flush_timeout_s": 5.0},
        "cameras": cameras,
    }
    if broker is not None:
        data["mqtt"] = {"url": broker.url, "keepalive_s": 5, "stats_interval_s": 1.0}
        if broker.tls:
            data["mqtt"]["ca_file"] = str(broker.tls.ca_file)
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
    path = tmp_path / "config.toml"
    path.write_text(tomli_w.dumps(data))
    path.chmod(0o600)
    return path


@dataclass
class DaemonProcess:
    """A running `rclstm-edge run`; stdout and stderr are files, read at any time."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                return text in self.stderr
            time.sleep(0.1)
        return True

    def sent(self) -> list[Key]:
        return [(m.group(2), m.group(1), int(m.group(3))) for m in EVENT_LINE.finditer(self.stderr)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def launch(config: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
           name: str = "daemon", python: str | Path = sys.executable) -> DaemonProcess:
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen([str(python), "-m", "edge", "run", "--config", str(config), *args],
                                stdout=stdout, stderr=stderr, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    return DaemonProcess(proc, out, err)


@dataclass
class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET: every message with its arrival time."""

    path: Path
    messages: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode(errors="replace")))

    def env(self, watchdog_s: float) -> dict[str, str]:
        """What systemd sets for a unit with ``WatchdogSec=watchdog_s`` (the daemon pings twice as often)."""
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}

    def count(self, message: str) -> int:
        return sum(1 for _, m in list(self.messages) if m == message)

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        self._thread.join(2)


def received(sub: Subscriber, first_copies: bool = False) -> list[Key]:
    """The key of every event message the subscriber got, duplicates included.

    ``first_copies`` leaves out the broker's own redeliveries (DUP set), keeping what publishers sent.
    """
    events = [json.loads(m.payload) for m in list(sub.messages)
              if m.topic.endswith("/events") and not (first_copies and m.dup)]
    return [(e["event_id"], e["type"], e["seq"]) for e in events]


def tally(sent: list[Key], received: list[Key]) -> dict[str, int]:
    """sent / received / duplicates / lost, as every fault test reports them."""
    copies = Counter(received)
    return {
        "sent": len(sent),
        "received": len(received),
        "duplicates": sum(n - 1 for n in copies.values()),
        "lost": len(set(sent) - set(received)),
    }
