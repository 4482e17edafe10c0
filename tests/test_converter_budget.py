"""The device budget: MACs counted from the graph, timings from the real runtimes, the Pi 4 estimate's arithmetic."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from converter.budget import (
    MAX_MAC_PER_VIDEO_SECOND,
    PI4_MAC_PER_S,
    PI4_VS_X86,
    Macs,
    budget,
    table,
    within,
)
from tests.fixtures_models import tflite_python

pytestmark = pytest.mark.slow


def test_rclstm_macs_match_a_hand_count() -> None:
    from converter.budget import model_macs
    from converter.models import build_rclstm

    model = build_rclstm(2, frames=4, size=16, channels=3, filters=[2], pools=[2], lstm_units=3)
    macs = model_macs(model)
    conv = 16 * 16 * 2 * (3 * 3 * 3)  # every output value of the 3x3 conv over 3 channels
    lstm = 4 * 4 * 3 * (8 * 8 * 2 + 3)  # 4 steps x 4 gates x 3 units x (128 features + 3 recurrent)
    dense = 3 * 2
    assert macs == Macs(encode=conv, classify=lstm + dense, streaming=True)


def test_convlstm_has_no_per_frame_part() -> None:
    from converter.budget import model_macs
    from converter.models import build_convlstm

    macs = model_macs(build_convlstm(2, frames=3, size=8, channels=3, filters=[2]))
    # 3 steps x 4 gates x 6x6x2 outputs (a "valid" 3x3 over 8x8) x 3x3 x (3 input + 2 recurrent channels)
    cell = 3 * 4 * (6 * 6 * 2) * 9 * (3 + 2)
    dense = (3 * 3 * 3 * 2) * 2  # flattened 3 steps of 3x3x2 after pooling, to 2 classes
    assert macs == Macs(encode=0, classify=cell + dense, streaming=False)


def test_budget_arithmetic() -> None:
    macs = Macs(encode=4_000_000, classify=400_000, streaming=True)
    timing = {"runtime": "ai-edge-litert", "encode_ms": 0.2, "classify_ms": 0.08}
    result = budget(macs, [timing], interval_s=0.1, hop=4)
    assert result.mac_per_frame == 4_100_000
    assert result.mac_per_video_second == pytest.approx(4e6 * 10 + 4e5 * 2.5)
    assert within(result)
    assert result.x86_ms_per_frame == {"ai-edge-litert": pytest.approx(0.22)}
    expected_pi = max(4.1e6 / PI4_MAC_PER_S * 1000, 0.22 * PI4_VS_X86)
    assert result.pi4_ms_per_frame_estimate == pytest.approx(expected_pi)
    assert result.pi4_core_share_estimate == pytest.approx(expected_pi / 100)
    over = budget(Macs(encode=200_000_000, classify=0, streaming=True), [timing], interval_s=0.1, hop=4)
    assert over.mac_per_video_second > MAX_MAC_PER_VIDEO_SECOND and not within(over)
    assert "OVER" in table(over) and "within" in table(result)


def test_timings_come_from_both_real_runtimes(rclstm_bundle: Path, tmp_path: Path) -> None:
    """In-process (ai-edge-litert) and through `python -m edge.verify --time` (tflite-runtime, as convert runs it)."""
    from edge.adapters.runtime import BundleModel
    from edge.verify import time_model

    model = BundleModel(rclstm_bundle)
    spec = model.manifest.input
    window = np.random.default_rng(0).random((spec.frames, spec.height, spec.width, spec.channels), np.float32)
    timing = time_model(model, window, repeats=5)
    assert timing["encode_ms"] > 0 and timing["classify_ms"] > 0
    if tflite_python() is None:
        return
    np.savez(tmp_path / "in.npz", windows=window[np.newaxis])
    done = subprocess.run([str(tflite_python()), "-m", "edge.verify", str(rclstm_bundle), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz"), "--runtime", "tflite-runtime", "--time", "5"],
                          capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["runtime"] == "tflite-runtime" and info["encode_ms"] > 0 and info["classify_ms"] > 0
