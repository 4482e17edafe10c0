"""Folder-per-class videos -> cached prepared frames -> model windows.

Layout: ``DATA_DIR/<class>/<clip>.<mp4|avi|mkv|mov|mpg|webm>`` (UCF50's). Every clip is decoded once,
each frame turned into a model-size frame by ``edge.preprocess.prepare_frame`` (the function the
device uses), and cached on disk as uint8 so a second run does not decode again. Caching every
frame, not just the 21 sampled ones, is what makes temporal jitter possible without decoding again;
the clips this tool is for are seconds long.

What is skipped, always listed in the output and never a crash:
- a video OpenCV cannot open or decode (corrupt, truncated, unknown codec);
- a clip with fewer frames than the window needs (``frames``): spreading 21 samples over fewer
  frames would repeat frames and teach the model that repeated frames (zero motion) are normal.
A missing or empty data folder, or a class folder without videos, is an error (DataError).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import cv2
import numpy as np

from converter.groups import assign_groups
from edge.preprocess import (
    PREPROCESS_VERSION,
    SCALE,
    Representation,
    prepare_frame,
    spread_indices,
    window_inputs,
)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".mpg", ".webm")
DEFAULT_CACHE = Path(os.environ.get("RCLSTM_CACHE", Path.home() / ".cache" / "rclstm-edge"))
_CACHE_FORMAT = 1
Augment = Literal["none", "flip", "jitter", "flip+jitter"]
AUGMENTS: tuple[str, ...] = get_args(Augment)
# Defaults chosen on the real CCTV fight data (group split, 3 seeds; README "The shipped model"):
# frame differences carry the signal (RGB is at chance), and flip + temporal jitter lifted held-out
# accuracy on every split (0.64/0.73/0.72 without, 0.72/0.80/0.76 with: 0.698 +/- 0.041 -> 0.760 +/- 0.033).
DEFAULT_REPRESENTATION: Representation = "diff"
DEFAULT_AUGMENT: Augment = "flip+jitter"


class DataError(Exception):
    """A data folder that cannot be used; the message is one line naming the path and the fix."""


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    group: str

    @property
    def name(self) -> str:
        """``class/file``: how clips are named in run records, stable across machines."""
        return f"{self.path.parent.name}/{self.path.name}"


@dataclass(frozen=True)
class Decoded:
    """A clip's frames, prepared at model size and stored as uint8 RGB (exactly prepare_frame * 255)."""

    clip: Clip
    frames: np.ndarray  # (N, H, W, 3) uint8
    fps: float

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps


@dataclass
class Dataset:
    clips: list[Decoded]
    labels: list[str]  # class names, index = class id
    skipped: list[tuple[str, str]]  # (clip name, reason)
    grouping: str

    @property
    def y(self) -> np.ndarray:
        return np.array([self.labels.index(d.clip.label) for d in self.clips])


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def scan(data_dir: Path, classes: Sequence[str] | None = None) -> tuple[list[Clip], list[str], str]:
    """Clips per class folder with their source groups; raises DataError for unusable layouts."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found; pass a folder with one sub-folder of videos per class")
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{data_dir}: no class folders; put each class's videos in DATA_DIR/<class>/")
    if classes:
        known = {p.name for p in folders}
        missing = [c for c in classes if c not in known]
        if missing:
            raise DataError(
                f"{data_dir}: no folder for class(es) {', '.join(missing)}; found {', '.join(sorted(known))}"
            )
        folders = [data_dir / c for c in classes]
    clips_by_class: dict[str, list[Path]] = {}
    for folder in folders:
        videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not videos:
            raise DataError(
                f"{folder}: class folder has no videos ({', '.join(VIDEO_EXTENSIONS)}); add clips or remove the folder"
            )
        clips_by_class[folder.name] = videos
    if len(clips_by_class) < 2:
        raise DataError(f"{data_dir}: only one class folder ({folders[0].name}); a classifier needs at least two")
    paths = [(label, p) for label, videos in clips_by_class.items() for p in videos]
    groups, how = assign_groups([p.stem for _, p in paths], data_dir)
    clips = [Clip(p, label, g) for (label, p), g in zip(paths, groups, strict=True)]
    return clips, list(clips_by_class), how


def _cache_path(cache_dir: Path, path: Path, height: int, width: int) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{height}x{width}|{_CACHE_FORMAT}|{PREPROCESS_VERSION}"
    return cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.npz"


def decode_clip(path: Path, height: int, width: int) -> tuple[np.ndarray, float]:
    """Every frame of a video prepared at model size (uint8 RGB) and its frame rate.

    Raises ValueError when OpenCV cannot open or decode the file.
    """
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError("OpenCV cannot open it")
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            # prepare_frame gives uint8 * (1/255) in float32; *255 and rounding recovers the uint8 exactly.
            frames.append(np.rint(prepare_frame(frame, height, width) * 255.0).astype(np.uint8))
    finally:
        capture.release()
    if not frames:
        raise ValueError("no decodable frames")
    return np.stack(frames), float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0


def load_clip(clip: Clip, height: int, width: int, cache_dir: Path | None) -> tuple[Decoded, bool]:
    """A decoded clip, from the cache when present; the flag says whether it was decoded now."""
    cached = _cache_path(cache_dir, clip.path, height, width) if cache_dir else None
    if cached and cached.is_file():
        try:
            with np.load(cached) as data:
                return Decoded(clip, data["frames"], float(data["fps"])), False
        except (OSError, ValueError, KeyError):
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    frames, fps = decode_clip(clip.path, height, width)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, frames=frames, fps=np.float64(fps))
        tmp.replace(cached)
    return Decoded(clip, frames, fps), True


def load_dataset(
    data_dir: Path,
    classes: Sequence[str] | None = None,
    frames: int = 20,
    size: int = 64,
    cache_dir: Path | None = DEFAULT_CACHE,
    only: set[str] | None = None,
    log: Callable[[str], None] = _log,
) -> Dataset:
    """Scan, decode (or read from cache) and filter a data folder; ``only`` restricts to named clips."""
    cache_dir = Path(cache_dir) if cache_dir else None
    clips, labels, grouping = scan(data_dir, classes)
    if only is not None:
        clips = [c for c in clips if c.name in only]
    decoded: list[Decoded] = []
    skipped: list[tuple[str, str]] = []
    fresh = 0
    for i, clip in enumerate(clips, 1):
        try:
            item, was_decoded = load_clip(clip, size, size, cache_dir)
        except ValueError as exc:
            skipped.append((clip.name, f"unreadable video: {exc}"))
            continue
        fresh += was_decoded
        if was_decoded and (fresh % 25 == 0 or i == len(clips)):
            log(f"decoding {i}/{len(clips)} clips ({fresh} decoded, the rest cached)")
        if len(item.frames) < frames:
            skipped.append((clip.name, f"only {len(item.frames)} frames, fewer than the {frames} a window needs"))
            continue
        decoded.append(item)
    log(f"{data_dir}: {len(decoded)} clips in {len(labels)} classes ({grouping}); {fresh} decoded, "
        f"{len(decoded) + len(skipped) - fresh} from cache, {len(skipped)} skipped")
    for name, reason in skipped:
        log(f"  skipped {name}: {reason}")
    if not decoded:
        raise DataError(f"{data_dir}: no usable clips (all {len(skipped)} skipped); see the list above")
    return Dataset(decoded, labels, skipped, grouping)


def sample_indices(n_frames: int, frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``frames + 1`` indices spread over the clip; with ``rng``, each moved by up to half a spacing."""
    idx = spread_indices(n_frames, frames + 1)
    if rng is None:
        return idx
    half = int((n_frames - 1) / frames // 2)
    if half == 0:
        return idx
    moved = np.clip(idx + rng.integers(-half, half + 1, idx.shape), 0, n_frames - 1)
    return np.maximum.accumulate(moved)  # keep time order


def window(
    item: Decoded,
    frames: int,
    representation: Representation,
    rng: np.random.Generator | None = None,
    augment: Augment = "none",
) -> np.ndarray:
    """One model window (T x H x W x C) for a clip, built by the device's window_inputs."""
    jitter = rng is not None and "jitter" in augment
    idx = sample_indices(len(item.frames), frames, rng if jitter else None)
    prepared = item.frames[idx].astype(np.float32) * np.float32(SCALE)
    if rng is not None and "flip" in augment and rng.random() < 0.5:
        prepared = prepared[:, :, ::-1]
    return window_inputs(list(prepared), representation)


def windows(items: Sequence[Decoded], frames: int, representation: Representation) -> np.ndarray:
    return np.stack([window(item, frames, representation) for item in items])


def sampling_stats(items: Sequence[Decoded], frames: int) -> dict[str, float]:
    """Time between sampled frames (clip duration / frames): what the device must reproduce."""
    intervals = np.array([item.duration_s / frames for item in items])
    median = float(np.median(intervals))
    return {
        "method": "spread",
        "frame_interval_s": median,
        "window_s": median * frames,
        "interval_min_s": float(intervals.min()),
        "interval_max_s": float(intervals.max()),
    }
