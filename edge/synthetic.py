"""Generated surveillance-like video: a fixed scene with people-like blobs that drift (calm) or fight.

This is a test and demo aid, not a substitute for real footage: it lets the converter's tests train a
model in seconds and lets `rclstm-edge demo` show the whole device path without a camera or real data.
The two classes differ the way real CCTV fights differ from normal scenes in what the ``diff``
representation sees: calm blobs move a pixel or so between sampled frames, fighting blobs jump
around and overlap. numpy and OpenCV only, so the device package can use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

Kind = Literal["calm", "fight", "rush"]
KINDS: tuple[str, ...] = ("calm", "fight")  # the classes of a generated dataset
# A stream may also hold "rush": people hurrying straight through the scene. No class names it; a
# model that learned "much movement" from calm vs fight raises it as a fight (the demo model scores it
# 1.0), which makes it the false alarm the feedback loop's tests correct.
STREAM_KINDS: tuple[str, ...] = (*KINDS, "rush")
RUSH_SPEED = 4.0  # pixels per frame at 160 px wide: about ten times a calm walk
# FourCC per container; both decode with every OpenCV build the project supports.
_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


@dataclass
class _Blob:
    pos: np.ndarray  # (x, y) in pixels
    vel: np.ndarray  # pixels per frame
    color: tuple[int, int, int]
    radius: tuple[int, int]  # ellipse half-axes (x, y)


@dataclass
class _Scene:
    """One camera view: a static background and blobs whose motion depends on the current kind."""

    width: int
    height: int
    rng: np.random.Generator
    background: np.ndarray = field(init=False)
    blobs: list[_Blob] = field(default_factory=list)
    centre: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.background = _background(self.width, self.height, self.rng)
        self.centre = np.array([self.width / 2, self.height * 0.6])

    def _new_blob(self, near: np.ndarray | None = None) -> _Blob:
        w, h = self.width, self.height
        if near is None:
            pos = np.array([self.rng.uniform(0.15, 0.85) * w, self.rng.uniform(0.35, 0.85) * h])
        else:
            pos = near + self.rng.normal(0, 0.06 * w, 2)
        color = tuple(int(c) for c in self.rng.integers(20, 235, 3))
        radius = (max(3, int(w * self.rng.uniform(0.04, 0.06))), max(5, int(h * self.rng.uniform(0.12, 0.18))))
        return _Blob(pos=pos, vel=np.zeros(2), color=color, radius=radius)

    def enter(self, kind: Kind) -> None:
        """Adjust the cast for a new segment: a fight needs at least two people close together."""
        if kind == "rush":
            while len(self.blobs) < 3:
                self.blobs.append(self._new_blob())
            for blob in self.blobs:
                angle = self.rng.uniform(0, 2 * np.pi)
                blob.vel = np.array([np.cos(angle), 0.3 * np.sin(angle)]) * RUSH_SPEED * self.width / 160
        elif kind == "fight":
            self.centre = np.array(
                [self.rng.uniform(0.3, 0.7) * self.width, self.rng.uniform(0.45, 0.75) * self.height]
            )
            wanted = int(self.rng.integers(2, 5))
            while len(self.blobs) < wanted:
                self.blobs.append(self._new_blob(near=self.centre))
        else:
            wanted = int(self.rng.integers(1, 3))
            while len(self.blobs) < wanted:
                self.blobs.append(self._new_blob())
            for blob in self.blobs:
                blob.vel = self._calm_velocity()

    def _calm_velocity(self) -> np.ndarray:
        angle = self.rng.uniform(0, 2 * np.pi)
        speed = self.rng.uniform(0.15, 0.5) * self.width / 160
        return np.array([np.cos(angle), np.sin(angle)]) * speed

    def step(self, kind: Kind) -> np.ndarray:
        w, h = self.width, self.height
        for blob in self.blobs:
            if kind == "fight":
                # Erratic: a fresh random push every frame plus a spring toward the shared centre.
                push = self.rng.normal(0, 0.045 * w, 2)
                blob.vel = 0.3 * blob.vel + push + 0.35 * (self.centre - blob.pos)
            elif kind == "calm":
                blob.vel = 0.98 * blob.vel + self.rng.normal(0, 0.01 * w / 160, 2)
            blob.pos = blob.pos + blob.vel
            lo = np.array([0.05 * w, 0.25 * h])
            hi = np.array([0.95 * w, 0.9 * h])
            bounced = (blob.pos < lo) | (blob.pos > hi)
            blob.vel[bounced] *= -1
            blob.pos = np.clip(blob.pos, lo, hi)
        return self.render()

    def render(self) -> np.ndarray:
        frame = self.background.copy()
        for blob in self.blobs:
            x, y = (int(np.rint(v)) for v in blob.pos)
            cv2.ellipse(frame, (x, y), blob.radius, 0, 0, 360, blob.color, -1, cv2.LINE_AA)
            head = (x, y - blob.radius[1] - max(2, blob.radius[0] // 2))
            cv2.circle(frame, head, max(2, blob.radius[0] * 2 // 3), blob.color, -1, cv2.LINE_AA)
        noise = self.rng.normal(0, 2.0, frame.shape)
        return np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible static view: a sky/wall gradient, a floor, a few buildings or shelves."""
    top = rng.integers(90, 200, 3).astype(np.float32)
    bottom = rng.integers(40, 140, 3).astype(np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    frame = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1), np.float32)
    horizon = int(height * rng.uniform(0.3, 0.45))
    frame[horizon:] = frame[horizon:] * 0.7 + rng.integers(30, 110, 3) * 0.3
    for _ in range(int(rng.integers(2, 6))):
        x0 = int(rng.integers(0, width - 4))
        w = int(rng.integers(width // 10, width // 3))
        top_y = int(rng.integers(0, max(1, horizon - 4)))
        colour = tuple(int(c) for c in rng.integers(30, 220, 3))
        cv2.rectangle(frame, (x0, top_y), (min(width - 1, x0 + w), horizon), colour, -1)
    texture = rng.normal(0, 4.0, (height, width, 3)).astype(np.float32)
    return np.clip(frame + texture, 0, 255).astype(np.uint8)


def render_clip(kind: Kind, n_frames: int, width: int, height: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One clip of ``n_frames`` BGR uint8 frames showing a single kind of activity."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    scene = _Scene(width, height, rng)
    scene.enter(kind)
    return [scene.step(kind) for _ in range(n_frames)]


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write frames to .mp4 (mp4v) or .avi (MJPG) and check that OpenCV can read the file back."""
    path = Path(path)
    fourcc = _FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"{path}: unsupported extension; use one of {', '.join(_FOURCC)}")
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    height, width = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open a {fourcc} writer (is FFmpeg support missing?)")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    capture = cv2.VideoCapture(str(path))
    ok, _ = capture.read()
    capture.release()
    if not ok:
        raise OSError(f"{path}: written but OpenCV cannot decode it back")
    return path


def write_stream(
    path: Path,
    segments: Sequence[tuple[str, float]],
    fps: float = 25.0,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
) -> list[tuple[str, float, float]]:
    """A continuous video of consecutive segments in one scene; returns each (kind, start_s, end_s).

    The same background and people carry over from one segment to the next, so a detector sees a
    calm scene turn into a fight and back, as a camera would.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    scene = _Scene(width, height, rng)
    frames: list[np.ndarray] = []
    spans: list[tuple[str, float, float]] = []
    for kind, seconds in segments:
        if kind not in STREAM_KINDS:
            raise ValueError(f"segment kind {kind!r} is not one of {', '.join(STREAM_KINDS)}")
        start = len(frames)
        scene.enter(kind)  # type: ignore[arg-type]
        frames.extend(scene.step(kind) for _ in range(max(1, round(seconds * fps))))  # type: ignore[arg-type]
        spans.append((kind, start / fps, len(frames) / fps))
    write_video(path, frames, fps)
    return spans
