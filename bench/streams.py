"""Camera-like test streams built from real clips: 25 fps, 640x360, normal footage with spliced segments.

A benchmark of a video pipeline is only as honest as its video: decode cost depends on codec,
resolution and motion. So the streams are made of the dataset's own clips, resized to a camera
resolution and resampled in time to 25 fps, and encoded as a camera would send them: H.264 (what IP
cameras send; with ffmpeg's libx264, else GStreamer's x264enc, else MPEG-4 part 2, and the JSON
records which), MPEG-4 part 2 or MJPEG (OpenCV's own encoders). Streams are written once into the
cache and reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

FPS = 25.0
SIZE = (640, 360)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")
CODECS = ("h264", "mpeg4", "mjpeg")
Segment = tuple[str, float]  # (class folder, seconds)
Span = tuple[str, float, float]  # (class folder, start_s, end_s)


def clips(data: Path, label: str) -> list[Path]:
    found = sorted(p for p in (data / label).iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not found:
        raise FileNotFoundError(f"{data / label}: no video clips; pass --data with one folder per class")
    return found


def _resampled(path: Path, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """A clip's frames at 25 fps and ``size``: frames are repeated or skipped by their time, not their index."""
    capture = cv2.VideoCapture(str(path))
    source_fps = capture.get(cv2.CAP_PROP_FPS) or FPS
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    capture.release()
    count = int(len(frames) * FPS / source_fps)
    for k in range(count):
        yield frames[min(len(frames) - 1, int(k * source_fps / FPS))]


class _Writer:
    """H.264 through ffmpeg's libx264 or GStreamer's x264enc (fed raw frames on stdin), else OpenCV's encoders."""

    def __init__(self, path: Path, size: tuple[int, int], codec: str) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.writer: cv2.VideoWriter | None = None
        command = h264_command(path, size) if codec == "h264" else None
        self.codec = "h264" if command else "mpeg4" if codec == "h264" else codec
        if command:
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE)
        else:
            fourcc = "MJPG" if self.codec == "mjpeg" else "mp4v"
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, size)

    def write(self, frame: np.ndarray) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.write(frame.tobytes())
        elif self.writer is not None:
            self.writer.write(frame)

    def close(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            if self.proc.wait() != 0:
                raise OSError("the H.264 encoder could not encode the benchmark stream")
        if self.writer is not None:
            self.writer.release()


def h264_command(path: Path, size: tuple[int, int]) -> list[str] | None:
    """An encoder reading BGR frames at 25 fps on stdin and writing H.264 (a camera's GOP: 2 s), or None."""
    width, height = size
    if shutil.which("ffmpeg"):
        done = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True, check=False)
        if "libx264" in done.stdout:
            return ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s",
                    f"{width}x{height}", "-r", str(FPS), "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
                    "-g", "50", "-pix_fmt", "yuv420p", str(path)]
    if shutil.which("gst-launch-1.0"):
        done = subprocess.run(["gst-inspect-1.0", "x264enc"], capture_output=True, check=False)
        if done.returncode == 0:
            return ["gst-launch-1.0", "-q", "fdsrc", "fd=0", "!", "rawvideoparse", "format=bgr",
                    f"width={width}", f"height={height}", f"framerate={int(FPS)}/1", "!", "videoconvert", "!",
                    "video/x-raw,format=I420", "!", "x264enc", "speed-preset=veryfast", "key-int-max=50", "!",
                    "mp4mux", "!", "filesink", f"location={path}"]
    return None


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def build_stream(data: Path, segments: list[Segment], cache: Path, size: tuple[int, int] = SIZE,
                 codec: str = "h264") -> dict:
    """Write (once) a stream of consecutive segments of real clips; returns its path, spans, frames and codec.

    Each class's clips are taken in name order, continuing where the previous segment of that class
    stopped, so a stream never shows the same clip twice until a class runs out.
    """
    suffix = ".avi" if codec == "mjpeg" else ".mp4"
    path = cache / f"stream-{_key(str(Path(data).resolve()), segments, size, codec)}{suffix}"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        # Written with MPEG-4 for want of an H.264 encoder: reused only while there still is none.
        if meta["codec"] == codec or h264_command(path, size) is None:
            return meta
    cache.mkdir(parents=True, exist_ok=True)
    queues = {label: clips(data, label) for label in {label for label, _ in segments}}
    used = dict.fromkeys(queues, 0)
    writer = _Writer(path, size, codec)
    frames, spans = 0, []
    try:
        for label, seconds in segments:
            start, wanted = frames, frames + round(seconds * FPS)
            while frames < wanted:
                clip = queues[label][used[label] % len(queues[label])]
                used[label] += 1
                for image in _resampled(clip, size):
                    if frames >= wanted:
                        break
                    writer.write(image)
                    frames += 1
            spans.append((label, start / FPS, frames / FPS))
    finally:
        writer.close()
    meta = {"path": str(path), "spans": spans, "frames": frames, "seconds": frames / FPS, "fps": FPS,
            "size": list(size), "codec": writer.codec, "source": str(data), "clips_used": used}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


def synthetic_stream(segments: list[Segment], cache: Path) -> dict:
    """Without real clips: the generated calm/fight scene (smaller, since it is rendered in memory)."""
    from edge.synthetic import write_stream

    size = (320, 180)
    path = cache / f"synthetic-{_key(segments, size)}.mp4"
    cache.mkdir(parents=True, exist_ok=True)
    spans = write_stream(path, segments, fps=FPS, size=size)
    frames = round(spans[-1][2] * FPS)
    return {"path": str(path), "spans": spans, "frames": frames, "seconds": frames / FPS, "fps": FPS,
            "size": list(size), "codec": "mpeg4", "source": "edge.synthetic (generated)"}
