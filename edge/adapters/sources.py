"""Camera sources: frames with timestamps from V4L2, RTSP, HTTP MJPEG or a file, that never give up.

Cameras fail in ways a read loop does not notice by itself: an RTSP read on a dead network blocks
for about 30 s and then still reports success, a USB camera waits 10 s per missing frame, a stream
keeps delivering the same frame. So timeouts are passed to OpenCV when the capture is created (the
FFMPEG backend ignores them when set later), a watchdog treats a stream whose frames stop advancing
as lost, and a lost source is reopened forever with exponential backoff, waiting on the stop event
so shutdown is never delayed by a backoff.

Timestamps: a file's frames carry their position in the file (plus the length of earlier passes
when looping) and a wall time of "when playback started + position", so a file replayed fast gives
the same events as one played in real time. Read faster than real time (``realtime = false``:
``run --fast``, ``demo``, ``replay``), the file is anchored so that its last frame is at the moment
reading started (as if it had just been recorded), and a wall time is never later than the clock
(a looped or unmeasured file is clamped to now): no event time lies in the future. A live frame
carries ``time.monotonic()`` and the UTC time it was read.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2

from edge.core.config import CameraConfig, parse_source
from edge.core.values import Frame, OfflineReason, SourceState

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# The V4L2 backend has no per-capture read timeout; it reads this (seconds) once per process, at the
# first read of any V4L2 camera (see ``set_v4l2_select_timeout``).
V4L2_SELECT_TIMEOUT_ENV = "OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT"
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
HEALTHY_S = 30.0  # a source that delivered frames this long starts its next backoff from the beginning
HEARTBEAT_SLICE_S = 1.0  # backoff waits are cut into slices this long so the heartbeat keeps moving
DEFAULT_FPS = 25.0
V4L2_RETRY_S = 0.1  # pause between V4L2 reads that failed before the camera's own read timeout
# A file played in real time that falls this far behind (a slow consumer) restarts its pacing clock
# instead of rushing through the backlog.
MAX_PACING_LAG_S = 1.0

StateCallback = Callable[[SourceState], None]


class SourceError(Exception):
    """A source that cannot be opened or read; the message is one line naming the camera and the fix."""


def redact(source: str | int) -> str:
    """The source for logs and messages, with any password in a URL replaced by ***."""
    text = str(source)
    parts = urlsplit(text)
    if parts.password is None:
        return text
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _use_rtsp_over_tcp() -> None:
    """Ask FFMPEG for RTSP over TCP (UDP loses packets, and so whole frames, on busy store networks).

    FFMPEG reads the option from the environment when a capture is created; an operator's own
    options are kept, and an explicit ``rtsp_transport`` of theirs wins.
    """
    current = os.environ.get(FFMPEG_OPTIONS_ENV, "")
    if "rtsp_transport" not in current:
        os.environ[FFMPEG_OPTIONS_ENV] = "|".join(p for p in ("rtsp_transport;tcp", current) if p)


def set_v4l2_select_timeout(cameras: Iterable[CameraConfig]) -> None:
    """Give OpenCV's process-wide V4L2 wait the shortest read timeout of the V4L2 cameras.

    OpenCV reads it once, at the first V4L2 read of the process, so it cannot be set per capture;
    a camera with a longer ``read_timeout_s`` reads again until its own timeout has passed (see
    ``CameraSource``), which makes the timeout per camera. Call it before any V4L2 camera is read.
    """
    timeouts = [c.read_timeout_s for c in cameras if c.resolved_kind() == "v4l2"]
    if timeouts:
        os.environ[V4L2_SELECT_TIMEOUT_ENV] = str(max(1, math.ceil(min(timeouts))))


def open_capture(camera: CameraConfig) -> cv2.VideoCapture:
    """An opened capture for the camera, with its timeouts in force; raises SourceError."""
    kind = camera.resolved_kind()
    if kind == "v4l2":
        # The V4L2 backend refuses capture parameters it does not know, and it knows no timeouts.
        capture = cv2.VideoCapture(parse_source(camera.source), cv2.CAP_V4L2)
        hint = "check the device exists, the service user is in the 'video' group and no other program holds it"
    else:
        if kind == "file":
            _refuse_what_is_not_a_file(camera)
        if kind == "rtsp":
            _use_rtsp_over_tcp()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(camera.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(camera.read_timeout_s * 1000),
        ]
        capture = cv2.VideoCapture(str(camera.source), cv2.CAP_FFMPEG, params)
        if kind == "file":
            exists = Path(str(camera.source)).is_file()
            hint = "it is not a video OpenCV can decode" if exists else "no such file; check the path"
        else:
            hint = f"check the URL, the credentials and that the camera answers within {camera.open_timeout_s:g}s"
    if not capture.isOpened():
        capture.release()
        raise SourceError(f"camera {camera.id}: cannot open {kind} source {redact(camera.source)}: {hint}")
    return capture


def _refuse_what_is_not_a_file(camera: CameraConfig) -> None:
    """A directory or a device given as a video file gets its own reason, not "no such file"."""
    path = Path(str(camera.source))
    if not path.exists() or path.is_file():
        return
    if path.is_dir():
        what = "is a directory; give the path of a video file in it"
    elif path.is_char_device() or path.is_block_device():
        what = 'is a device, not a video file; for a camera use its /dev/videoN path or set kind = "v4l2"'
    else:
        return  # a named pipe another program writes video into is a source like a file
    raise SourceError(f"camera {camera.id}: cannot open file source {redact(camera.source)}: it {what}")


def read_one(camera: CameraConfig, timeout: float) -> Frame:
    """One usable frame from the camera within about ``timeout`` seconds (for ``check``); raises SourceError."""
    limited = camera.model_copy(
        update={
            "open_timeout_s": min(camera.open_timeout_s, timeout),
            "read_timeout_s": min(camera.read_timeout_s, timeout),
        }
    )
    capture = open_capture(limited)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok, image = capture.read()
            if not ok:
                break
            if image is not None and image.size:
                return Frame(image, time.monotonic(), datetime.now(timezone.utc))
        raise SourceError(
            f"camera {camera.id}: opened {redact(camera.source)} but got no usable frame within {timeout:g}s; "
            "check the stream is running"
        )
    finally:
        capture.release()


class StallWatch:
    """Notices a stream that keeps answering but stops moving.

    A read that succeeds is progress only if the stream position moved; positions that never move
    at all (some backends report none) are not held against a stream, but once they have moved,
    a position that stays put means the same frame is being handed out again.
    """

    def __init__(self, timeout_s: float, now: float) -> None:
        self.timeout_s = timeout_s
        self._last_progress = now
        self._last_pos: float | None = None
        self._moves = False

    def fresh(self, pos: float) -> bool:
        """Whether a frame at stream position ``pos`` (ms) is new."""
        previous, self._last_pos = self._last_pos, pos
        if previous is None or pos != previous:
            self._moves = self._moves or previous is not None
            return True
        return not self._moves

    def progress(self, now: float) -> None:
        self._last_progress = now

    def stalled(self, now: float) -> bool:
        return now - self._last_progress > self.timeout_s


class _End:
    """Why a pass over an opened capture stopped without a failure."""


END_OF_FILE = _End()
LOOP = _End()


class CameraSource:
    """One camera's frames, forever: opens, reads, watches for stalls, reopens with backoff.

    ``heartbeat`` is the monotonic time of the last sign of life of the read loop (a frame, a
    failed read, a slice of a backoff wait); the daemon's watchdog compares it with the clock.
    """

    def __init__(
        self,
        camera: CameraConfig,
        on_state: StateCallback | None = None,
        *,
        backoff_start_s: float = BACKOFF_START_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        healthy_s: float = HEALTHY_S,
    ) -> None:
        self.camera = camera
        self.kind = camera.resolved_kind()
        self.on_state = on_state
        self.backoff_start_s = backoff_start_s
        self.backoff_max_s = backoff_max_s
        self.healthy_s = healthy_s
        self.reconnects = 0
        self.stalls = 0
        self.bad_frames = 0
        self.stale_frames = 0
        self.online = False
        self.state = SourceState(False, "not started")
        self.heartbeat = time.monotonic()
        self._reported: SourceState | None = None
        self._file_start: datetime | None = None
        self._file_offset = 0.0  # stream time at which the current pass over a looped file starts
        self._streaming_since: float | None = None  # first frame of the current pass (monotonic)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Frames until ``stop`` is set (or a non-looped file ends); source failures are retried, never raised."""
        backoff = self.backoff_start_s
        try:
            while not stop.is_set():
                self._beat()
                outcome: _End | str
                self._streaming_since = None
                try:
                    capture = open_capture(self.camera)
                except SourceError as exc:
                    outcome = str(exc)
                else:
                    try:
                        outcome = yield from self._read(capture, stop)
                    finally:
                        capture.release()
                if outcome is END_OF_FILE:
                    self._set_state(SourceState.offline(OfflineReason.END_OF_FILE))
                    return
                if outcome is LOOP:
                    continue
                if stop.is_set():
                    return
                assert isinstance(outcome, str)
                self._set_state(SourceState.offline(OfflineReason.LOST, outcome))
                since = self._streaming_since
                if since is not None and time.monotonic() - since >= self.healthy_s:
                    backoff = self.backoff_start_s
                if self._wait(stop, backoff):
                    return
                backoff = min(backoff * 2, self.backoff_max_s)
                self.reconnects += 1
        finally:
            if self.online:
                self._set_state(SourceState.offline(OfflineReason.STOPPED))

    def _read(self, capture: cv2.VideoCapture, stop: threading.Event) -> Iterator[Frame]:
        """Frames from one opened capture; returns END_OF_FILE, LOOP or the reason the source was lost."""
        camera = self.camera
        is_file = self.kind == "file"
        fps = capture.get(cv2.CAP_PROP_FPS)
        period = 1.0 / fps if 0 < fps < 1000 else 1.0 / DEFAULT_FPS
        if is_file and self._file_start is None:
            self._file_start = datetime.now(timezone.utc)
            if not camera.realtime:
                # Read faster than real time, "start + position" would run ahead of the clock: anchor
                # the file so that its last frame falls on the moment reading started instead.
                count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
                if 0 < count < 1e9:
                    self._file_start -= timedelta(seconds=count * period)
        watch = StallWatch(camera.stall_timeout_s, time.monotonic())
        pacing: tuple[float, float] | None = None  # (monotonic, ts) the real-time clock is anchored at
        last_ts: float | None = None
        delivered = 0
        last_read = time.monotonic()
        while not stop.is_set():
            self._beat()
            ok, image = capture.read()
            now = time.monotonic()
            if ok:
                last_read = now
            elif self.kind == "v4l2" and now - last_read < camera.read_timeout_s:
                # OpenCV's V4L2 wait is the shortest camera's (set_v4l2_select_timeout); wait out our own.
                if stop.wait(V4L2_RETRY_S):
                    return "stopped"
                continue
            if not ok:
                if not is_file:
                    return f"read failed: no frame within {camera.read_timeout_s:g}s or the stream closed"
                if delivered == 0:
                    return "the file has no decodable frames"
                if not camera.loop:
                    return END_OF_FILE
                self._file_offset = (last_ts if last_ts is not None else self._file_offset) + period
                return LOOP
            pos = capture.get(cv2.CAP_PROP_POS_MSEC)
            if image is None or image.size == 0:
                self.bad_frames += 1
            elif not is_file and not watch.fresh(pos):
                self.stale_frames += 1
            else:
                watch.progress(now)
                if is_file:
                    ts = self._file_offset + pos / 1000.0
                    if last_ts is not None and not ts > last_ts:  # a file with broken timestamps
                        ts = last_ts + period
                    assert self._file_start is not None
                    wall = self._file_start + timedelta(seconds=ts)
                    if not camera.realtime:  # a looped file, or one whose length is unknown: never ahead
                        wall = min(wall, datetime.now(timezone.utc))
                    if camera.realtime:
                        if pacing is None or now - (pacing[0] + ts - pacing[1]) > MAX_PACING_LAG_S:
                            pacing = (now, ts)
                        elif stop.wait(max(0.0, pacing[0] + ts - pacing[1] - now)):
                            return "stopped"
                else:
                    ts, wall = now, datetime.now(timezone.utc)
                last_ts = ts
                if delivered == 0:
                    self._streaming_since = now
                delivered += 1
                self._set_state(SourceState.streaming())
                yield Frame(image, ts, wall)
                continue
            if watch.stalled(now):
                self.stalls += 1
                return f"stalled: no new frame for {camera.stall_timeout_s:g}s"
        return "stopped"

    def _set_state(self, state: SourceState) -> None:
        self.online = state.online
        self.state = state
        if self._reported == state:
            return
        self._reported = state
        log.log(
            logging.WARNING if state.reason is OfflineReason.LOST else logging.INFO,
            "camera %s %s: %s",
            self.camera.id,
            "online" if state.online else "offline",
            state.text,
        )
        if self.on_state is not None:
            self.on_state(state)

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()

    def _wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` or until stop; True when stopped."""
        deadline = time.monotonic() + seconds
        while True:
            self._beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if stop.wait(min(left, HEARTBEAT_SLICE_S)):
                return True
