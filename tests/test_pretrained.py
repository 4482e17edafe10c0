"""The pretrained per-frame encoder: the Keras port against the TFLite original, a frozen-encoder model
trained on generated data and converted, run by the device's classifier in both runtimes.

The tflite-runtime check needs the second environment (RCLSTM_TFLITE_PYTHON).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from converter import dataset as ds
from converter.cli import main
from converter.runs import find_run, held_out
from edge.adapters.runtime import BundleModel
from edge.bundle import read_manifest
from edge.preprocess import prepare_frame
from edge.synthetic import render_clip
from tests.fixtures_models import tflite_python
from tests.test_classifier import check_same_as_training_windows

pytestmark = pytest.mark.slow
ENCODER = "mobilenet_v1_0.25_128"
FLOAT_TOLERANCE = 1e-5  # converter.convert.FLOAT_TOLERANCE, the runtime gate for float bundles


def _frames(seed: int) -> np.ndarray:
    """Prepared 128x128 frames of generated calm and fight scenes (textured backgrounds, moving figures)."""
    rng = np.random.default_rng(seed)
    images = [*render_clip("calm", 12, 320, 240, rng)[::4], *render_clip("fight", 12, 320, 240, rng)[::4]]
    return np.stack([prepare_frame(image, 128, 128) for image in images])


def test_the_keras_port_computes_the_tflite_models_pooled_features() -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from converter.pretrained import WEIGHTS, frame_encoder

    frames = _frames(seed=5)
    ours = np.asarray(frame_encoder()(frames, training=False))
    # Without the default delegate every intermediate tensor stays readable after invoke.
    interpreter = Interpreter(model_path=str(WEIGHTS), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    pool = next(d for d in interpreter.get_tensor_details() if d["name"].endswith("AvgPool_1a/AvgPool"))
    scale, zero_point = pool["quantization"]
    theirs = []
    for frame in frames:
        # The flatbuffer's own input: the uint8 pixel (its quantization maps it to pixel / 128 - 1).
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.rint(frame * 255)[None].astype(np.uint8))
        interpreter.invoke()
        theirs.append(scale * (interpreter.get_tensor(pool["index"]).reshape(-1).astype(np.float32) - zero_point))
    theirs = np.stack(theirs)
    assert ours.shape == theirs.shape == (len(frames), 256)
    for a, b in zip(ours, theirs, strict=True):
        assert np.corrcoef(a, b)[0, 1] > 0.99
    # Within a few activation quantization steps (0.0235) of a uint8 network 28 layers deep, on values up to ~5.
    assert np.abs(ours - theirs).mean() < 3 * scale
    # Frames differ in what they show, and the features say so: not a constant the two happen to share.
    assert np.corrcoef(theirs[0], theirs[-1])[0, 1] < 0.99


def test_frame_features_are_the_encoders_features_of_the_window_at_those_frames() -> None:
    from converter.pretrained import frame_encoder
    from converter.train import FrameFeatures

    encoder = frame_encoder()
    frames = np.rint(_frames(seed=6) * 255).astype(np.uint8)
    item = ds.Decoded(ds.Clip(Path("x/fight/a.avi"), "fight", "g"), frames, 25.0)
    features = FrameFeatures(encoder)
    idx = np.array([0, 2, 3, 5])
    for flip in (False, True):
        expected = np.asarray(encoder(ds.window_at(item, idx, "rgb", flip), training=False))
        np.testing.assert_allclose(features.window(item, idx, flip), expected, atol=1e-5)
    assert len(features.cache) == 6  # frames 2, 3, 5 once each way round; frame 0 is only a predecessor
    shifted = features.window(item, np.array([2, 3, 5, 1]), flip=False)  # 3 and 5 from the cache, 1 is new
    np.testing.assert_allclose(shifted[-1], np.asarray(encoder(ds.window_at(item, np.array([0, 1]), "rgb"),
                                                               training=False))[0], atol=1e-5)
    assert len(features.cache) == 7


@pytest.fixture(scope="module")
def mobilenet_run(synth_data: Path, frame_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen-MobileNet RCLSTM (head only trained, on cached features, with flip + jitter) on ``synth_data``."""
    out = tmp_path_factory.mktemp("run") / "mobilenet"
    assert main(["train", str(synth_data), "--encoder", ENCODER, "--anomaly-classes", "fight", "--epochs", "3",
                 "--patience", "3", "--batch-size", "2", "--lstm-units", "8", "--out", str(out),
                 "--cache", str(frame_cache)]) == 0
    return out


@pytest.fixture(scope="module")
def mobilenet_bundle(mobilenet_run: Path, frame_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "mobilenet-float32"
    args = ["convert", str(mobilenet_run / "model.keras"), "--out", str(out), "--quantize", "float32",
            "--cache", str(frame_cache)]
    if tflite_python():
        args += ["--verify-python", str(tflite_python())]
    assert main(args) == 0
    return out


def test_frozen_training_keeps_the_imagenet_weights_and_saves_the_whole_model(mobilenet_run: Path) -> None:
    from converter.convert import load_model
    from converter.pretrained import read_convs

    run = json.loads((mobilenet_run / "run.json").read_text())
    assert (run["representation"], run["size"], run["options"]["encoder"]) == ("rgb", 128, ENCODER)
    model = load_model(mobilenet_run / "model.keras")
    assert model.input_shape == (None, 20, 128, 128, 3)
    for conv in read_convs():
        kernel, bias = model.get_layer(f"td_{conv.name}").layer.get_weights()
        np.testing.assert_array_equal(kernel, conv.kernel)
        np.testing.assert_array_equal(bias, conv.bias)
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"lstm", "probs"}


def test_the_bundle_streams_in_both_runtimes_within_the_parity_tolerance(
    mobilenet_bundle: Path, mobilenet_run: Path, frame_cache: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(mobilenet_bundle)
    assert (manifest.arch, manifest.quantization, manifest.input.representation) == ("rclstm", "float32", "rgb")
    assert manifest.training["encoder"] == ENCODER  # the model card names the pretrained encoder
    assert manifest.signatures["encode"].inputs[0].shape == [1, 128, 128, 3]
    assert manifest.signatures["classify"].inputs[0].shape == [1, 20, 256]
    assert manifest.budget is not None and 13e6 < manifest.budget.mac_per_frame < 16e6  # MobileNet v1 0.25/128
    checks = {check.runtime: check.max_abs_diff for check in manifest.verified_runtimes}
    assert checks["ai-edge-litert"] <= FLOAT_TOLERANCE
    litert = BundleModel(mobilenet_bundle, runtime="ai-edge-litert")
    check_same_as_training_windows(litert)  # the device's StreamClassifier: encode per frame, classify per window
    if tflite_python() is None:
        pytest.skip("RCLSTM_TFLITE_PYTHON is not set (the tflite-runtime 2.14 environment)")
    assert checks["tflite-runtime"] <= FLOAT_TOLERANCE
    run, split = find_run(mobilenet_run / "model.keras")  # type: ignore[misc]
    windows = ds.windows(held_out(run, split, None, frame_cache).clips, 20, "rgb")
    np.savez(tmp_path / "in.npz", windows=windows)
    done = subprocess.run([str(tflite_python()), "-m", "edge.verify", str(mobilenet_bundle), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz"), "--runtime", "tflite-runtime"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"].startswith("2.14")
    ours = np.stack([litert.predict_window(w) for w in windows])
    with np.load(tmp_path / "out.npz") as theirs:
        assert np.abs(theirs["probs"] - ours).max() <= FLOAT_TOLERANCE


def test_fine_tuning_trains_only_the_last_blocks(synth_data: Path, frame_cache: Path, tmp_path: Path) -> None:
    from converter.convert import load_model
    from converter.pretrained import read_convs

    out = tmp_path / "run"
    assert main(["train", str(synth_data), "--encoder", ENCODER, "--trainable-blocks", "1", "--anomaly-classes",
                 "fight", "--epochs", "1", "--frames", "4", "--augment", "none", "--lstm-units", "8", "--out", str(out),
                 "--cache", str(frame_cache)]) == 0
    model = load_model(out / "model.keras")
    changed = {conv.name for conv in read_convs()
               if not np.array_equal(model.get_layer(f"td_{conv.name}").layer.get_weights()[0], conv.kernel)}
    assert changed == {"dw13", "pw13"}


@pytest.mark.parametrize(("extra", "message"), [
    (["--size", "64"], f"--encoder {ENCODER} takes RGB frames of 128x128 into an LSTM: use --arch rclstm "
                       "--representation rgb --size 128 (got --arch rclstm --representation rgb --size 64)"),
    (["--representation", "diff"], "(got --arch rclstm --representation diff --size 128)"),
    (["--trainable-blocks", "14"], "--trainable-blocks 14: fine-tunes the last N of a pretrained encoder's 13"),
])
def test_bad_pretrained_options_are_one_line(
    extra: list[str], message: str, synth_data: Path, frame_cache: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["train", str(synth_data), "--encoder", ENCODER, *extra, "--out", str(tmp_path / "run"),
                 "--cache", str(frame_cache)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
