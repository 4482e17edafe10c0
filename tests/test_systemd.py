"""sd_notify against a real AF_UNIX datagram socket, path-based and abstract."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from edge.adapters import systemd


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


@pytest.mark.parametrize("abstract", [False, True])
def test_notifications_arrive_on_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool) -> None:
    if abstract:
        name = f"rclstm-test-{os.getpid()}"
        sock = _receiver("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    else:
        path = str(tmp_path / "notify.sock")
        sock = _receiver(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
    with sock:
        assert systemd.ready() and systemd.watchdog() and systemd.status("2 cameras\nok") and systemd.stopping()
        received = [sock.recv(4096).decode() for _ in range(4)]
    assert received == ["READY=1", "WATCHDOG=1", "STATUS=2 cameras ok", "STOPPING=1"]


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert systemd.watchdog() is False  # a vanished socket is swallowed, never raised


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert systemd.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None  # meant for another process
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "garbage")
    assert systemd.watchdog_interval() is None
