"""Folder-per-class videos -> cached prepared frames -> model windows.

Layout: ``DATA_DIR/<class>/<clip>.<mp4|avi|mkv|mov|mpg|webm>`` (UCF50's). Every clip is decoded once,
each frame turned into a model-size frame by ``edge.preprocess.prepare_frame`` (the function the
device uses), and cached on disk as uint8 so a second run does not decode again. Caching every
frame, not just the 21 sampled ones, is what makes temporal jitter possible without decoding again;
the clips this tool is for are seconds long.

What is skipped, always listed in the output and never a crash:
- a video OpenCV cannot open or decode (corrupt, truncated, unknown codec);
- a clip too short for one window (see converter.sampling): sampling it would repeat frames and
  teach the model that repeated frames (zero motion) are normal.
A missing or empty data folder, or a class folder without videos, is an error (DataError).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np

from converter.groups import assign_groups
from converter.sampling import WindowSampling
from converter.sampling import sample_indices as sample_indices  # re-exported: callers use ds.sample_indices
from converter.sources import Source, SourceError, map_class
from edge.preprocess import (
    MOTION_REPRESENTATIONS,
    PREPROCESS_VERSION,
    SCALE,
    Representation,
    model_input,
    prepare_frame,
    reads_grey,
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
    label: str  # after the class map: the label the model learns
    group: str  # prefixed with the source name, so sources never share a group
    source: str = ""

    @property
    def name(self) -> str:
        """``source/class/file`` (``class/file`` for a legacy unnamed source): stable across machines."""
        local = f"{self.path.parent.name}/{self.path.name}"
        return f"{self.source}/{local}" if self.source else local


@dataclass(frozen=True)
class Decoded:
    """A clip's frames, prepared at model size and stored as uint8 (exactly prepare_frame * 255)."""

    clip: Clip
    frames: np.ndarray  # (N, H, W, 3) RGB, or (N, H, W) for a model that reads grey (reads_grey); uint8
    fps: float
    _motion: dict[tuple[int, int, bool, str], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps

    def motion(self, before: int, after: int, flip: bool, representation: Representation) -> np.ndarray:
        """A motion representation's model input between two of the clip's frames, computed once per pair.

        Optical flow and its statistics cost about a millisecond a pair, and training revisits the
        same pairs every epoch and in every overlapping window; the value is exactly what
        ``window_inputs`` gives.
        """
        key = (before, after, flip, representation)
        if key not in self._motion:
            pair = [self.frames[i].astype(np.float32) * np.float32(SCALE) for i in (before, after)]
            if flip:
                pair = [p[:, ::-1] for p in pair]
            self._motion[key] = model_input(pair[1], pair[0], representation)
        return self._motion[key]


@dataclass
class Dataset:
    clips: list[Decoded]
    labels: list[str]  # class names, index = class id
    skipped: list[tuple[str, str]]  # (clip name, reason)
    grouping: str
    sources: list[Source] = field(default_factory=list)

    @property
    def y(self) -> np.ndarray:
        return np.array([self.labels.index(d.clip.label) for d in self.clips])


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def scan(
    data_dir: Path | Source, classes: Sequence[str] | None = None, class_map: Mapping[str, str] | None = None
) -> tuple[list[Clip], list[str], str]:
    """Clips per class folder with their (source-prefixed) groups and mapped labels; DataError for unusable layouts.

    Labels are the mapped class names in folder order; a bare path is a legacy unnamed source.
    """
    source = data_dir if isinstance(data_dir, Source) else Source("", Path(data_dir))
    data_dir = source.path
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
    try:
        mapped = {folder: map_class(folder, class_map or {}, source) for folder in clips_by_class}
        paths = [(mapped[folder], p) for folder, videos in clips_by_class.items() for p in videos]
        groups, how = assign_groups([p.stem for _, p in paths], data_dir)
    except (SourceError, ValueError) as exc:
        raise DataError(str(exc)) from None
    labels = list(dict.fromkeys(mapped.values()))
    if len(labels) < 2:
        raise DataError(f"{data_dir}: only one class ({labels[0]}) after the class map; a classifier needs two or more")
    prefix = f"{source.name}:" if source.name else ""
    clips = [Clip(p, label, prefix + g, source.name) for (label, p), g in zip(paths, groups, strict=True)]
    return clips, labels, how


def _cache_path(cache_dir: Path, path: Path, height: int, width: int, version: int, grey: bool) -> Path:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{height}x{width}|{_CACHE_FORMAT}|{version}"
    return cache_dir / f"{hashlib.sha1((key + ('|grey' if grey else '')).encode()).hexdigest()}.npz"


def decode_clip(path: Path, height: int, width: int, version: int = PREPROCESS_VERSION,
                grey: bool = False) -> tuple[np.ndarray, float]:
    """Every frame of a video prepared at model size (uint8 RGB, or grey with ``grey``; preprocessing
    ``version``) and its frame rate.

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
            frames.append(np.rint(prepare_frame(frame, height, width, version, grey) * 255.0).astype(np.uint8))
    finally:
        capture.release()
    if not frames:
        raise ValueError("no decodable frames")
    return np.stack(frames), float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0


def load_clip(clip: Clip, height: int, width: int, cache_dir: Path | None,
              version: int = PREPROCESS_VERSION, grey: bool = False) -> tuple[Decoded, bool]:
    """A decoded clip, from the cache when present; the flag says whether it was decoded now."""
    cached = _cache_path(cache_dir, clip.path, height, width, version, grey) if cache_dir else None
    if cached and cached.is_file():
        try:
            with np.load(cached) as data:
                return Decoded(clip, data["frames"], float(data["fps"])), False
        except (OSError, ValueError, KeyError):
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    frames, fps = decode_clip(clip.path, height, width, version, grey)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, frames=frames, fps=np.float64(fps))
        tmp.replace(cached)
    return Decoded(clip, frames, fps), True


def _sources(data_dir: Path | Source | Sequence[Source]) -> list[Source]:
    if isinstance(data_dir, Source):
        return [data_dir]
    if isinstance(data_dir, (str, Path)):
        return [Source("", Path(data_dir))]  # a bare folder: the legacy unnamed source (clip names class/file)
    return list(data_dir)


def load_dataset(
    data_dir: Path | Source | Sequence[Source],
    classes: Sequence[str] | None = None,
    frames: int = 20,
    size: int = 64,
    cache_dir: Path | None = DEFAULT_CACHE,
    only: set[str] | None = None,
    log: Callable[[str], None] = _log,
    class_map: Mapping[str, str] | None = None,
    sampling: WindowSampling | None = None,
    version: int = PREPROCESS_VERSION,
    representation: Representation = DEFAULT_REPRESENTATION,
) -> Dataset:
    """Scan, decode (or read from cache) and filter one or several sources; ``only`` restricts to named clips.

    Frames are prepared with preprocessing ``version`` (the newest for training, a bundle's own to evaluate
    it) for the model's ``representation`` (grey or colour, ``reads_grey``).

    Labels are the mapped class names in order of first appearance over the sources.
    """
    cache_dir = Path(cache_dir) if cache_dir else None
    sampling = sampling or WindowSampling("spread", frames)
    sources = _sources(data_dir)
    clips: list[Clip] = []
    labels: list[str] = []
    how: list[str] = []
    for source in sources:
        found, source_labels, grouping = scan(source, classes, class_map)
        clips += found
        labels += [label for label in source_labels if label not in labels]
        how.append(f"{source.name}: {grouping}" if source.name else grouping)
    grouping = "; ".join(how)
    folders = {c.path.parent.name for c in clips}
    unused = [folder for folder in (class_map or {}) if folder not in folders]
    if unused:
        raise DataError(f"--class-map names {', '.join(unused)}, a class folder in none of the sources; "
                        "fix the spelling or drop it")
    if only is not None:
        clips = [c for c in clips if c.name in only]
    decoded: list[Decoded] = []
    skipped: list[tuple[str, str]] = []
    fresh = 0
    for i, clip in enumerate(clips, 1):
        try:
            item, was_decoded = load_clip(clip, size, size, cache_dir, version, reads_grey(representation, version))
        except ValueError as exc:
            skipped.append((clip.name, f"unreadable video: {exc}"))
            continue
        fresh += was_decoded
        if was_decoded and (fresh % 25 == 0 or i == len(clips)):
            log(f"decoding {i}/{len(clips)} clips ({fresh} decoded, the rest cached)")
        reason = sampling.skip_reason(len(item.frames), item.fps)
        if reason:
            skipped.append((clip.name, reason))
            continue
        decoded.append(item)
    where = ", ".join(str(s.path) for s in sources)
    log(f"{where}: {len(decoded)} clips in {len(labels)} classes ({grouping}); {fresh} decoded, "
        f"{len(decoded) + len(skipped) - fresh} from cache, {len(skipped)} skipped")
    for name, reason in skipped:
        log(f"  skipped {name}: {reason}")
    if not decoded:
        raise DataError(f"{where}: no usable clips (all {len(skipped)} skipped); see the list above")
    return Dataset(decoded, labels, skipped, grouping, sources)


def window_at(item: Decoded, idx: np.ndarray, representation: Representation, flip: bool = False) -> np.ndarray:
    """The model window (T x H x W x C) for sampled frame indices, built by the device's window_inputs."""
    if representation in MOTION_REPRESENTATIONS:
        return np.stack([item.motion(int(before), int(after), flip, representation)
                         for before, after in itertools.pairwise(idx)])
    prepared = item.frames[idx].astype(np.float32) * np.float32(SCALE)
    if flip:
        prepared = prepared[:, :, ::-1]
    return window_inputs(list(prepared), representation)


# (clip, sampled frame indices, flip) -> what the model trains on for that window, when that is not
# the window itself (the features of a frozen encoder, converter.train.FrameFeatures).
WindowMaker = Callable[[Decoded, np.ndarray, bool], np.ndarray]


def train_windows(
    item: Decoded,
    sampling: WindowSampling,
    representation: Representation,
    rng: np.random.Generator | None = None,
    augment: Augment = "none",
    make: WindowMaker | None = None,
) -> list[np.ndarray]:
    """A clip's training windows for one epoch; with ``rng``, the augmentations ``augment`` names.

    ``make`` turns each drawn window into something else (default: the window, ``window_at``).
    """
    jitter = rng is not None and "jitter" in augment
    out = []
    for idx in sampling.train_indices(len(item.frames), item.fps, rng if jitter else None):
        flip = rng is not None and "flip" in augment and bool(rng.random() < 0.5)
        out.append(make(item, idx, flip) if make else window_at(item, idx, representation, flip))
    return out


def window(
    item: Decoded,
    frames: int,
    representation: Representation,
    rng: np.random.Generator | None = None,
    augment: Augment = "none",
) -> np.ndarray:
    """One spread window for a clip (the paper's sampling)."""
    return train_windows(item, WindowSampling("spread", frames), representation, rng, augment)[0]


def windows(items: Sequence[Decoded], frames: int, representation: Representation) -> np.ndarray:
    """One spread window per clip."""
    return np.stack([window(item, frames, representation) for item in items])


def eval_windows(item: Decoded, sampling: WindowSampling, representation: Representation) -> np.ndarray:
    """Every evaluation window of a clip (one for ``spread``; the device's grid for ``interval``)."""
    return np.stack([window_at(item, idx, representation)
                     for idx in sampling.eval_indices(len(item.frames), item.fps)])


def keras_predictor(model: Any, batch_size: int = 16) -> Callable[[np.ndarray], np.ndarray]:
    """Windows -> probabilities for a Keras model, as training, evaluation and conversion score clips.

    Called directly, not through ``model.predict``: predict traces a graph for every new batch shape
    (seconds each, for a few milliseconds of work on a small model), and clips give many shapes.
    """

    def predict(windows: np.ndarray) -> np.ndarray:
        from keras import ops

        return np.concatenate([ops.convert_to_numpy(model(windows[i:i + batch_size], training=False))
                               for i in range(0, len(windows), batch_size)])

    return predict


def clip_probs(
    predict: Callable[[np.ndarray], np.ndarray],
    items: Sequence[Decoded],
    sampling: WindowSampling,
    representation: Representation,
    chunk: int = 64,
) -> np.ndarray:
    """Class probabilities per clip: the mean over its evaluation windows, predicted ``chunk`` windows at a time."""
    out: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    counts: list[int] = []

    def flush() -> None:
        probs = np.asarray(predict(np.concatenate(pending)))
        for piece in np.split(probs, np.cumsum(counts)[:-1]):
            out.append(piece.mean(axis=0))
        pending.clear()
        counts.clear()

    for item in items:
        batch = eval_windows(item, sampling, representation)
        pending.append(batch)
        counts.append(len(batch))
        if sum(counts) >= chunk:
            flush()
    if pending:
        flush()
    return np.stack(out)
