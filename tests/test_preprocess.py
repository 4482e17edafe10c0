"""Training and serving prepare frames identically: the dataset loader against the device's functions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from converter import dataset as ds
from edge.preprocess import (
    PREPROCESS_VERSION,
    SUPPORTED_PREPROCESS_VERSIONS,
    FrameError,
    channels_for,
    decode_jpeg,
    halve,
    jpeg_size,
    model_input,
    model_size,
    prepare_frame,
    reads_grey,
    shrink,
    spread_indices,
    window_inputs,
)
from edge.synthetic import render_clip, write_video
from tests.media import read_frames


@pytest.fixture()
def video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "calm" / "clip.mp4", render_clip("fight", 33, 96, 72, np.random.default_rng(4)), 25)


@pytest.mark.parametrize("representation", ["rgb", "diff", "rgb+diff", "normal-flow-8"])
def test_training_window_equals_the_device_path_bit_for_bit(video: Path, tmp_path: Path, representation: str) -> None:
    """From the camera's BGR frames: the converter's cached frames and windows are the device's, grey or colour."""
    grey = reads_grey(representation, PREPROCESS_VERSION)
    assert grey == (representation == "normal-flow-8")
    clip = ds.Clip(video, "calm", "g")
    decoded, fresh = ds.load_clip(clip, 64, 64, tmp_path / "cache", grey=grey)
    cached, fresh_again = ds.load_clip(clip, 64, 64, tmp_path / "cache", grey=grey)
    assert fresh and not fresh_again
    raw, _ = read_frames(video)
    idx = spread_indices(len(raw), 21)
    device = window_inputs([prepare_frame(raw[i], 64, 64, grey=grey) for i in idx], representation)  # type: ignore[arg-type]
    for item in (decoded, cached):
        assert item.frames.shape[1:] == ((64, 64) if grey else (64, 64, 3))
        training = ds.window(item, 20, representation)  # type: ignore[arg-type]
        assert training.dtype == np.float32
        shape = (channels_for(representation),) if grey else (64, 64, channels_for(representation))  # type: ignore[arg-type]
        assert training.shape == (20, *shape)
        assert np.array_equal(training, device)


def test_diff_of_the_first_stream_frame_is_zero_motion() -> None:
    frame = np.full((8, 8, 3), 0.5, np.float32)
    assert not model_input(frame, None, "diff").any()


def test_prepare_frame_accepts_camera_oddities_and_rejects_garbage() -> None:
    gray = np.full((48, 64), 200, np.uint8)
    bgra = np.zeros((48, 64, 4), np.uint8)
    assert prepare_frame(gray, 32, 32).shape == (32, 32, 3)
    assert prepare_frame(bgra, 32, 32).shape == (32, 32, 3)
    with pytest.raises(FrameError, match="empty"):
        prepare_frame(np.zeros((0, 0, 3), np.uint8), 32, 32)
    with pytest.raises(FrameError, match="dtype"):
        prepare_frame(np.zeros((4, 4, 3), np.float32), 32, 32)


def test_jitter_stays_in_the_clip_and_in_time_order() -> None:
    rng = np.random.default_rng(0)
    base = ds.sample_indices(142, 20)
    moved_any = False
    for _ in range(50):
        idx = ds.sample_indices(142, 20, rng)
        assert idx.min() >= 0 and idx.max() <= 141 and np.all(np.diff(idx) >= 0)
        assert np.abs(idx - base).max() <= (141 / 20) // 2
        moved_any |= not np.array_equal(idx, base)
    assert moved_any


def test_flip_mirrors_the_window(video: Path, tmp_path: Path) -> None:
    item, _ = ds.load_clip(ds.Clip(video, "calm", "g"), 32, 32, None)
    plain = ds.window(item, 20, "rgb")
    flipped = [ds.window(item, 20, "rgb", np.random.default_rng(s), "flip") for s in range(8)]
    assert any(np.array_equal(w, plain[:, :, ::-1]) for w in flipped)
    assert any(np.array_equal(w, plain) for w in flipped)


@pytest.mark.parametrize("shape", [(360, 640, 3), (720, 1280, 3), (361, 479, 3), (240, 320, 3), (130, 64, 3),
                                   (64, 64, 3), (1080, 1920)])
@pytest.mark.parametrize("version", SUPPORTED_PREPROCESS_VERSIONS)
def test_each_shrink_stays_close_to_one_area_pass(shape: tuple[int, ...], version: int) -> None:
    """Version 2's whole-factor area filter and version 3's bilinear-then-average both smooth like an area
    filter: on a natural-looking frame, within a few levels of one INTER_AREA pass, at any camera size."""
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 3)
    fast = model_size(smooth, 64, 64, version).astype(np.float32)
    reference = cv2.resize(smooth, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert fast.shape == (64, 64, *shape[2:])
    assert np.abs(fast - reference).mean() < 2.0


def test_each_version_prepares_frames_its_own_way() -> None:
    """A bundle's frames are prepared as it was trained: version 2 with the area filter, 3 with halvings
    first (the area filter's way under twice the model's size), 4 as 3 in colour but, for a model that
    reads grey, grey before the last step (and only from v4 on); other versions are refused."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    v2, v3, v4 = (np.rint(prepare_frame(frame, 64, 64, v) * 255).astype(np.uint8) for v in (2, 3, 4))
    assert np.array_equal(cv2.cvtColor(v2, cv2.COLOR_RGB2BGR), shrink(frame, 64, 64))
    assert np.array_equal(cv2.cvtColor(v3, cv2.COLOR_RGB2BGR), shrink(halve(frame, 64, 64), 64, 64))
    assert not np.array_equal(v2, v3) and np.array_equal(v3, v4)
    grey = np.rint(prepare_frame(frame, 64, 64, 4, grey=True) * 255).astype(np.uint8)
    assert np.array_equal(grey, shrink(cv2.cvtColor(halve(frame, 64, 64), cv2.COLOR_BGR2GRAY), 64, 64))
    assert np.abs(grey.astype(int) - cv2.cvtColor(v3, cv2.COLOR_RGB2GRAY)).max() <= 1  # rounding's order only
    assert np.array_equal(prepare_frame(frame, 64, 64, 3, grey=True), prepare_frame(frame, 64, 64, 3))
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(prepare_frame(bgra, 64, 64, grey=True), prepare_frame(frame, 64, 64, grey=True))
    ir = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)  # a camera's grey (IR) mode
    assert prepare_frame(ir, 64, 64, grey=True).shape == (64, 64)
    assert prepare_frame(ir, 64, 64, 3, grey=True).shape == (64, 64, 3)
    assert np.array_equal(prepare_frame(frame, 64, 64), prepare_frame(frame, 64, 64, PREPROCESS_VERSION))
    small = frame[:100, :120]
    assert halve(small, 64, 64) is small
    with pytest.raises(ValueError, match="preprocessing version 1 is not one of"):
        prepare_frame(frame, 64, 64, 1)


def test_changed_fraction_tells_movement_from_a_new_picture() -> None:
    from edge.preprocess import changed_fraction

    rng = np.random.default_rng(0)
    scene = rng.uniform(0.2, 0.8, (64, 64, 3)).astype(np.float32)
    moved = scene.copy()
    moved[10:30, 10:30] = rng.uniform(0.0, 1.0, (20, 20, 3))  # someone moving in a tenth of the picture
    assert changed_fraction(moved, scene) < 0.1
    assert changed_fraction(scene * 0.25, scene) > 0.9  # the lights went down
    assert changed_fraction(scene, scene) == 0.0


def test_changed_fraction_equals_the_plain_formula() -> None:
    """The cheaper steps (one-pass difference, channel maximum over slices, a count) give exactly the plain
    formula's number, for 1, 3 and 6 channels, with differences spread widely and crowded at the threshold."""
    from edge.preprocess import SCENE_PIXEL_DELTA, changed_fraction

    rng = np.random.default_rng(3)
    for shape in ((64, 64), (64, 64, 1), (64, 64, 3), (32, 48, 6)):
        a = rng.random(shape, dtype=np.float32)
        near = a + rng.uniform(SCENE_PIXEL_DELTA - 1e-6, SCENE_PIXEL_DELTA + 1e-6, shape).astype(np.float32)
        for b in (rng.random(shape, dtype=np.float32), near):
            delta = np.abs(a - b)
            plain = delta if delta.ndim == 2 else delta.max(axis=-1)
            fraction = changed_fraction(a, b)
            assert fraction == float(np.mean(plain > SCENE_PIXEL_DELTA)) and type(fraction) is float


@pytest.mark.parametrize(("size", "needed", "decoded"), [
    ((640, 360), (64, 64), (160, 90)),  # 1/4: still at least the model's input
    ((1920, 1080), (64, 64), (240, 135)),  # 1/8
    ((640, 360), (1280, 720), (640, 360)),  # snapshots want all of it
    ((1920, 1080), (1280, 720), (1920, 1080)),
    ((3840, 2160), (1280, 720), (1920, 1080)),
])
def test_a_jpeg_is_decoded_at_the_smallest_size_that_serves(size: tuple[int, int], needed: tuple[int, int],
                                                           decoded: tuple[int, int]) -> None:
    image = cv2.resize(render_clip("calm", 1, 320, 180, np.random.default_rng(0))[0], size)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    assert jpeg_size(data) == size
    out = decode_jpeg(data, *needed)
    assert out is not None and (out.shape[1], out.shape[0]) == decoded
    # What was decoded is the picture, smaller: a full decode shrunk to the same size is close to it.
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    full = cv2.resize(full, decoded, interpolation=cv2.INTER_AREA)
    assert np.abs(full.astype(int) - out).mean() < 3


def test_what_is_not_a_jpeg_decodes_to_nothing() -> None:
    assert decode_jpeg(b"\xff\xd8 not a jpeg", 64, 64) is None
    assert jpeg_size(b"GIF89a") is None
