"""Structured log lines (logfmt) on stderr: one line per record, greppable and parseable.

Values are quoted only when they need it; ``extra={"fields": {...}}`` adds key=value pairs to a line,
which is how the daemon logs one line per event. Secrets never reach here: no code path logs the
password or key, and the secret-leak test checks every output of a full run.
"""

from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import re
import select
import sys
import threading
import time
from typing import Any, TextIO


def _value(value: Any) -> str:
    text = str(value)
    if text == "" or any(ch in text for ch in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [f"ts={stamp}", f"level={record.levelname.lower()}", f"logger={record.name}",
                 f"msg={_value(record.getMessage())}"]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts += [f"{key}={_value(val)}" for key, val in fields.items()]
        if record.exc_info and record.levelno >= logging.ERROR:
            parts.append(f"exc={_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup(level: str = "info", stream: TextIO | None = None) -> None:
    """Route every logger to one logfmt handler on stderr (stdout carries event JSON lines)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho logs nothing unless given a logger; keep third parties at warning even in debug runs.
    for noisy in ("paho", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# FFmpeg's and OpenCV's own lines, at most NATIVE_BURST per library per NATIVE_WINDOW_S; the rest are
# counted and said in one summary line per window. A damaged MP4 makes FFmpeg complain per frame (hundreds
# of lines a second) and junk MJPEG parts thousands a minute, which would bury the daemon's own lines.
NATIVE_BURST = 20
NATIVE_WINDOW_S = 60.0
_FFMPEG_PREFIX = re.compile(r"^\[(\w+) @ 0x[0-9a-fA-F]+\]\s*")  # "[h264 @ 0x55d0...] "
_OPENCV_PREFIX = re.compile(r"^\[\s*(INFO|WARN|ERROR|FATAL|DEBUG|VERBOSE)\s*:[^\]]*\]\s*")  # "[ WARN:0@0.02] "
_OPENCV_LEVELS = {"FATAL": logging.ERROR, "ERROR": logging.ERROR, "WARN": logging.WARNING}


class _Limiter:
    """Lets NATIVE_BURST lines through per window and counts the rest, for one summary line per window."""

    def __init__(self, burst: int, window_s: float) -> None:
        self.burst, self.window_s = burst, window_s
        self.started = 0.0
        self.passed = 0
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if now - self.started >= self.window_s:
            self.started, self.passed = now, 0
        if self.passed < self.burst:
            self.passed += 1
            return True
        self.suppressed += 1
        return False

    def due(self, now: float, final: bool) -> int:
        """Lines suppressed in a window that has ended (or, ``final``, so far); resets the count."""
        if not self.suppressed or not (final or now - self.started >= self.window_s):
            return 0
        count, self.suppressed = self.suppressed, 0
        return count


class NativeLogs:
    """File descriptor 2 as a pipe whose lines go through the logger: FFmpeg and OpenCV write there from C.

    Python's own stderr (``sys.stderr``: the logfmt handler, usage errors, tracebacks) moves to a duplicate
    of the original descriptor, so only those libraries' lines pass through the pipe. Each becomes one
    logfmt record of logger ``ffmpeg`` or ``opencv`` at warning (an OpenCV ERROR line at error), with the
    pointer FFmpeg prints ("@ 0x...") dropped and any URL password redacted, rate-limited per library.
    """

    def __init__(self, burst: int = NATIVE_BURST, window_s: float = NATIVE_WINDOW_S) -> None:
        self.burst, self.window_s = burst, window_s
        self._limits = {name: _Limiter(burst, window_s) for name in ("ffmpeg", "opencv")}
        self._saved: int | None = None
        self._thread: threading.Thread | None = None
        self._read_fd = -1

    def start(self) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sys.stderr = open(os.dup(self._saved), "w", buffering=1, encoding="utf-8",  # noqa: SIM115 (lives as long as the process)
                          errors="backslashreplace", closefd=True)
        # A crash's Python traceback must not wait in a pipe whose reader dies with the process.
        faulthandler.enable(file=sys.stderr)
        self._thread = threading.Thread(target=self._read, name="native-logs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Give fd 2 back (the pipe's last writer closes, so the reader sees its end) and say what is left."""
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._saved = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _read(self) -> None:
        pending = b""
        while True:
            ready, _, _ = select.select([self._read_fd], [], [], self.window_s / 4)
            now = time.monotonic()
            if ready:
                chunk = os.read(self._read_fd, 65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
                for line in lines:
                    self.line(line.decode("utf-8", "replace"), now)
            self._summaries(now, final=False)
        if pending:
            self.line(pending.decode("utf-8", "replace"), time.monotonic())
        os.close(self._read_fd)
        self._summaries(time.monotonic(), final=True)

    def line(self, text: str, now: float) -> None:
        """Log one line a library wrote, unless its library is over its rate."""
        from edge.core.config import redact_secrets

        text = text.strip()
        if not text:
            return
        if text.startswith("ts="):  # a logfmt line of ours through a handler set up before the pipe: pass it on
            print(text, file=sys.stderr)
            return
        name, level = "ffmpeg", logging.WARNING
        opencv = _OPENCV_PREFIX.match(text)
        if opencv:
            name, level = "opencv", _OPENCV_LEVELS.get(opencv.group(1), logging.INFO)
            text = text[opencv.end():]
        else:
            text = _FFMPEG_PREFIX.sub(lambda m: f"[{m.group(1)}] ", text)
        if self._limits[name].allow(now):
            logging.getLogger(name).log(level, redact_secrets(text))

    def _summaries(self, now: float, final: bool) -> None:
        for name, limit in self._limits.items():
            count = limit.due(now, final)
            if count:
                logging.getLogger(name).warning(
                    f"{count} more {name} line(s) not logged (at most {self.burst} per {self.window_s:g} s)",
                    extra={"fields": {"suppressed": count}})


_native: NativeLogs | None = None


def route_native_logs() -> NativeLogs:
    """Send FFmpeg's and OpenCV's messages through the logger, once per process (see ``NativeLogs``).

    OpenCV's FFmpeg backend installs its own callback, which prints to *stdout*, when
    ``OPENCV_FFMPEG_LOGLEVEL`` or ``OPENCV_FFMPEG_DEBUG`` is set; stdout carries event JSON lines, so both
    are removed and FFmpeg keeps OpenCV's default (errors only, FFmpeg's own callback, on fd 2). OpenCV's
    own log stays at warnings. Called before the first capture opens, which is when both are read.
    """
    global _native
    if _native is None:
        for name in ("OPENCV_FFMPEG_LOGLEVEL", "OPENCV_FFMPEG_DEBUG"):
            os.environ.pop(name, None)
        os.environ.setdefault("OPENCV_LOG_LEVEL", "WARNING")
        import cv2

        set_log_level = getattr(cv2, "setLogLevel", None) or cv2.utils.logging.setLogLevel  # OpenCV 4 / 5
        set_log_level(3)  # LOG_LEVEL_WARNING, should cv2 have been imported before the variable was set
        _native = NativeLogs()
        _native.start()
        atexit.register(_native.stop)
    return _native
