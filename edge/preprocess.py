"""Frame to model input: the one place training and serving turn pixels into tensors.

The converter's dataset loader and the device's sampler both call these functions, so the
representation a model was trained on (`rgb`, `diff`, `rgb+diff`, `flow`, `normal-flow`,
`normal-flow-8`) cannot drift between the two.
A window is built from ``frames + 1`` sampled frames so that every one of the ``frames`` model
inputs has a predecessor at the same spacing: frame differences are then defined for the first
input too, on a training clip exactly as on a live stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import cv2
import numpy as np

Representation = Literal["rgb", "diff", "rgb+diff", "flow", "normal-flow", "normal-flow-8"]
REPRESENTATIONS: tuple[str, ...] = get_args(Representation)
# Representations whose model input per frame is a vector of motion statistics, not an image: the
# motion field each reads (see ``flow_features``) and whether it keeps all of ``FLOW_FEATURES`` (else
# ``LEAN_FLOW_FEATURES``).
_MOTION: dict[str, tuple[Literal["farneback", "normal"], bool]] = {
    "flow": ("farneback", True), "normal-flow": ("normal", True), "normal-flow-8": ("normal", False),
}
MOTION_REPRESENTATIONS: tuple[str, ...] = tuple(_MOTION)
SCALE = 1.0 / 255.0
SCENE_PIXEL_DELTA = 0.1  # on the 0..1 scale: a pixel counts as changed beyond this (see changed_fraction)
# Bumped whenever prepare_frame's output changes: bundles record it, the converter's decode cache is
# keyed on it, and the converter trains with the newest. The device prepares frames the way each
# bundle was trained and refuses the versions it no longer has (1: before the version was recorded).
# 2: ``shrink``'s area filter by a whole factor; 3: ``halve``'s halvings first (see there), half the cost;
# 4: a motion representation's frames are made grey before the last shrinking step (``reads_grey``);
# the other representations' frames are v3's.
PREPROCESS_VERSION = 4
SUPPORTED_PREPROCESS_VERSIONS = (2, 3, 4)
GREY_FROM_VERSION = 4  # the first version whose frames are grey for a model that reads grey


class FrameError(ValueError):
    """A frame that cannot be turned into a model input (empty, wrong shape or type)."""


def channels_for(representation: Representation) -> int:
    """Number of input channels a representation produces (for a motion one, the length of its feature vector)."""
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation {representation!r} is not one of {', '.join(REPRESENTATIONS)}")
    if representation in MOTION_REPRESENTATIONS:
        return len(flow_feature_names(representation))
    return 6 if representation == "rgb+diff" else 3


def input_shape(representation: Representation, height: int, width: int) -> tuple[int, ...]:
    """Shape of one model input: an image (H x W x C), or for a motion representation a feature vector."""
    channels = channels_for(representation)
    return (channels,) if representation in MOTION_REPRESENTATIONS else (height, width, channels)


def reads_grey(representation: str, version: int) -> bool:
    """Whether a model's frames are prepared grey (H x W): the motion representations read brightness alone.

    From preprocessing v4 on, such a frame is made grey once it is within twice the model's size,
    so the last, non-whole-factor area step (the costliest of the shrinking), the float conversion and
    the comparisons between frames each touch one channel instead of three, and the flow's grey
    image is no longer made from a colour one twice per frame pair: 0.08 ms less per sampled frame
    at 320x240, 0.17 ms at 1280x720 (docs/performance.md). Earlier versions keep their colour frames.
    """
    return version >= GREY_FROM_VERSION and representation in _MOTION


def prepare_frame(frame: np.ndarray, height: int, width: int, version: int = PREPROCESS_VERSION,
                  grey: bool = False) -> np.ndarray:
    """Turn an OpenCV frame (BGR, BGRA or grayscale, uint8) into float32 in 0..1 at the model size: RGB
    (H x W x 3), or with ``grey`` (``reads_grey``) its brightness (H x W).

    Cameras deliver odd frames (grayscale IR modes, BGRA from some MJPEG decoders, a 1x1 glitch
    after a reconnect); converting them here keeps every caller honest and gives one clear error
    for what cannot be converted. The frame is shrunk before its colours are converted, so the
    conversion touches few pixels instead of a whole camera frame.
    """
    if not isinstance(frame, np.ndarray) or frame.size == 0:
        raise FrameError("frame is empty")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4))):
        raise FrameError(f"frame has shape {frame.shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame has dtype {frame.dtype}; expected uint8")
    grey = grey and version >= GREY_FROM_VERSION
    small = model_size(frame, height, width, version, grey)
    if not (grey and small.ndim == 2):
        small = cv2.cvtColor(small, _TO_RGB[small.shape[2] if small.ndim == 3 else 1])
    return small.astype(np.float32) * np.float32(SCALE)


# cv2.cvtColor codes from a frame's channel count (1: grey) to RGB and to grey.
_TO_RGB = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
_TO_GREY = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}


def model_size(frame: np.ndarray, height: int, width: int, version: int = PREPROCESS_VERSION,
               grey: bool = False) -> np.ndarray:
    """The frame at the model's size, shrunk the way preprocessing ``version`` does (and made grey on the
    way when ``grey`` and the version does so, see ``reads_grey``)."""
    if version not in SUPPORTED_PREPROCESS_VERSIONS:
        raise ValueError(f"preprocessing version {version} is not one of {SUPPORTED_PREPROCESS_VERSIONS}")
    if version < 3:
        return shrink(frame, height, width)
    frame = halve(frame, height, width)
    if grey and version >= GREY_FROM_VERSION and frame.ndim == 3:
        frame = cv2.cvtColor(frame, _TO_GREY[frame.shape[2]])
    return shrink(frame, height, width)


def shrink(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Anti-aliased resize to ``width x height``, about 3x cheaper than one INTER_AREA pass.

    OpenCV's area filter is fast only for whole-number ratios and costs about a millisecond for a
    640x360 frame otherwise, which on a Pi would rival decoding itself. So the frame is first
    shrunk by the largest whole factor that keeps it at least as large as the target (cropping
    the few rows and columns that do not divide, at most factor - 1), then area-filtered the rest
    of the way from a small image.
    """
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    factor = min(h // height, w // width)
    if factor >= 2:
        rows, cols = (h // factor), (w // factor)
        frame = cv2.resize(frame[: rows * factor, : cols * factor], (cols, rows), interpolation=cv2.INTER_AREA)
        h, w = rows, cols
    if (h, w) == (height, width):
        return frame
    shrinking = h >= height and w >= width
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def halve(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Preprocessing v3's first steps: a 2x2 area average while the frame stays at least twice the model's
    size (``model_size`` then ``shrink``s the rest of the way).

    OpenCV's area filter by a whole factor is vectorised only for a factor of 2; any other factor
    (5 for 640x360 to 64x64, 11 for 1280x720) runs a scalar loop over every pixel of the camera
    frame: 0.32 ms at 640x360 and 0.83 ms at 1280x720 on this x86 core, against 0.16 / 0.52 ms in
    halvings. Each halving averages whole 2x2 blocks, so the result is an area filter as before,
    over slightly different footprints (a mean of 1 level from ``shrink``'s at 640x360). A
    bilinear step to twice the size instead (0.06 ms at any size) aliases fine detail into motion:
    trained on it, the model's event-level balanced accuracy on the worst unseen source fell from
    0.679 to 0.606 (README, "The shipped model").
    """
    h, w = frame.shape[:2]
    while h >= 2 * height and w >= 2 * width:
        h, w = h // 2, w // 2
        frame = cv2.resize(frame[: 2 * h, : 2 * w], (w, h), interpolation=cv2.INTER_AREA)
    return frame


SNAPSHOT_MAX = (1280, 720)  # width, height: the largest picture a chain keeps of a frame (for snapshots)


def bound_frame(image: np.ndarray, height: int, width: int, version: int = PREPROCESS_VERSION,
                grey: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(picture to keep, model-size image or None) for a decoded frame, so memory does not follow the camera.

    A frame larger than ``SNAPSHOT_MAX`` is replaced right after decoding by a copy shrunk by a whole
    factor to fit it (for the snapshot) and by ``model_size(image, height, width, version, grey)``, which is
    exactly what ``prepare_frame`` would compute from the full frame first: ``prepare_frame`` of it is the same
    model input, bit for bit. A 4K frame is 25 MB; a chain holds several (the sampler's candidates,
    the last windows' frames, an incident's peak), so it would otherwise cost hundreds of MB.
    Smaller frames are kept as they are.
    """
    h, w = image.shape[:2]
    max_w, max_h = SNAPSHOT_MAX
    if (h <= max_h and w <= max_w) or image.size == 0:
        return image, None
    factor = max(math.ceil(h / max_h), math.ceil(w / max_w))
    kept = cv2.resize(image, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    return kept, model_size(image, height, width, version, grey)


# OpenCV decodes a JPEG at 1/2, 1/4 or 1/8 of its size for a fraction of the cost (the IDCT skips
# the high frequencies a smaller picture cannot show).
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
# JPEG start-of-frame markers (the frame header with the picture's size): SOF0..SOF15 but DHT, JPG, DAC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, without decoding it; None when it has none."""
    i = 2  # after SOI
    while i + 9 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in _SOF:
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def decode_jpeg(data: bytes, width: int, height: int) -> np.ndarray | None:
    """A JPEG as BGR, decoded at the smallest of 1/8, 1/4, 1/2 or full size still at least ``width x height``.

    An MJPEG camera's frames are whole JPEGs, so the ones the sampler skips need not be decoded at
    all and the ones it takes need only be as large as the model input (or a snapshot). None when
    the data is not a decodable JPEG.
    """
    size = jpeg_size(data)
    flag = cv2.IMREAD_COLOR
    if size is not None:
        flag = next((f for k, f in _REDUCED if size[0] // k >= width and size[1] // k >= height), flag)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    return image if image is not None and image.size else None


def model_input(current: np.ndarray, previous: np.ndarray | None, representation: Representation) -> np.ndarray:
    """One model input (HxWxC float32) from a prepared frame and the prepared frame sampled before it.

    ``previous`` is None only for the very first frame of a stream; its difference is then zero,
    which reads as "no motion" rather than inventing any.
    """
    if representation == "rgb":
        return current
    if representation in _MOTION:
        field, full = _MOTION[representation]
        return flow_features(current, previous, field, full)
    diff = np.zeros_like(current) if previous is None else np.abs(current - previous)
    if representation == "diff":
        return diff
    if representation == "rgb+diff":
        return np.concatenate([current, diff], axis=-1)
    raise ValueError(f"representation {representation!r} is not one of {', '.join(REPRESENTATIONS)}")


# Optical-flow statistics that do not grow with how large or near the people are, only with how the
# motion is organised: a fight moves limbs every which way at once (high direction entropy, low
# coherence), walking people and traffic move one way. Measured on fight-surv and VioPeru (issue 10):
# direction entropy alone gives AUC 0.68 / 0.66 in each source with the same sign, where the amount of
# motion (which the `diff` models learn) gives 0.72 / 0.56 and does not transfer between them.
FLOW_FEATURES = (
    "entropy80", "coherence80", "entropy90", "coherence90", "entropy97", "coherence97",
    "concentration", "peakiness", "disorder", "block_entropy", "block_coherence",
)
# ``normal-flow-8``: the whole frame's direction statistics and how concentrated its motion is, without
# the last three (disorder and the busiest block's pair), which cost about half of the statistics' time.
# Measured across sources, the model trained on these eight is as good on unseen cameras as the one
# on all eleven (README, "The shipped model"); the others stay for the bundles trained on them.
LEAN_FLOW_FEATURES = FLOW_FEATURES[:8]
FLOW_MIN_PX = 0.1  # flow below this many pixels is noise, never "moving"
NORMAL_FLOW_BLUR = 5  # Gaussian kernel (pixels) before the gradients: 64x64 frames are blocky after JPEG/H.264
# Squared gradient (grey levels per pixel) added under normal flow's division. Screened at 25-400 on
# both sources (README, "What was measured on the way"); 100: gradients under ~10 levels a pixel are damped.
NORMAL_FLOW_EPS = 100.0
_FLOW_BINS = 8
_QUANTILES = (80, 90, 97)  # of flow magnitude: above each, a pixel counts as moving for one pair of statistics


def _direction_stats(fx: np.ndarray, fy: np.ndarray, mag: np.ndarray, thresholds: Sequence[float]) -> list[float]:
    """(direction entropy 0..1, coherence 0..1) of the pixels moving at least each of ``thresholds``.

    Weighted by how far the pixels moved. Nothing moving reads as one coherent direction (0, 1):
    calm, not chaos. ``thresholds`` ascend, so each set of moving pixels lies within the one before:
    the angles, bins and weights are computed once, for the widest set, and the narrower sets are
    picked out of those (most of this function's cost is numpy's per-call overhead on a few hundred
    pixels). Selection keeps the pixels' order, so every sum adds the same numbers in the same order
    as when each set was taken from the whole frame: the statistics are bit-identical.
    """
    moving = mag >= thresholds[0]
    mx, my, mm = fx[moving], fy[moving], mag[moving]
    angle = np.arctan2(my, mx)
    bins = ((angle + np.pi) * (_FLOW_BINS / (2 * np.pi))).astype(np.int64) % _FLOW_BINS
    out: list[float] = []
    for i, threshold in enumerate(thresholds):
        if i:
            keep = mm >= threshold
            mx, my, mm, bins = mx[keep], my[keep], mm[keep], bins[keep]
        if not mm.size:
            out += [0.0, 1.0]
            continue
        hist = np.bincount(bins, weights=mm, minlength=_FLOW_BINS)
        p = hist / (hist.sum() + 1e-6)
        out.append(float(-(p * np.log(p + 1e-9)).sum() / np.log(_FLOW_BINS)))
        out.append(float(np.hypot((mx * mm).sum(), (my * mm).sum()) / ((mm * mm).sum() + 1e-6)))
    return out


def _sorted_percentiles(ordered: np.ndarray, percents: int | Sequence[int]) -> list[float]:
    """``np.percentile(ordered, percents)`` of an ascending 1-D float array with no NaN, as floats.

    (Flow magnitudes have none: the flow of two uint8 images is finite.) numpy's default (linear)
    method with numpy's own arithmetic, so the levels are bit-identical to numpy's (checked in
    tests/test_flow.py, in numpy 2 and numpy 1): the neighbours' difference in the array's dtype,
    interpolated from the nearer neighbour, and weighted in float64 for a sequence of percents but
    by a Python float for a single one (which numpy 2 computes in the array's dtype, numpy 1 in
    float64; so does this). numpy would partition the already sorted array again and set up its
    general machinery for each call: 0.08-0.1 ms, more than all but one of the flow statistics.
    """
    single = isinstance(percents, int)
    last = ordered.size - 1
    levels: list[float] = []
    for percent in [percents] if single else percents:
        virtual = last * (percent / 100)
        if virtual >= last:
            levels.append(float(ordered[-1]))
            continue
        below = math.floor(virtual)
        weight = virtual - below if single else np.float64(virtual - below)
        a, b = ordered[below], ordered[below + 1]
        step = b - a
        levels.append(float(b - step * (1 - weight) if weight >= 0.5 else a + step * weight))
    return levels


def _grey(prepared: np.ndarray) -> np.ndarray:
    """A prepared frame (float 0..1, exactly uint8 / 255) back to the uint8 grey image flow runs on."""
    image = np.rint(prepared * 255.0).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def normal_flow(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) normal flow between two uint8 grey frames: each pixel's motion along its brightness gradient.

    The brightness-constancy equation alone, ``-dI/dt * grad I / |grad I|^2``, per pixel: no search
    and no smoothing across pixels, so it costs about a tenth of Farneback at 64x64 (0.06 against
    0.63 ms on this x86 core). Its directions are the moving edges' normals, so limbs swinging every
    which way still give a spread of directions and a walker's outline one main direction; that
    is what the statistics of ``flow_features`` read. ``NORMAL_FLOW_EPS`` damps pixels with little
    gradient (flat walls, compression noise), where the equation divides by nearly nothing.
    """
    kernel = (NORMAL_FLOW_BLUR, NORMAL_FLOW_BLUR)
    a = cv2.GaussianBlur(previous.astype(np.float32), kernel, 0)
    b = cv2.GaussianBlur(current.astype(np.float32), kernel, 0)
    mean = 0.5 * (a + b)
    change = b - a
    ix = cv2.Sobel(mean, cv2.CV_32F, 1, 0, ksize=3) / np.float32(8)  # grey levels per pixel
    iy = cv2.Sobel(mean, cv2.CV_32F, 0, 1, ksize=3) / np.float32(8)
    damped = ix * ix + iy * iy + np.float32(NORMAL_FLOW_EPS)
    return -change * ix / damped, -change * iy / damped


def flow_feature_names(representation: Representation) -> tuple[str, ...]:
    """The statistics a motion representation's input vector holds, in order."""
    return FLOW_FEATURES if _MOTION[representation][1] else LEAN_FLOW_FEATURES


def flow_features(current: np.ndarray, previous: np.ndarray | None,
                  field: Literal["farneback", "normal"] = "farneback", full: bool = True) -> np.ndarray:
    """How the motion between two prepared frames is organised, as float32 numbers: ``FLOW_FEATURES``,
    or without ``full`` the first eight of them (``LEAN_FLOW_FEATURES``: the same values, cheaper).

    The motion field is dense Farneback flow (``flow``) or the normal flow (``normal-flow``, see
    ``normal_flow``) of the grey model-size frames; each statistic is a ratio or a distribution
    shape, so a camera that sees people twice as large (or twice as far) gives about the same values.
    Deterministic for the same input, so training and the device compute the same vector. With no
    previous frame the flow is taken as zero: "no motion" rather than any invented.
    """
    if previous is None:
        fx = fy = np.zeros(current.shape[:2], np.float32)
    elif field == "normal":
        fx, fy = normal_flow(_grey(previous), _grey(current))
    else:
        flow = cv2.calcOpticalFlowFarneback(_grey(previous), _grey(current), None, 0.5, 2, 9, 2, 5, 1.1, 0)
        fx, fy = flow[..., 0], flow[..., 1]
    mag = np.hypot(fx, fy)
    ordered = np.sort(mag, axis=None)  # sorted once: the quantiles below are then read off it
    thresholds = [max(level, FLOW_MIN_PX) for level in _sorted_percentiles(ordered, _QUANTILES)]
    out = _direction_stats(fx, fy, mag, thresholds)
    top = ordered[-max(1, ordered.size // 20):]
    out += [float(top.sum() / (ordered.sum() + 1e-6)), float(np.log1p(top.mean() / (ordered.mean() + 1e-3)))]
    if not full:
        return np.asarray(out, dtype=np.float32)
    moving = mag >= thresholds[_QUANTILES.index(90)]
    if moving.any():  # the moving pixels' flow against its local mean (subtracted pixel by pixel: only theirs)
        bx, by = cv2.blur(fx, (5, 5)), cv2.blur(fy, (5, 5))
        residual = np.hypot(fx[moving] - bx[moving], fy[moving] - by[moving])
        out.append(float(residual.mean() / (mag[moving].mean() + 1e-3)))
    else:
        out.append(0.0)
    k = max(mag.shape[0] // 6, 8)
    cy, cx = np.unravel_index(int(np.argmax(cv2.blur(mag, (k, k)))), mag.shape)
    block = (slice(max(0, cy - k // 2), cy + k // 2), slice(max(0, cx - k // 2), cx + k // 2))
    bm = mag[block]
    median = _sorted_percentiles(np.sort(bm, axis=None), 50)[0]
    out += _direction_stats(fx[block], fy[block], bm, [max(median, FLOW_MIN_PX)])
    return np.asarray(out, dtype=np.float32)


def changed_fraction(current: np.ndarray, previous: np.ndarray) -> float:
    """Share of pixels where some channel moved by more than ``SCENE_PIXEL_DELTA`` between two prepared frames.

    Movement in a scene changes part of the picture; a light switched on, a camera's day/night switch
    or a camera that was moved changes nearly all of it at once (measured on fight-surv: at most 0.57
    between sampled frames inside any of the 300 clips, fights included; 0.63 or more at 99 % of the
    cuts between two clips).

    This runs on every sampled frame of every camera, so each step is the cheapest that gives the
    same number: the channel maximum with ``np.maximum`` over channel slices (``.max(axis=-1)``
    reduces over a 3-long innermost axis about 8x slower: 140 us a frame at 64x64, issue 14), the
    difference in one pass (``cv2.absdiff``, the same floats as ``np.abs(current - previous)``) and
    the share as a count (``np.mean`` of a boolean array sums it as float64 first): 12 us a grey
    64x64 pair before, 5 us after.
    """
    delta = cv2.absdiff(current, previous)
    if delta.ndim == 3:
        strongest = delta[..., 0]
        for channel in range(1, delta.shape[-1]):
            strongest = np.maximum(strongest, delta[..., channel])
        delta = strongest
    return int(np.count_nonzero(delta > SCENE_PIXEL_DELTA)) / delta.size


def spread_indices(n_frames: int, count: int) -> np.ndarray:
    """Indices of ``count`` frames spread evenly over a clip of ``n_frames`` (the paper's sampling)."""
    if n_frames < 1:
        raise ValueError("a clip needs at least one frame")
    return np.linspace(0, n_frames - 1, count).round().astype(np.int64)


def window_inputs(prepared: Sequence[np.ndarray], representation: Representation) -> np.ndarray:
    """Model inputs (T x H x W x C) from ``T + 1`` prepared frames: each frame with its predecessor."""
    if len(prepared) < 2:
        raise ValueError("a window needs at least two sampled frames (each input has a predecessor)")
    return np.stack([model_input(prepared[i], prepared[i - 1], representation) for i in range(1, len(prepared))])
