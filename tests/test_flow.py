"""The motion representations (``flow``, ``normal-flow``, ``normal-flow-8``): what their statistics
measure, and that training and the device compute the same.

Flow statistics were chosen because they describe how motion is organised rather than how much of
it a camera sees (issue 10); the unit tests pin that property on controlled motion, for Farneback's
flow and for the normal flow alike, the rest prove the converter's windows equal the device's and
that a flow bundle runs in both runtimes.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from converter import dataset as ds
from converter.runs import find_run, held_out
from converter.sampling import WindowSampling
from edge.adapters.runtime import BundleModel
from edge.bundle import read_manifest
from edge.preprocess import (
    FLOW_FEATURES,
    LEAN_FLOW_FEATURES,
    SCALE,
    _grey,
    flow_feature_names,
    flow_features,
    input_shape,
    model_input,
    normal_flow,
    window_inputs,
)
from tests.fixtures_models import tflite_python

ENTROPY, COHERENCE = FLOW_FEATURES.index("entropy90"), FLOW_FEATURES.index("coherence90")


def _texture(size: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (float RGB 0..1) that optical flow can follow."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    grey = np.rint(noise * 255.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2).astype(np.float32) * np.float32(SCALE)


Region = tuple[slice, slice]


def _moved(image: np.ndarray, shifts: list[tuple[Region, tuple[int, int]]]) -> np.ndarray:
    """``image`` with each region replaced by the texture shifted by (dy, dx) pixels: rigid motion per region."""
    out = image.copy()
    for region, (dy, dx) in shifts:
        out[region] = np.roll(image, (dy, dx), axis=(0, 1))[region]
    return out


FIELDS = ["farneback", "normal"]


@pytest.mark.parametrize("field", FIELDS)
def test_no_previous_frame_reads_as_no_motion(field: str) -> None:
    first = flow_features(_texture(64), None, field)  # type: ignore[arg-type]
    assert first.shape == (len(FLOW_FEATURES),) and first.dtype == np.float32
    assert (first[ENTROPY], first[COHERENCE]) == (0.0, 1.0)


# (field, walking's least coherence): normal flow points along each edge's normal, so one motion
# spreads over the directions within 90 degrees of it and is less coherent than Farneback's.
@pytest.mark.parametrize(("field", "coherent"), [("farneback", 0.9), ("normal", 0.7)])
def test_one_way_motion_is_coherent_and_opposed_motions_are_not(field: str, coherent: float) -> None:
    frame = _texture(64)
    whole = (slice(None), slice(None))
    walking = flow_features(_moved(frame, [(whole, (0, 2))]), frame, field)  # type: ignore[arg-type]
    quads = [((slice(0, 32), slice(0, 32)), (2, 0)), ((slice(0, 32), slice(32, 64)), (0, -2)),
             ((slice(32, 64), slice(0, 32)), (-2, 0)), ((slice(32, 64), slice(32, 64)), (0, 2))]
    scuffle = flow_features(_moved(frame, quads), frame, field)  # type: ignore[arg-type]
    assert walking[COHERENCE] > coherent
    assert scuffle[COHERENCE] < 0.2 and scuffle[ENTROPY] > walking[ENTROPY] + 0.3


@pytest.mark.parametrize("field", FIELDS)
def test_statistics_barely_change_with_the_size_of_the_motion(field: str) -> None:
    """The point of the representation: twice the movement (a nearer person) is not a different scene."""
    frame = _texture(64, seed=3)
    whole = (slice(None), slice(None))
    near = flow_features(_moved(frame, [(whole, (0, 3))]), frame, field)  # type: ignore[arg-type]
    far = flow_features(_moved(frame, [(whole, (0, 1))]), frame, field)  # type: ignore[arg-type]
    assert abs(near[ENTROPY] - far[ENTROPY]) < 0.15
    assert abs(near[COHERENCE] - far[COHERENCE]) < 0.1


def test_normal_flow_follows_the_motion_and_is_zero_without_it() -> None:
    frame = _grey(_texture(64, seed=5))
    right = np.roll(frame, 2, axis=1)
    fx, fy = normal_flow(frame, right)
    assert fx.dtype == fy.dtype == np.float32 and fx.shape == fy.shape == (64, 64)
    assert fx.mean() > 0.3 and abs(fy.mean()) < 0.1 * fx.mean()  # rightwards, on average
    fx, fy = normal_flow(frame, np.roll(frame, -2, axis=0))
    assert fy.mean() < -0.3 and abs(fx.mean()) < 0.1 * -fy.mean()  # upwards
    still = normal_flow(frame, frame)
    assert not still[0].any() and not still[1].any()
    flat = np.full((64, 64), 90, np.uint8)
    lit = normal_flow(flat, flat + 40)  # a light switched on over a bare wall: no edge, no motion
    assert not lit[0].any() and not lit[1].any()


# Run in each numpy the daemon supports (numpy 2 here, numpy 1 in the tflite-runtime environment): a
# single percent is interpolated in the array's dtype by one and in float64 by the other.
_PERCENTILES_MATCH_NUMPY = """
import numpy as np
from edge.preprocess import _sorted_percentiles
rng = np.random.default_rng(0)
for size in (1, 2, 3, 25, 100, 4096):
    for draw in range(50):
        values = rng.gamma(0.5, 2.0, size).astype(np.float32)
        values[rng.random(size) < 0.3] = 0.0  # ties, as still pixels give
        ordered = np.sort(values)
        for percents in (80, 50, 97, 100, (80, 90, 97), (0, 50, 100)):
            want = np.atleast_1d(np.percentile(ordered, percents)).tolist()
            assert _sorted_percentiles(ordered, percents) == want, (size, draw, percents)
"""


@pytest.mark.parametrize("environment", ["ai-edge-litert", "tflite-runtime"])
def test_quantile_levels_are_numpys_bit_for_bit(environment: str) -> None:
    """flow_features reads its quantiles off the sorted magnitudes; they must stay numpy's exactly."""
    python = sys.executable if environment == "ai-edge-litert" else tflite_python()
    if python is None:
        pytest.skip("RCLSTM_TFLITE_PYTHON is not set (the tflite-runtime 2.14 environment)")
    done = subprocess.run([str(python), "-c", _PERCENTILES_MATCH_NUMPY], capture_output=True, text=True,
                          check=False, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr


def test_disorder_is_the_plain_formula_bit_for_bit() -> None:
    """The disorder statistic subtracts the local mean flow at the moving pixels only; that is the same
    float32 arithmetic on the same pixels in the same order as over the whole frame, so the same value."""
    still = _texture(64, seed=3)
    moved = _moved(still, [((slice(10, 40), slice(8, 30)), (2, 1)), ((slice(30, 60), slice(30, 60)), (-1, 2))])
    fx, fy = normal_flow(_grey(still), _grey(moved))
    mag = np.hypot(fx, fy)
    moving = mag >= max(float(np.percentile(mag, 90)), 0.1)
    bx, by = cv2.blur(fx, (5, 5)), cv2.blur(fy, (5, 5))
    plain = float(np.hypot(fx - bx, fy - by)[moving].mean() / (mag[moving].mean() + 1e-3))
    assert flow_features(moved, still, field="normal")[FLOW_FEATURES.index("disorder")] == np.float32(plain)


def test_the_lean_statistics_are_the_first_eight_of_the_full_set() -> None:
    """``normal-flow-8`` skips the last three statistics; the eight it keeps are the same numbers, bit for bit,
    so the cheaper path cannot drift from the one the statistics were measured on."""
    still = _texture(64, seed=5)
    moved = _moved(still, [((slice(5, 35), slice(10, 50)), (1, -2)), ((slice(36, 60), slice(0, 30)), (-2, 0))])
    for previous in (still, None):
        full = flow_features(moved, previous, field="normal")
        lean = model_input(moved, previous, "normal-flow-8")
        assert lean.dtype == np.float32 and lean.shape == (len(LEAN_FLOW_FEATURES),) == (8,)
        assert np.array_equal(lean, full[: len(LEAN_FLOW_FEATURES)])
    assert flow_feature_names("normal-flow-8") == LEAN_FLOW_FEATURES == FLOW_FEATURES[:8]
    assert "disorder" not in LEAN_FLOW_FEATURES and flow_feature_names("normal-flow") == FLOW_FEATURES


def test_model_input_shape_is_a_vector() -> None:
    assert input_shape("flow", 64, 64) == input_shape("normal-flow", 64, 64) == (len(FLOW_FEATURES),)
    assert input_shape("normal-flow-8", 64, 64) == (8,)
    assert input_shape("diff", 64, 48) == (64, 48, 3)
    frames = [_texture(64, seed=i) for i in range(4)]
    assert window_inputs(frames, "flow").shape == window_inputs(frames, "normal-flow").shape == (3, len(FLOW_FEATURES))
    assert not np.array_equal(window_inputs(frames, "flow"), window_inputs(frames, "normal-flow"))


@pytest.mark.slow
@pytest.mark.parametrize("representation", ["flow", "normal-flow", "normal-flow-8"])
def test_training_windows_equal_the_device_windows(synth_data: Path, frame_cache: Path, representation: str) -> None:
    """The converter caches motion inputs per frame pair; its windows must be exactly the device's window_inputs."""
    data = ds.load_dataset(synth_data, frames=20, size=64, cache_dir=frame_cache, representation=representation)
    sampling = WindowSampling("spread", 20)
    for item in data.clips[:4]:
        for flip in (False, True):
            idx = sampling.eval_indices(len(item.frames), item.fps)[0]
            prepared = item.frames[idx].astype(np.float32) * np.float32(SCALE)
            if flip:
                prepared = prepared[:, :, ::-1]
            device = window_inputs(list(prepared), representation)  # type: ignore[arg-type]
            assert np.array_equal(ds.window_at(item, idx, representation, flip), device)  # type: ignore[arg-type]
            # the cached second call too
            assert np.array_equal(ds.window_at(item, idx, representation, flip), device)  # type: ignore[arg-type]
        assert np.array_equal(model_input(prepared[1], prepared[0], representation), device[0])  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_flow_bundle_runs_in_both_runtimes(
    bundle_factory: Callable[..., Path], flow_run: Path, frame_cache: Path, tmp_path: Path
) -> None:
    bundle = bundle_factory("dynamic", "flow")
    manifest = read_manifest(bundle)
    assert (manifest.input.representation, manifest.input.channels) == ("flow", len(FLOW_FEATURES))
    assert manifest.budget is not None and manifest.budget.mac_per_frame < 1e5
    run, split = find_run(flow_run / "model.keras")  # type: ignore[misc]
    data = held_out(run, split, None, frame_cache)
    windows = ds.windows(data.clips, 20, "flow")
    model = BundleModel(bundle, runtime="ai-edge-litert")
    ours = np.stack([model.predict_window(w) for w in windows])
    assert np.allclose(ours.sum(axis=1), 1.0, atol=1e-4)
    if tflite_python() is None:
        pytest.skip("RCLSTM_TFLITE_PYTHON is not set (the tflite-runtime 2.14 environment)")
    assert {check.runtime for check in manifest.verified_runtimes} == {"ai-edge-litert", "tflite-runtime"}
    np.savez(tmp_path / "in.npz", windows=windows)
    done = subprocess.run([str(tflite_python()), "-m", "edge.verify", str(bundle), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz"), "--runtime", "tflite-runtime"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "out.npz") as theirs:
        assert float(np.abs(theirs["probs"] - ours).max()) <= 1 / 256
