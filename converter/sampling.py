"""Which frames of a clip make a model window, in training and in evaluation.

Two methods, recorded in the run and the bundle's manifest (``sampling.method``):

- ``spread`` (the paper's, and the shipped model's): ``frames + 1`` frames spread evenly over the
  whole clip, one window per clip. The time between samples then depends on the clip's length
  (a 5 s clip is learned at 0.25 s per frame), while the device samples at one interval (the
  median), so long clips are learned at another time scale than the one they are served at.
- ``interval``: ``frames + 1`` frames taken ``interval_s`` apart, the interval the device's sampler
  uses, so a window spans ``frames * interval_s`` seconds in training exactly as on a camera.
  A long clip gives several windows: in training ``floor(span / window)`` of them per epoch, each
  at a random start with temporal jitter (evenly spaced without); in evaluation every window on
  the device's grid (one every ``hop`` sampled frames from the clip's start), and the clip's class
  probabilities are the mean of its windows' (so its anomaly score is the mean window score).
  A clip shorter than a window but at least ``SHORT_CLIP_FRACTION`` of one is sampled over its whole
  span (its interval shrinks by at most 10 %: fight-surv's 2 s clips are 1.9-2.0 s between first and
  last frame at 30 fps); a shorter clip is skipped and listed, never padded with repeated frames
  (repeats are zero motion, which would teach the model that stillness is normal).

Frames are picked by timestamp, nearest to each target time, as the device's sampler does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from edge.core.config import DEFAULT_HOP
from edge.preprocess import spread_indices

SamplingMethod = Literal["spread", "interval"]
SAMPLING_METHODS: tuple[str, ...] = get_args(SamplingMethod)
DEFAULT_METHOD: SamplingMethod = "spread"  # reproduces the shipped model; `interval` is what the device sees
DEFAULT_INTERVAL_S = 0.1
SHORT_CLIP_FRACTION = 0.9
_EPS = 1e-9


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


def nearest(timestamps: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the frame whose timestamp is nearest each target (earlier frame on a tie), as the device samples."""
    if len(timestamps) < 2:
        return np.zeros(len(targets), np.int64)
    right = np.clip(np.searchsorted(timestamps, targets - _EPS), 1, len(timestamps) - 1)
    left = right - 1
    pick_left = (targets - timestamps[left]) <= (timestamps[right] - targets) + _EPS
    return np.where(pick_left, left, right).astype(np.int64)


@dataclass(frozen=True)
class WindowSampling:
    method: SamplingMethod = DEFAULT_METHOD
    frames: int = 20
    interval_s: float = DEFAULT_INTERVAL_S  # interval only
    hop: int = DEFAULT_HOP  # interval only: sampled frames between evaluation windows

    @property
    def window_s(self) -> float:
        return self.frames * self.interval_s

    def skip_reason(self, n_frames: int, fps: float) -> str | None:
        """Why a clip cannot give a window (None when it can)."""
        if self.method == "spread":
            return None if n_frames >= self.frames else \
                f"only {n_frames} frames, fewer than the {self.frames} a window needs"
        span = (n_frames - 1) / fps
        if span + _EPS < SHORT_CLIP_FRACTION * self.window_s:
            return (f"only {span:.2f} s long, under {SHORT_CLIP_FRACTION:.0%} of a {self.window_s:.2f} s window "
                    f"({self.frames} x {self.interval_s} s)")
        return None

    def _interval(self, span: float) -> float:
        """The sampling interval for a clip: the asked one, or shrunk to fit a clip just short of a window."""
        return min(self.interval_s, span / self.frames)

    def train_indices(self, n_frames: int, fps: float, rng: np.random.Generator | None = None) -> list[np.ndarray]:
        """Training windows of one clip (rng: random starts / jitter; None: the fixed, evenly spaced ones)."""
        if self.method == "spread":
            return [sample_indices(n_frames, self.frames, rng)]
        times = np.arange(n_frames) / fps
        span = times[-1]
        interval = self._interval(span)
        room = max(span - interval * self.frames, 0.0)
        count = max(1, int(span // self.window_s))
        if rng is not None:
            starts = np.sort(rng.uniform(0.0, room, count))
        else:
            starts = np.linspace(0.0, room, count) if count > 1 else np.array([room / 2])
        offsets = interval * np.arange(self.frames + 1)
        return [nearest(times, start + offsets) for start in starts]

    def eval_indices(self, n_frames: int, fps: float) -> list[np.ndarray]:
        """Evaluation windows of one clip: the device's grid from the clip's first frame, one every ``hop`` samples."""
        if self.method == "spread":
            return [sample_indices(n_frames, self.frames)]
        times = np.arange(n_frames) / fps
        interval = self._interval(times[-1])
        return grid_windows(times, interval, self.frames, self.hop)[0]

    def manifest(self, clips: list[tuple[int, float]]) -> dict[str, float | str]:
        """The manifest's ``sampling`` from the training clips' (frame count, fps): what the device reproduces."""
        if self.method == "interval":
            shortest = min((n - 1) / fps for n, fps in clips)
            return {"method": "interval", "frame_interval_s": self.interval_s, "window_s": self.window_s,
                    "interval_min_s": self._interval(shortest), "interval_max_s": self.interval_s}
        intervals = np.array([n / fps / self.frames for n, fps in clips])
        median = float(np.median(intervals))
        return {"method": "spread", "frame_interval_s": median, "window_s": median * self.frames,
                "interval_min_s": float(intervals.min()), "interval_max_s": float(intervals.max())}


def grid_windows(
    timestamps: np.ndarray, interval: float, frames: int, hop: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Windows of ``frames + 1`` samples on a fixed time grid over a stream, one every ``hop`` samples.

    Returns each window's frame indices and the timestamp of its newest frame (the prediction's ``ts``
    on the device). The grid starts at the first frame and never moves, as in edge.stages.sampler.
    """
    targets = np.arange(timestamps[0], timestamps[-1] + _EPS, interval)
    samples = nearest(timestamps, targets)
    starts = range(0, len(samples) - frames, hop)
    windows = [samples[s:s + frames + 1] for s in starts]
    return windows, np.array([timestamps[w[-1]] for w in windows], dtype=np.float64)
