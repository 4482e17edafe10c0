"""Sources on real video files and a real HTTP MJPEG server: decoding, loops, truncation, loss and reconnects."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.adapters.sources import (
    FFMPEG_OPTIONS_ENV,
    V4L2_SELECT_TIMEOUT_ENV,
    CameraSource,
    SourceError,
    StallWatch,
    open_capture,
    read_one,
    redact,
    set_v4l2_select_timeout,
)
from edge.core.config import CameraConfig
from edge.core.values import Frame, OfflineReason, SourceState
from edge.preprocess import decode_jpeg, jpeg_size
from edge.stages.sampler import Sampler
from edge.synthetic import render_clip
from edge.synthetic import write_video as write_clip
from testbed.mjpeg import BOUNDARY, jpeg_part
from tests.media import read_frames, retime_mp4

SIZE = (64, 48)  # width, height


def write_video(path: Path, n: int, fps: float, fourcc: str = "mp4v") -> Path:
    """Frame i is a flat image of brightness 8*i, so a decoded frame says which one it was."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, SIZE)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((SIZE[1], SIZE[0], 3), (8 * i) % 256, np.uint8))
    writer.release()
    return path


def index_of(frame: Frame) -> int:
    return round(float(frame.image.mean()) / 8)


class States:
    """Records on_state calls; optionally stops the stream when a condition is met."""

    def __init__(self, stop: threading.Event | None = None, until: int | None = None) -> None:
        self.calls: list[tuple[bool, str]] = []
        self.reasons: list[OfflineReason | None] = []
        self.stop, self.until = stop, until

    def __call__(self, state: SourceState) -> None:
        self.calls.append((state.online, state.text))
        self.reasons.append(state.reason)
        if self.stop is not None and self.until is not None and len(self.calls) >= self.until:
            self.stop.set()


def collect(source: CameraSource, stop: threading.Event, limit: int) -> list[Frame]:
    return collect_frames(source.frames(stop), stop, limit)


def collect_frames(frames: Iterator[Frame], stop: threading.Event, limit: int) -> list[Frame]:
    collected = []
    for frame in frames:
        collected.append(frame)
        if len(collected) >= limit:
            stop.set()
    return collected


def test_file_is_decoded_with_its_own_timestamps_and_ends(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", 30, 10.0)
    states = States()
    source = CameraSource(CameraConfig(id="door", source=str(video), realtime=False), states)
    frames = list(source.frames(threading.Event()))
    assert [index_of(f) for f in frames] == list(range(30))
    assert [f.ts for f in frames] == pytest.approx([i * 0.1 for i in range(30)])
    start = frames[0].wall
    assert start.tzinfo is not None and start.utcoffset() == timedelta(0)
    assert all(f.wall == start + timedelta(seconds=f.ts) for f in frames)
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert states.calls == [(True, "streaming"), (False, "end of file")]
    assert states.reasons == [None, OfflineReason.END_OF_FILE]
    assert (len(frames), source.reconnects, source.stalls, source.bad_frames) == (30, 0, 0, 0)


def test_realtime_file_delivers_every_frame(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 8, 50.0, "MJPG")
    frames = list(CameraSource(CameraConfig(id="door", source=str(video))).frames(threading.Event()))
    assert [index_of(f) for f in frames] == list(range(8))


def test_looped_file_keeps_timestamps_increasing_until_stopped(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 10, 10.0, "MJPG")
    stop = threading.Event()
    states = States()
    source = CameraSource(CameraConfig(id="door", source=str(video), realtime=False, loop=True), states)
    frames = collect(source, stop, 25)
    assert [index_of(f) for f in frames] == [i % 10 for i in range(25)]
    # One period between passes, as if the file were one endless stream.
    assert [f.ts for f in frames] == pytest.approx([i * 0.1 for i in range(25)])
    assert states.calls == [(True, "streaming"), (False, "stopped")]
    assert states.reasons == [None, OfflineReason.STOPPED]
    assert source.reconnects == 0


def test_truncated_file_yields_what_it_can_and_ends(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", 40, 10.0, "MJPG")
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # cut mid-stream, through a frame and without the index
    frames = list(CameraSource(CameraConfig(id="door", source=str(video), realtime=False)).frames(threading.Event()))
    assert 5 < len(frames) < 40
    assert [index_of(f) for f in frames] == list(range(len(frames)))


def test_unopenable_file_is_retried_with_backoff_until_stopped(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))  # an mp4 header and nothing usable
    stop = threading.Event()
    states = States()
    source = CameraSource(CameraConfig(id="door", source=str(video), realtime=False), states, backoff_start_s=0.01)

    def stop_after_retries() -> None:
        while source.reconnects < 3 and not stop.wait(0.01):
            pass
        stop.set()

    stopper = threading.Thread(target=stop_after_retries)
    stopper.start()
    assert list(source.frames(stop)) == []
    stopper.join()
    assert source.reconnects >= 3
    # Repeated identical failures are reported once, not once per attempt.
    assert len(states.calls) == 1
    online, reason = states.calls[0]
    assert not online and "cannot open file source" in reason and "\n" not in reason


def test_stop_during_a_long_backoff_returns_and_heartbeat_moves(tmp_path: Path) -> None:
    stop = threading.Event()
    source = CameraSource(CameraConfig(id="door", source=str(tmp_path / "missing.mp4")), backoff_start_s=3600.0)
    done = threading.Event()

    def run() -> None:
        list(source.frames(stop))
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    while source.state.text == "not started":
        assert not done.wait(0.01)
    waiting_since = source.heartbeat
    while source.heartbeat == waiting_since:  # the backoff wait keeps beating for the daemon's watchdog
        assert not done.wait(0.05)
    stop.set()
    worker.join(timeout=30)
    assert done.is_set(), "frames() did not return after stop during a backoff wait"
    assert source.state.text.startswith("camera door: cannot open file source")
    assert source.state.reason is OfflineReason.LOST


def test_missing_file_error_names_the_camera_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^camera door: cannot open file source .*missing.mp4: no such file"):
        open_capture(CameraConfig(id="door", source=str(tmp_path / "missing.mp4")))
    garbage = tmp_path / "notes.mp4"
    garbage.write_text("not a video")
    with pytest.raises(SourceError, match="not a video OpenCV can decode"):
        read_one(CameraConfig(id="door", source=str(garbage)), timeout=2.0)


@pytest.mark.parametrize(("size", "setting", "threads"), [((640, 360), None, 1), ((1280, 736), None, 2),
                                                       ((1280, 736), 1, 1), ((640, 360), 3, 3)])
def test_decoder_threads_are_one_up_to_720p_two_above_unless_set(tmp_path: Path, size: tuple[int, int],
                                                                  setting: int | None, threads: int) -> None:
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    for _ in range(3):
        writer.write(np.zeros((size[1], size[0], 3), np.uint8))
    writer.release()
    capture = open_capture(CameraConfig(id="door", source=str(video), decoder_threads=setting))
    try:
        assert capture.get(cv2.CAP_PROP_N_THREADS) == threads
        assert capture.read()[1].shape == (size[1], size[0], 3)
    finally:
        capture.release()


def test_read_one_returns_a_usable_frame(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", 5, 10.0)
    frame = read_one(CameraConfig(id="door", source=str(video)), timeout=5.0)
    assert frame.image.shape == (48, 64, 3) and index_of(frame) == 0


# --- decoding only what the sampler may take -----------------------------------------------------------


def variable_rate_h264(path: Path) -> Path:
    """A real variable-frame-rate H.264 file with B-frames (packets out of presentation order): GStreamer's
    x264 encoder fed a 25 fps scene with 40 % of its frames dropped at random, keeping their timestamps."""
    if shutil.which("gst-launch-1.0") is None:
        pytest.skip("needs GStreamer (gstreamer1.0-tools, -plugins-ugly for x264enc; .ci/run installs them)")
    subprocess.run(["gst-launch-1.0", "-q", "videotestsrc", "num-buffers=300", "pattern=ball", "!",
                    "video/x-raw,width=320,height=240,framerate=25/1", "!", "identity", "drop-probability=0.4", "!",
                    "x264enc", "bframes=2", "!", "mp4mux", "!", "filesink", f"location={path}"],
                   check=True, timeout=120)
    return path


def variable_rate_mpeg4(path: Path) -> Path:
    """Generated scenes in MPEG-4 part 2, re-timed so frames last 1, 2 or 3 periods: a real VFR file."""
    rng = np.random.default_rng(5)
    write_clip(path, render_clip("calm", 60, 160, 120, rng) + render_clip("fight", 60, 160, 120, rng), 25.0)
    return retime_mp4(path, [1, 1, 2, 1, 3, 1, 1])


def sampled(camera: CameraConfig, interval: float, only_used: bool) -> tuple[list[tuple[float, str]], int, int, int]:
    """(timestamp and pixel digest of each sampled frame, frames read, frames delivered, frames converted)."""
    sampler = Sampler(interval)
    picks, read, delivered, converted = [], 0, 0, 0
    for frame in CameraSource(camera).frames(threading.Event(), sampler if only_used else None):
        read += 1 + frame.passed_over
        delivered += 1
        converted += frame.image is not None
        pick = sampler.offer(frame)
        if pick is not None:
            assert pick.image is not None, f"the frame at {pick.ts}s was sampled but not converted"
            picks.append((pick.ts, hashlib.sha256(pick.image.tobytes()).hexdigest()))
    return picks, read, delivered, converted


def test_a_looped_file_read_for_the_sampler_samples_the_same_frames_on_every_pass(tmp_path: Path) -> None:
    video = variable_rate_mpeg4(tmp_path / "vfr.mp4")
    camera = CameraConfig(id="door", source=str(video), realtime=False, loop=True)
    picks = []
    for only_used in (False, True):
        sampler, stop = Sampler(0.1), threading.Event()
        read, taken = 0, []
        for frame in CameraSource(camera).frames(stop, sampler if only_used else None):
            read += 1 + frame.passed_over  # frames the sampler passes over come as a count
            if read > 250:  # two passes and a bit
                break
            taken.append(sampler.offer(frame))
        picks.append([(f.ts, hashlib.sha256(f.image.tobytes()).hexdigest()) for f in taken
                      if f is not None and f.image is not None])
        assert sum(f is not None for f in taken) == len(picks[-1])
    assert picks[0] == picks[1]
    assert 2 * len(read_frames(video)[0]) < 250  # more than two passes: the read-ahead restarts with each


@pytest.mark.parametrize("make", [variable_rate_h264, variable_rate_mpeg4, None])
@pytest.mark.parametrize("interval", [0.1, 0.13])
def test_decoding_only_frames_the_sampler_may_take_samples_the_same_frames(tmp_path: Path, make, interval) -> None:
    video = make(tmp_path / "vfr.mp4") if make else write_video(tmp_path / "cfr.avi", 90, 25.0, "MJPG")
    camera = CameraConfig(id="door", source=str(video), realtime=False)
    every, read, delivered, converted = sampled(camera, interval, only_used=False)
    assert converted == delivered == read
    used, read_again, delivered_used, converted_used = sampled(camera, interval, only_used=True)
    assert used == every and read_again == read
    assert len(every) <= converted_used < read * 0.75, (len(every), converted_used, read)
    assert converted_used <= delivered_used <= read  # frames the sampler passes over are not delivered


def test_a_camera_much_faster_than_the_sampling_delivers_the_frames_around_each_target(tmp_path: Path) -> None:
    """At 25 fps sampled every 0.25 s, the frames the sampler passes over (both it and the next one before
    the target) are not delivered but counted, and the same frames are sampled as when every frame is."""
    video = write_video(tmp_path / "cfr.mp4", 100, 25.0)
    camera = CameraConfig(id="door", source=str(video), realtime=False)
    every, read, _, _ = sampled(camera, 0.25, only_used=False)
    used, read_again, delivered, converted = sampled(camera, 0.25, only_used=True)
    assert used == every and read_again == read == 100
    assert len(every) <= converted <= delivered <= 3 * len(every) < read / 2, (len(every), converted, delivered, read)


# --- HTTP MJPEG -------------------------------------------------------------------------------------


class MjpegServer:
    """A real multipart/x-mixed-replace server; ``mode`` says how each connection ends."""

    def __init__(self, mode: str, frames_per_connection: int = 6) -> None:
        self.mode = mode
        self.frames_per_connection = frames_per_connection
        self.connections = itertools.count()
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                connection = next(server.connections)
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                for i in range(server.frames_per_connection):
                    # Brightness says which connection the frame came from.
                    image = np.full((SIZE[1], SIZE[0], 3), 40 * connection + i, np.uint8)
                    part = jpeg_part(cv2.imencode(".jpg", image)[1].tobytes())
                    if server.mode == "close-mid-frame" and i == server.frames_per_connection - 1:
                        self.wfile.write(part[: len(part) // 2])
                        self.wfile.flush()
                        return  # the connection closes in the middle of a JPEG
                    self.wfile.write(part)
                    self.wfile.flush()
                    if server.release.wait(0.02):
                        return
                if server.mode == "hang":
                    server.release.wait(60)  # connection open, nothing sent: a stalled camera

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mjpeg_server(request: pytest.FixtureRequest) -> Iterator[MjpegServer]:
    server = MjpegServer(request.param)
    yield server
    server.close()


def connection_of(frame: Frame) -> int:
    return int(frame.image.mean()) // 40


@pytest.mark.parametrize("mjpeg_server", ["close-mid-frame", "hang"], indirect=True)
def test_lost_mjpeg_stream_is_reopened(mjpeg_server: MjpegServer) -> None:
    stop = threading.Event()
    states = States()
    camera = CameraConfig(id="yard", source=mjpeg_server.url, read_timeout_s=0.5, open_timeout_s=5.0)
    assert camera.resolved_kind() == "mjpeg"
    source = CameraSource(camera, states, backoff_start_s=0.05)
    frames = []
    for frame in source.frames(stop):
        frames.append(frame)
        if connection_of(frame) >= 2:
            stop.set()
    seen = sorted({connection_of(f) for f in frames})
    assert seen == [0, 1, 2]
    assert source.reconnects >= 2
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    assert all(b.ts > a.ts for a, b in itertools.pairwise(frames))
    assert states.calls[0] == (True, "streaming")
    lost = [reason for online, reason in states.calls if not online]
    assert lost[0].startswith("read failed") and lost[-1] == "stopped"
    assert [online for online, _ in states.calls[:4]] == [True, False, True, False]


@pytest.mark.parametrize("mjpeg_server", ["hang"], indirect=True)
def test_mjpeg_camera_read_for_the_sampler_hands_over_undecoded_jpegs(mjpeg_server: MjpegServer) -> None:
    """Whatever the sampler may take: a JPEG costs nothing to keep, and only the sampled ones are decoded."""
    stop = threading.Event()
    source = CameraSource(CameraConfig(id="yard", source=mjpeg_server.url, read_timeout_s=0.5), backoff_start_s=0.05)
    frames = collect_frames(source.frames(stop, lambda ts, next_ts: False), stop, 4)
    assert all(f.image is None and f.encoded is not None and jpeg_size(f.encoded) == SIZE for f in frames)
    decoded = [decode_jpeg(f.encoded, *SIZE) for f in frames if f.encoded is not None]
    assert [int(d.mean()) for d in decoded if d is not None] == [0, 1, 2, 3]


def test_refused_stream_url_fails_fast_with_password_hidden() -> None:
    camera = CameraConfig(id="yard", source="rtsp://admin:hunter2@127.0.0.1:9/live", open_timeout_s=2.0)
    with pytest.raises(SourceError) as info:
        open_capture(camera)
    message = str(info.value)
    assert "cannot open rtsp source rtsp://admin:***@127.0.0.1:9/live" in message
    assert "hunter2" not in message


def test_rtsp_is_asked_for_tcp_and_operator_options_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    camera = CameraConfig(id="yard", source="rtsp://127.0.0.1:9/live", open_timeout_s=1.0)
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, "fflags;nobuffer")
    with pytest.raises(SourceError):
        open_capture(camera)
    options = os.environ[FFMPEG_OPTIONS_ENV]
    assert options == "rtsp_transport;tcp|fflags;nobuffer"
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, "rtsp_transport;udp")
    with pytest.raises(SourceError):
        open_capture(camera)
    assert os.environ[FFMPEG_OPTIONS_ENV] == "rtsp_transport;udp"


def test_missing_v4l2_device_is_a_clear_error() -> None:
    camera = CameraConfig(id="usb", source="/dev/video97", read_timeout_s=2.5)
    assert camera.resolved_kind() == "v4l2"
    with pytest.raises(SourceError, match=r"camera usb: cannot open v4l2 source /dev/video97: check the device"):
        open_capture(camera)
    with pytest.raises(SourceError, match="v4l2 source 97"):
        open_capture(CameraConfig(id="usb", source=97))


def test_v4l2_wait_is_the_shortest_v4l2_cameras_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV reads it once per process: the shortest camera's, and longer ones read again (per camera)."""
    monkeypatch.delenv(V4L2_SELECT_TIMEOUT_ENV, raising=False)
    set_v4l2_select_timeout([CameraConfig(id="file", source="a.mp4", read_timeout_s=1.0)])
    assert V4L2_SELECT_TIMEOUT_ENV not in os.environ  # no V4L2 camera: OpenCV's own default stays
    set_v4l2_select_timeout([CameraConfig(id="usb", source="/dev/video0", read_timeout_s=7.0),
                             CameraConfig(id="usb2", source=1, read_timeout_s=2.5)])
    assert os.environ[V4L2_SELECT_TIMEOUT_ENV] == "3"


def test_redact_hides_only_the_password() -> None:
    assert redact("rtsp://user:pw@cam.local:554/s?x=1") == "rtsp://user:***@cam.local:554/s?x=1"
    assert redact("rtsp://cam.local/s") == "rtsp://cam.local/s"
    assert redact(0) == "0"


def test_stall_watch_flags_a_stream_that_repeats_its_position() -> None:
    watch = StallWatch(timeout_s=5.0, now=0.0)
    assert watch.fresh(0.0) and watch.fresh(40.0) and watch.fresh(80.0)
    watch.progress(1.0)
    assert not watch.fresh(80.0)  # the same frame again
    assert not watch.stalled(6.0)
    assert watch.stalled(6.1)
    assert watch.fresh(10.0)  # a position that jumps back (a restarted stream) is new


def test_stall_watch_ignores_positions_that_never_move() -> None:
    watch = StallWatch(timeout_s=5.0, now=0.0)
    assert all(watch.fresh(0.0) for _ in range(5))
    assert watch.stalled(5.5)  # but no progress reported still means stalled
