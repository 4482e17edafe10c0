"""Structured log lines (logfmt) on stderr: one line per record, greppable and parseable.

Values are quoted only when they need it; ``extra={"fields": {...}}`` adds key=value pairs to a line,
which is how the daemon logs one line per event. Secrets never reach here: no code path logs the
password or key, and the secret-leak test checks every output of a full run.
"""

from __future__ import annotations

import logging
import os
import sys
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


def quiet_native_logs() -> None:
    """Keep FFmpeg's and OpenCV's own messages off stderr, where only logfmt lines belong.

    A damaged MP4 makes FFmpeg print thousands of lines a second and junk MJPEG parts thousands a
    minute, none of them logfmt; the daemon reports what matters (a source that cannot be read, a
    frame that failed to decode) itself, once, through its logger. Called once per command before
    the first capture opens, which is when OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL``.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    import cv2

    set_log_level = getattr(cv2, "setLogLevel", None) or cv2.utils.logging.setLogLevel  # OpenCV 4 / 5
    set_log_level(0)  # LOG_LEVEL_SILENT
