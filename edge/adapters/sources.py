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

Decoding only what is used: a source given ``wanted`` (the sampler) grabs every frame, which
decodes it (H.264 and MPEG-4 frames depend on each other), but converts it to a BGR image
(``retrieve``) only when the sampler could take it; the others are offered with no pixels, so the
sampler still sees every timestamp and picks exactly the frames it picked before, or, when the
sampler passes over them, are not delivered at all (the next frame counts them). Whether a frame
can be taken depends on the timestamp of the frame after it, so a file's next timestamp is read
ahead from its packets (``_Positions``, no decoding); a live H.264 stream's next frame has not
arrived yet, so its frames are all converted and delivered. An HTTP MJPEG camera is read as JPEG
packets (OpenCV's raw mode) and only the JPEGs the sampler takes are decoded, by the pipeline, at
the smallest size the model and snapshots allow.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

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
# Decoder threads when ``decoder_threads`` is not set: one up to 720p (a thread of its own costs CPU in
# hand-offs and buys nothing a camera's sub-stream needs), two above, which a Pi 4 needs for a 1080p
# main stream at 25 fps (docs/performance.md has the estimate).
AUTO_THREADS_MAX_PIXELS = 1280 * 720
AUTO_THREADS_LARGE = 2
# H.264 shows a frame at most 16 frames after its place in the file (its largest reorder buffer), so
# the next frame's position is among the next 16 packets read ahead.
REORDER_DEPTH = 16
# A file played in real time that falls this far behind (a slow consumer) restarts its pacing clock
# instead of rushing through the backlog.
MAX_PACING_LAG_S = 1.0

StateCallback = Callable[[SourceState], None]


class Wanted(Protocol):
    """What a source asks before it pays for a frame; ``edge.stages.sampler.Sampler`` answers."""

    def could_take(self, ts: float, next_ts: float | None) -> bool:
        """Whether the frame at ``ts`` (the next one at ``next_ts``, None when not known) needs its pixels."""
        ...

    def passes_over(self, ts: float, next_ts: float) -> bool:
        """Whether the frame at ``ts`` need not be delivered at all."""
        ...


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


def open_capture(camera: CameraConfig, *, packets: bool = False) -> cv2.VideoCapture:
    """An opened capture for the camera, with its timeouts and decoder threads in force; raises SourceError.

    ``packets`` opens an MJPEG camera in OpenCV's raw mode: each frame is its JPEG, undecoded.
    With ``decoder_threads`` unset, a stream larger than 720p is opened again with two threads
    (FFmpeg takes the thread count only when the decoder opens, and the size is known only after).
    """
    capture = _open(camera, packets, camera.decoder_threads or 1)
    if camera.decoder_threads is None and not packets and camera.resolved_kind() != "v4l2":
        pixels = capture.get(cv2.CAP_PROP_FRAME_WIDTH) * capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
        if pixels > AUTO_THREADS_MAX_PIXELS:
            capture.release()
            capture = _open(camera, packets, AUTO_THREADS_LARGE)
    return capture


def _open(camera: CameraConfig, packets: bool, threads: int) -> cv2.VideoCapture:
    """One attempt at opening, with everything FFmpeg must be told at open time (it ignores it later)."""
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
            *((cv2.CAP_PROP_FORMAT, -1) if packets else (cv2.CAP_PROP_N_THREADS, threads)),
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


class _Positions:
    """A file's frame positions (ms), read ahead from its packets without decoding them.

    Packets come in decoding order; the frames come out in presentation order, at most
    ``REORDER_DEPTH`` packets apart, so the next frame after a position is the smallest position
    still pending once that many are. Costs a second read of the file's bytes and no decoding.
    """

    def __init__(self, path: str) -> None:
        self._capture: cv2.VideoCapture | None = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
        self._pending: list[float] = []  # a heap
        if not self._capture.isOpened():
            self.close()

    def after(self, pos: float) -> float | None:
        """The position of the frame after the one at ``pos``; None at the end of the file (or unknown)."""
        pending = self._pending
        while True:
            while pending and pending[0] <= pos:
                heapq.heappop(pending)
            if self._capture is None or len(pending) >= REORDER_DEPTH:
                return pending[0] if pending else None
            if self._capture.grab():
                heapq.heappush(pending, self._capture.get(cv2.CAP_PROP_POS_MSEC))
            else:
                self.close()

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


_Pixels = tuple[np.ndarray | None, bytes | None]  # (BGR image, JPEG); both None: not converted


def _pixels(capture: cv2.VideoCapture, packets: bool, needed: bool) -> _Pixels | None:
    """The grabbed frame's pixels if ``needed`` (its JPEG, in raw mode); None when they are unusable.

    ``retrieve`` is the colour conversion of the frame ``grab`` decoded; skipping it is the saving.
    """
    if not needed:
        return None, None
    ok, data = capture.retrieve()
    if not ok or data is None or data.size == 0:
        return None
    return (None, data.tobytes()) if packets else (data, None)


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

    def frames(self, stop: threading.Event, wanted: Wanted | None = None) -> Iterator[Frame]:
        """Frames until ``stop`` is set (or a non-looped file ends); source failures are retried, never raised.

        With ``wanted``, a frame it declines comes without pixels, one it passes over does not come at all
        (the next frame's ``passed_over`` counts it) and an MJPEG camera's frames come as JPEGs
        (``Frame.encoded``); without it every frame is decoded (replay draws them all).
        """
        backoff = self.backoff_start_s
        try:
            while not stop.is_set():
                self._beat()
                outcome: _End | str
                self._streaming_since = None
                packets = wanted is not None and self.kind == "mjpeg"
                try:
                    capture = open_capture(self.camera, packets=packets)
                except SourceError as exc:
                    outcome = str(exc)
                else:
                    read_ahead = wanted is not None and self.kind == "file"
                    upcoming = _Positions(str(self.camera.source)) if read_ahead else None
                    try:
                        outcome = yield from self._read(capture, stop, wanted, upcoming, packets)
                    finally:
                        capture.release()
                        if upcoming is not None:
                            upcoming.close()
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

    def _read(
        self,
        capture: cv2.VideoCapture,
        stop: threading.Event,
        wanted: Wanted | None,
        upcoming: _Positions | None,
        packets: bool,
    ) -> Iterator[Frame]:
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
        expected: float | None = None  # where _Positions said this frame would be
        passed_over = 0  # frames since the last one delivered that the sampler passes over
        while not stop.is_set():
            self._beat()
            ok = capture.grab()
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
            if upcoming is not None and expected is not None and pos != expected:
                log.warning("camera %s: %s decodes frames its packets do not list; decoding every frame from here",
                            camera.id, redact(camera.source))
                upcoming.close()
                upcoming = None
            if not is_file and not watch.fresh(pos):
                self.stale_frames += 1
            else:
                ts = self._file_offset + pos / 1000.0 if is_file else now
                if is_file and last_ts is not None and not ts > last_ts:  # a file with broken timestamps
                    ts = last_ts + period
                next_ts = None
                if upcoming is not None:
                    expected = upcoming.after(pos)
                    if expected is not None:  # an upper bound: a later next frame is never wrongly skipped
                        next_ts = max(self._file_offset + expected / 1000.0, ts + period)
                        if wanted is not None and wanted.passes_over(ts, next_ts):
                            passed_over += 1  # delivered with the next frame, as a count
                            last_ts = ts
                            continue
                pixels = _pixels(capture, packets, packets or wanted is None or wanted.could_take(ts, next_ts))
                if pixels is None:
                    self.bad_frames += 1
                else:
                    watch.progress(now)
                    wall = self._wall(ts) if is_file else datetime.now(timezone.utc)
                    if is_file and camera.realtime:
                        if pacing is None or now - (pacing[0] + ts - pacing[1]) > MAX_PACING_LAG_S:
                            pacing = (now, ts)
                        elif stop.wait(max(0.0, pacing[0] + ts - pacing[1] - now)):
                            return "stopped"
                    last_ts = ts
                    if delivered == 0:
                        self._streaming_since = now
                    delivered += 1
                    self._set_state(SourceState.streaming())
                    image, encoded = pixels
                    yield Frame(image, ts, wall, encoded=encoded, passed_over=passed_over)
                    passed_over = 0
                    continue
            if watch.stalled(now):
                self.stalls += 1
                return f"stalled: no new frame for {camera.stall_timeout_s:g}s"
        return "stopped"

    def _wall(self, ts: float) -> datetime:
        """A file frame's wall time: playback start + position, and never ahead of the clock when read fast."""
        assert self._file_start is not None
        wall = self._file_start + timedelta(seconds=ts)
        if not self.camera.realtime:  # a looped file, or one whose length is unknown: never ahead
            wall = min(wall, datetime.now(timezone.utc))
        return wall

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
