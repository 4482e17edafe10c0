"""Conversion on a really trained model: twins, every quantization mode, both runtimes, bad models.

The tflite-runtime checks need the second environment (RCLSTM_TFLITE_PYTHON, set by .ci/run).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from converter import dataset as ds
from converter.cli import main
from converter.runs import find_run, held_out
from edge.adapters.runtime import BundleModel
from edge.bundle import QUANTIZATIONS, read_manifest, sha256_file
from tests.fixtures_models import tflite_python

pytestmark = pytest.mark.slow
MODES = list(QUANTIZATIONS)
TOLERANCE = {"float32": 1e-5, "float16": 1e-5, "dynamic": 1 / 256, "int8": 1 / 256}
needs_tflite = pytest.mark.skipif(tflite_python() is None,
                                  reason="RCLSTM_TFLITE_PYTHON is not set (the tflite-runtime 2.14 environment)")


@pytest.fixture(scope="module")
def held_out_windows(trained_run: Path, frame_cache: Path) -> tuple[np.ndarray, np.ndarray]:
    run, split = find_run(trained_run / "model.keras")  # type: ignore[misc]
    data = held_out(run, split, None, frame_cache)
    return ds.windows(data.clips, 20, "diff"), data.y


def _keras(path: Path):  # keras is imported lazily, so no return annotation
    from converter.convert import load_model

    return load_model(path)


def test_twins_equal_the_training_graph_on_real_windows(trained_run: Path, held_out_windows: tuple) -> None:
    from converter.twins import rclstm_twins

    windows, _ = held_out_windows
    model = _keras(trained_run / "model.keras")
    twins = rclstm_twins(model)
    assert twins.encoder.input_shape == (1, 64, 64, 3)
    assert not any("TimeDistributed" in type(layer).__name__ for layer in twins.encoder.layers)
    assert twins.classifier.get_layer("lstm").unroll
    expected = model.predict(windows, verbose=0)
    assert np.abs(twins.predict(windows) - expected).max() < 1e-5


def test_convlstm_twin_equals_the_training_graph(convlstm_run: Path, held_out_windows: tuple) -> None:
    from converter.twins import convlstm_twin

    windows, _ = held_out_windows
    model = _keras(convlstm_run / "model.keras")
    twin = convlstm_twin(model)
    assert not any(type(layer).__name__ == "MaxPooling3D" for layer in twin.window.layers)
    assert np.abs(twin.predict(windows[:3]) - model.predict(windows[:3], verbose=0)).max() < 1e-5


def test_encode_then_classify_in_the_bundle_equals_the_whole_model(
    rclstm_bundle: Path, trained_run: Path, held_out_windows: tuple
) -> None:
    windows, _ = held_out_windows
    bundle = BundleModel(rclstm_bundle, runtime="ai-edge-litert")
    streamed = np.stack([bundle.classify(np.stack([bundle.encode(x) for x in w])) for w in windows])
    whole = _keras(trained_run / "model.keras").predict(windows, verbose=0)
    assert np.abs(streamed - whole).max() < 1e-5


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_converts_runs_and_is_recorded(
    mode: str, bundle_factory: Callable[..., Path], held_out_windows: tuple
) -> None:
    bundle = bundle_factory(mode)
    manifest = read_manifest(bundle)
    assert manifest.quantization == mode
    assert manifest.sha256 == sha256_file(bundle / "model.tflite")
    assert manifest.size_bytes == (bundle / "model.tflite").stat().st_size
    assert manifest.input.representation == "diff" and manifest.anomaly_labels == ["fight"]
    assert manifest.signatures["encode"].inputs[0].shape == [1, 64, 64, 3]
    assert manifest.signatures["classify"].inputs[0].shape[:2] == [1, 20]
    assert manifest.sampling.frame_interval_s == pytest.approx(manifest.sampling.window_s / 20)
    assert {"keras", "bundle"} <= set(manifest.metrics)
    assert manifest.metrics["bundle"].view == "binary"
    runtimes = {check.runtime: check for check in manifest.verified_runtimes}
    assert runtimes["ai-edge-litert"].max_abs_diff <= TOLERANCE[mode]
    if tflite_python():
        assert runtimes["tflite-runtime"].max_abs_diff <= TOLERANCE[mode]
    windows, _ = held_out_windows
    probs = np.stack([BundleModel(bundle).predict_window(w) for w in windows])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)


@needs_tflite
@pytest.mark.parametrize("arch", ["rclstm", "convlstm"])
@pytest.mark.parametrize("mode", MODES)
def test_both_runtimes_agree_on_every_mode(
    mode: str, arch: str, bundle_factory: Callable[..., Path], held_out_windows: tuple, tmp_path: Path
) -> None:
    bundle = bundle_factory(mode, arch)
    manifest = read_manifest(bundle)
    assert (manifest.arch, manifest.quantization) == (arch, mode)
    assert {check.runtime for check in manifest.verified_runtimes} == {"ai-edge-litert", "tflite-runtime"}
    windows, _ = held_out_windows
    np.savez(tmp_path / "in.npz", windows=windows)
    done = subprocess.run([str(tflite_python()), "-m", "edge.verify", str(bundle), str(tmp_path / "in.npz"),
                           str(tmp_path / "out.npz"), "--runtime", "tflite-runtime"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"].startswith("2.14")
    litert = BundleModel(bundle, runtime="ai-edge-litert")
    ours = np.stack([litert.predict_window(w) for w in windows])
    with np.load(tmp_path / "out.npz") as theirs:
        diff = float(np.abs(theirs["probs"] - ours).max())
    print(f"{arch} {mode}: max |tflite-runtime - ai-edge-litert| = {diff:.2g}")
    assert diff <= TOLERANCE[mode]


def test_convlstm_bundle_is_one_window_signature(convlstm_bundle: Path, held_out_windows: tuple) -> None:
    manifest = read_manifest(convlstm_bundle)
    assert manifest.arch == "convlstm" and set(manifest.signatures) == {"window"}
    assert manifest.signatures["window"].inputs[0].shape == [1, 20, 64, 64, 3]
    assert len(manifest.verified_runtimes) == (2 if tflite_python() else 1)
    model = BundleModel(convlstm_bundle)
    assert not model.streaming
    assert model.predict_window(held_out_windows[0][0]).shape == (2,)


def test_wrong_input_shape_is_refused_with_the_expected_shape(
    tmp_path: Path, synth_data: Path, frame_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from converter.models import build_rclstm

    path = tmp_path / "small.keras"
    build_rclstm(2, frames=10, size=32, filters=[4], pools=[4]).save(path)
    code = main(["convert", str(path), "--out", str(tmp_path / "b"), "--data", str(synth_data),
                 "--cache", str(frame_cache)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "model input is 10x32x32x3 but the bundle needs 20x64x64x3" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_a_model_needing_flex_ops_is_refused_naming_the_op(
    tmp_path: Path, synth_data: Path, frame_cache: Path
) -> None:
    import keras
    import tensorflow as tf

    from converter.convert import ConvertError, ConvertOptions, convert

    @keras.saving.register_keras_serializable(package="tests")
    class RunningProduct(keras.layers.Layer):
        """tf.math.cumprod has no TFLite builtin: only the Flex delegate could run it."""

        def call(self, x: tf.Tensor) -> tf.Tensor:
            return tf.math.cumprod(x, axis=1)

        def compute_output_shape(self, input_shape: tuple) -> tuple:
            return input_shape

    inputs = keras.Input((20, 64, 64, 3))
    x = keras.layers.TimeDistributed(RunningProduct(), name="td_prod")(inputs)
    x = keras.layers.TimeDistributed(keras.layers.MaxPooling2D(16), name="td_pool")(x)
    x = keras.layers.TimeDistributed(keras.layers.Flatten(), name="td_flatten")(x)
    x = keras.layers.LSTM(4, name="lstm")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="probs")(x))
    model.save(tmp_path / "flex.keras")
    with pytest.raises(ConvertError, match=r"no TFLite builtin \(Cumprod\)") as err:
        convert(ConvertOptions(model=tmp_path / "flex.keras", out=tmp_path / "b", data=synth_data,
                               cache=frame_cache))
    assert "\n" not in str(err.value)


def test_missing_or_unreadable_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "none.keras"), "--out", str(tmp_path / "b")]) == 2
    assert "model file not found" in capsys.readouterr().err
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    assert main(["convert", str(tmp_path / "junk.keras"), "--out", str(tmp_path / "b")]) == 2
    assert "Keras cannot load it" in capsys.readouterr().err


def test_evaluate_scores_keras_and_bundle_on_the_same_held_out_clips(
    trained_run: Path, rclstm_bundle: Path, synth_data: Path, frame_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from converter.evaluate import evaluate

    keras_result = evaluate(trained_run / "model.keras", synth_data, cache=frame_cache)
    assert main(["evaluate", str(rclstm_bundle), str(synth_data), "--run", str(trained_run), "--json",
                 "--cache", str(frame_cache)]) == 0
    bundle_result = json.loads(capsys.readouterr().out)
    run = json.loads((trained_run / "run.json").read_text())
    assert keras_result["clips"] == bundle_result["clips"] == len(run["test_clips"])
    assert bundle_result["kind"] == "bundle" and keras_result["kind"] == "keras"
    assert keras_result["binary"] == pytest.approx(bundle_result["binary"])
    assert keras_result["confusion"] == bundle_result["confusion"]


def test_inspect_shows_ops_runtimes_and_metrics(rclstm_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(rclstm_bundle)]) == 0
    out = capsys.readouterr().out
    assert "ops in encode:" in out and "CONV_2D" in out
    assert "ops in classify:" in out and "FULLY_CONNECTED" in out
    assert "ai-edge-litert" in out
    assert "bundle (binary" in out


def test_bundle_without_run_is_evaluated_on_the_clips_its_manifest_records(
    rclstm_bundle: Path, trained_run: Path, synth_data: Path, frame_cache: Path
) -> None:
    from converter.evaluate import evaluate

    result = evaluate(rclstm_bundle, synth_data, cache=frame_cache)
    run = json.loads((trained_run / "run.json").read_text())
    assert result["clips"] == len(run["test_clips"]) and result["clips_used"].startswith("held-out")


def test_a_bundle_failing_the_parity_gate_is_refused_unless_forced(
    trained_run: Path, frame_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import converter.convert

    # No real float32 bundle disagrees with its model, so demand more than perfect agreement.
    monkeypatch.setattr(converter.convert, "MIN_TOP1", 1.01)
    args = ["convert", str(trained_run / "model.keras"), "--out", str(tmp_path / "b"), "--cache", str(frame_cache)]
    assert main(args) == 1
    assert "refused: bundle agrees with the Keras model on only 100.0%" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert main([*args, "--force"]) == 0
    assert read_manifest(tmp_path / "b").quantization == "float32"


def test_the_bundle_records_the_preprocessing_its_model_was_trained_on(
    trained_run: Path, rclstm_bundle: Path, frame_cache: Path, tmp_path: Path
) -> None:
    """A run records the frame preprocessing it trained on; a run from an older version converts to a bundle
    of that version (its held-out clips prepared that way), which the device still prepares frames for."""
    import shutil

    from converter.convert import ConvertOptions, convert
    from edge.preprocess import PREPROCESS_VERSION

    assert json.loads((trained_run / "run.json").read_text())["preprocess_version"] == PREPROCESS_VERSION
    assert read_manifest(rclstm_bundle).input.preprocess_version == PREPROCESS_VERSION
    older = tmp_path / "older"
    shutil.copytree(trained_run, older)
    run = json.loads((older / "run.json").read_text())
    (older / "run.json").write_text(json.dumps({**run, "preprocess_version": 2}))
    report = convert(ConvertOptions(model=older / "model.keras", out=tmp_path / "b", quantize="float32",
                                    cache=frame_cache))
    assert report.manifest.input.preprocess_version == 2
    assert BundleModel(tmp_path / "b").manifest.input.preprocess_version == 2  # loads: the device has v2


def test_legacy_h5_model_without_a_run_converts_with_explicit_options(
    trained_run: Path, synth_data: Path, frame_cache: Path, tmp_path: Path
) -> None:
    from converter.convert import ConvertOptions, convert

    h5 = tmp_path / "legacy.h5"
    _keras(trained_run / "model.keras").save(h5)
    report = convert(ConvertOptions(model=h5, out=tmp_path / "b", quantize="dynamic", data=synth_data,
                                    representation="diff", anomaly_classes=["fight"], cache=frame_cache))
    manifest = report.manifest
    assert manifest.input.representation == "diff" and manifest.anomaly_labels == ["fight"]
    assert manifest.training == {}  # nothing recorded about a training it did not see
    assert manifest.metrics["bundle"].clips == 24  # every clip in --data
    assert report.parity["top1_agreement"] >= 0.99


@pytest.mark.parametrize(("extra", "message"), [
    (["--anomaly-classes", "riot"], "--anomaly-classes riot not among the labels calm, fight"),
    (["--name", "my model"], "--name 'my model': use up to 100 letters"),
])
def test_bad_bundle_identity_is_refused_before_converting(
    extra: list[str], message: str, trained_run: Path, frame_cache: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["convert", str(trained_run / "model.keras"), "--out", str(tmp_path / "b"), "--cache", str(frame_cache)]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
