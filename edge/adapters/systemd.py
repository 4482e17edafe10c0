"""sd_notify without a dependency: READY, WATCHDOG, STOPPING and STATUS over $NOTIFY_SOCKET.

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, so the daemon code never asks
whether it runs under systemd. Errors sending a notification are swallowed: a missed message must
not stop event processing; systemd will restart us if the watchdog really starves.
"""

from __future__ import annotations

import os
import socket


def _send(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def ready() -> bool:
    return _send("READY=1")


def watchdog() -> bool:
    return _send("WATCHDOG=1")


def stopping() -> bool:
    return _send("STOPPING=1")


def status(text: str) -> bool:
    return _send("STATUS=" + text.replace("\n", " "))


def watchdog_interval() -> float | None:
    """Seconds between pings (half of ``WatchdogSec=``), or None when systemd does not watch us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
