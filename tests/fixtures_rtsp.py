"""RTSP camera fixtures: a real gst-rtsp-server on a free loopback port that a test can kill or freeze.

The server runs as a subprocess of the system Python (see ``tests/rtsp_server.py``), so killing it
drops the TCP connection like a camera losing power, and SIGSTOP leaves the connection open with no
data, like a camera whose encoder hung: the two ways RTSP cameras fail in the field.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed.broker import free_port

SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = os.environ.get("RCLSTM_GI_PYTHON", "/usr/bin/python3")
INSTALL_HINT = ("apt-get install -y gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base "
                "gstreamer1.0-plugins-ugly gstreamer1.0-rtsp (.ci/run does)")


@dataclass
class RtspServer:
    """One RTSP camera at ``url``; ``start`` again after ``kill`` serves on the same port."""

    port: int
    proc: subprocess.Popen[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None, "server already running"
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # READY once it listens, or EOF when it failed
        if not line.startswith("READY"):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.wait(timeout)
            self.proc = None
            pytest.fail(f"RTSP server did not start ({err.strip()[-500:]}); {INSTALL_HINT}")

    def kill(self) -> None:
        """Power cut: SIGKILL, so the server's sockets close without an RTSP TEARDOWN."""
        if self.proc is None:
            return
        self.thaw()
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, no data flows."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    """A started RTSP camera (H.264 test pattern at 25 fps); killed at teardown."""
    server = RtspServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


def wait_until(predicate: Callable[[], object], timeout: float, step: float = 0.1) -> bool:
    """Poll ``predicate()`` until it holds; False on timeout so the caller asserts with context."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
