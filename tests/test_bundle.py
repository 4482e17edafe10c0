"""The bundle contract on real converted bundles: tampering, manifest errors, and the shipped demo bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.adapters.runtime import BundleModel
from edge.bundle import BundleError, load_bundle, read_manifest
from edge.core.values import Frame
from edge.models import resolve_bundle
from edge.stages.classifier import StreamClassifier
from edge.stages.sampler import Sampler
from edge.synthetic import write_stream
from tests.fixtures_models import tflite_python

DEMO = resolve_bundle("demo")


@pytest.fixture()
def demo_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEMO, tmp_path / "bundle"))


def _edit_manifest(bundle: Path, **changes: object) -> None:
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    path.write_text(json.dumps(raw))


def test_demo_bundle_is_valid_small_and_verified_in_both_runtimes() -> None:
    manifest, model_path = load_bundle(DEMO)
    assert manifest.name == "demo-synth" and manifest.input.representation == "diff"
    assert manifest.anomaly_labels == ["fight"] and manifest.streaming
    assert model_path.stat().st_size < 400_000
    assert {c.runtime for c in manifest.verified_runtimes} == {"ai-edge-litert", "tflite-runtime"}


def test_tampered_model_file_is_refused(demo_copy: Path, tmp_path: Path) -> None:
    model = demo_copy / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the manifest's") as err:
        BundleModel(demo_copy)
    assert "copy the bundle again" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(tflite_python() is None, reason="RCLSTM_TFLITE_PYTHON is not set")
def test_verify_in_the_other_runtime_refuses_a_tampered_bundle(demo_copy: Path, tmp_path: Path) -> None:
    (demo_copy / "model.tflite").write_bytes((demo_copy / "model.tflite").read_bytes() + b"\0")
    np.savez(tmp_path / "in.npz", windows=np.zeros((1, 20, 64, 64, 3), np.float32))
    done = subprocess.run([str(tflite_python()), "-m", "edge.verify", str(demo_copy), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "sha256" in done.stderr


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input__channels": 6}, "channels is 6 but representation 'diff' has 3"),
        ({"input__representation": "normal-flow-8", "input__channels": 11},
         "channels is 11 but representation 'normal-flow-8' has 8"),
        ({"anomaly_labels": ["riot"]}, "anomaly_labels ['riot'] are not in labels"),
        ({"model_file": "../model.tflite"}, "must be a plain file name"),
        ({"quantization": "int4"}, "quantization"),
        ({"sampling__frame_interval_s": 0}, "sampling.frame_interval_s"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_manifest_errors_name_the_field(demo_copy: Path, changes: dict, message: str) -> None:
    _edit_manifest(demo_copy, **changes)
    with pytest.raises(BundleError) as err:
        read_manifest(demo_copy)
    assert message in str(err.value) and "manifest.json" in str(err.value)


def test_manifest_signature_shape_must_match_the_model(demo_copy: Path) -> None:
    raw = json.loads((demo_copy / "manifest.json").read_text())
    raw["signatures"]["classify"]["inputs"][0]["shape"] = [1, 10, 64]
    (demo_copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=r"input shape \[1, 20, \d+\] does not match the manifest's \[1, 10, 64\]"):
        BundleModel(demo_copy)


def test_damaged_or_missing_manifest_and_model(demo_copy: Path) -> None:
    (demo_copy / "model.tflite").unlink()
    with pytest.raises(BundleError, match=r"model\.tflite: missing"):
        load_bundle(demo_copy)
    (demo_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(demo_copy)


def test_demo_bundle_flags_the_fight_and_only_the_fight(tmp_path: Path) -> None:
    """The device path (sampler at the manifest's interval, streaming classifier) on a generated stream."""
    spans = write_stream(tmp_path / "stream.mp4", [("calm", 8), ("fight", 5), ("calm", 8)], seed=11)
    model = BundleModel(DEMO)
    sampler = Sampler(model.manifest.sampling.frame_interval_s)
    classifier = StreamClassifier(model, hop=1)
    capture = cv2.VideoCapture(str(tmp_path / "stream.mp4"))
    fps = capture.get(cv2.CAP_PROP_FPS)
    scores: list[tuple[float, float]] = []
    index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        picked = sampler.offer(Frame(image, index / fps, datetime.now(timezone.utc)))
        index += 1
        prediction = classifier.push(picked) if picked is not None else None
        if prediction is not None:
            scores.append((prediction.ts, prediction.anomaly_score))
    window_s = model.manifest.sampling.window_s
    for kind, start, end in spans:
        inside = [score for ts, score in scores if ts - window_s >= start and ts <= end]
        assert len(inside) > 20
        if kind == "fight":
            assert min(inside) > 0.9, (kind, start, min(inside))
        else:
            assert max(inside) < 0.1, (kind, start, max(inside))


def test_verify_cli_reports_its_runtime(tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", windows=np.zeros((2, 20, 64, 64, 3), np.float32))
    done = subprocess.run([sys.executable, "-m", "edge.verify", str(DEMO), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["runtime"] == "ai-edge-litert"
    with np.load(tmp_path / "out.npz") as out:
        assert out["probs"].shape == (2, 2)


def test_bundle_trained_on_other_preprocessing_is_refused(demo_copy: Path) -> None:
    """A model trained on frames prepared differently would run and quietly score worse; refuse it instead."""
    for version in (1, 5):
        _edit_manifest(demo_copy, input__preprocess_version=version)
        with pytest.raises(BundleError, match=rf"preprocessing v{version} .* with v2, v3 or v4; train and convert "
                                              r"the model again \(it trains with v4\)") as info:
            load_bundle(demo_copy)
        assert "\n" not in str(info.value)
