"""`rclstm-convert convert`: Keras model -> verified TFLite bundle (model.tflite + manifest.json).

Steps, each of which can stop the conversion with a one-line reason:
1. load the model and its run record (run.json beside it: data, held-out clips, representation);
   check its input is ``frames x size x size x channels`` for that representation;
2. build the batch-1 twins and prove they equal the training graph on held-out windows;
3. convert with builtin ops only (a Flex op would not load on either device runtime) in the asked
   mode; dynamic range keeps dense layers per-tensor, since per-channel emits FULLY_CONNECTED v12,
   which tflite-runtime 2.14 cannot load; int8 keeps a float interface so device code is identical,
   and quantizes the convolutions while the recurrent gates stay float (see FLOAT_OPS_IN_INT8);
4. parity report on every held-out clip: Keras vs the bundle (max |diff|, top-1 agreement,
   accuracy); refuse below 99% top-1 agreement (float modes) or above a 2-point accuracy drop
   (int8). The same predictions give the manifest's Keras and bundle metrics;
5. run the bundle in every runtime available (this interpreter's ai-edge-litert and, with
   RCLSTM_TFLITE_PYTHON / --verify-python, tflite-runtime in a second environment) and compare to
   TensorFlow's own TFLite interpreter: within 1e-5 for float32/float16, one output quantization
   step (1/256, the int8 softmax scale) for dynamic and int8;
6. with ``--every-split``, convert every other split's model of the run the same way and record
   mean and spread over the splits for Keras and for the bundle, so the claim a bundle ships with
   rests on several held-out sets (one split of ~75 clips is good to about +/-0.11), not one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from converter import dataset as ds
from converter.metrics import scores, summarize
from converter.runs import RunRecord, find_run, held_out
from converter.sampling import DEFAULT_HOP, WindowSampling
from edge.adapters.runtime import BundleModel
from edge.bundle import (
    MODEL_NAME,
    QUANTIZATIONS,
    DeviceBudget,
    Manifest,
    Metrics,
    Quantization,
    RecommendedDecision,
    RuntimeCheck,
    Sampling,
    SignatureSpec,
    SourceResult,
    TensorSpec,
    TrainingData,
    sha256_file,
    write_manifest,
)
from edge.preprocess import PREPROCESS_VERSION, REPRESENTATIONS, Representation, channels_for, input_shape
from edge.verify import time_model

FLOAT_TOLERANCE = 1e-5
# Modes whose kernels are float end to end. Dynamic range quantizes activations to int8 at run time,
# and runtimes round those differently (measured 1.6e-5 between tflite-runtime 2.14 and LiteRT 2.3 on
# the fight data), so it is held to the int8 rule: within one output quantization step.
FLOAT_MODES = ("float32", "float16")
INT8_STEP = 1.0 / 256.0  # TFLite's fixed int8 softmax output scale
MIN_TOP1 = 0.99
MAX_INT8_DROP = 0.02
TWIN_TOLERANCE = 1e-4
PARITY_WINDOWS = 64  # held-out windows for the twin and cross-runtime checks
SCORE_CHUNK = 64  # held-out clips scored at a time, so a large test split fits in memory
CALIBRATION_WINDOWS = 48
BUDGET_REPEATS = 50  # timed calls per signature and runtime: medians steady to a few percent, a second in all
# Ops kept float in int8 bundles (the LSTM / ConvLSTM gates and the classifier head).
FLOAT_OPS_IN_INT8 = (
    "FULLY_CONNECTED", "TANH", "LOGISTIC", "MUL", "ADD", "SUB", "SOFTMAX", "SPLIT", "UNPACK", "PACK",
)


class ConvertError(Exception):
    """Bad input (model, options, data): one line, exit status 2."""


class ConvertRefused(Exception):
    """The bundle was built but fails a quality gate: one line, exit status 1 (``--force`` overrides)."""


@dataclass
class ConvertOptions:
    model: Path
    out: Path
    quantize: Quantization = "float32"
    calibration: Path | None = None
    data: Path | None = None
    force: bool = False
    name: str | None = None
    version: str = "1"
    anomaly_classes: list[str] | None = None
    representation: Representation | None = None
    verify_python: Path | None = None
    whole_window: bool = False  # an RCLSTM as one "window" signature: the benchmarks' baseline, not for devices
    cache: Path | None = ds.DEFAULT_CACHE
    every_split: bool = False
    crosseval: Path | None = None  # a `crosseval` results.json whose figures the manifest records
    licences: dict[str, str] = field(default_factory=dict)  # source name -> the terms its clips are used under
    log: Any = field(default=lambda message: print(message, file=sys.stderr, flush=True))


@dataclass
class Report:
    bundle: Path
    manifest: Manifest
    parity: dict[str, float]
    notes: list[str]
    scores: dict[str, dict[str, Any]]  # "keras" and "bundle": converter.metrics.scores on every held-out clip


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:400] + ("..." if len(text) > 400 else "")


def load_model(path: Path) -> Any:
    import keras

    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: model file not found")
    if path.suffix not in (".keras", ".h5"):
        raise ConvertError(f"{path}: expected a .keras or .h5 model file")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for unreadable files
        raise ConvertError(f"{path}: Keras cannot load it ({_one_line(exc)})") from None


def out_name(out: Path) -> str:
    """The default bundle name: the output folder's name."""
    return Path(out).resolve().name


def _flex_ops(message: str) -> list[str]:
    ops = set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message))
    ops |= set(re.findall(r"\bFlex([A-Z]\w+)", message))
    return sorted(ops)


def _export(twins: Any, frames: int, frame_shape: tuple[int, ...], workdir: Path) -> list[str]:
    """A SavedModel with one endpoint per signature; returns the signature keys."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    if twins.streaming:
        enc, cls = twins.encoder, twins.classifier
        archive.track(enc)
        archive.track(cls)
        width = int(enc.output_shape[-1])
        archive.add_endpoint("encode", lambda x: {"features": enc(x)},
                             input_signature=[tf.TensorSpec((1, *frame_shape), tf.float32, name="frame")])
        archive.add_endpoint("classify", lambda x: {"probs": cls(x)},
                             input_signature=[tf.TensorSpec((1, frames, width), tf.float32, name="features")])
        keys = ["encode", "classify"]
    else:
        win = twins.window
        archive.track(win)
        archive.add_endpoint("window", lambda x: {"probs": win(x)},
                             input_signature=[tf.TensorSpec((1, frames, *frame_shape), tf.float32,
                                                            name="frames")])
        keys = ["window"]
    archive.write_out(str(workdir), verbose=False)
    return keys


def _tflite_bytes(saved: Path, keys: list[str], quantize: str, twins: Any, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=keys)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    elif quantize == "int8":
        assert calibration is not None
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.representative_dataset = _representative(twins, calibration)
    try:
        if quantize != "int8":
            return converter.convert()
        # The recurrent part stays float: its int8 LOGISTIC/TANH kernels differ between tflite-runtime
        # 2.14 and LiteRT by ~5 output steps (measured 0.0195) after 20 unrolled steps, while the
        # convolutions, nearly all of the compute, quantize to int8 and agree to one step.
        options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS_IN_INT8))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=_representative(twins, calibration[:4]), debug_options=options
            )
            return debugger.get_nondebug_quantized_model()
    except Exception as exc:
        message = str(exc)
        if "ERROR_NEEDS_FLEX_OPS" in message or "flex op" in message.lower() or "SELECT_TF_OPS" in message:
            ops = _flex_ops(message)
            raise ConvertError(
                f"the model needs TensorFlow ops with no TFLite builtin ({', '.join(ops) or 'unnamed'}); neither "
                "device runtime can run Flex ops: replace those layers with builtin-friendly ones"
            ) from None
        raise ConvertError(f"TFLite conversion failed: {_one_line(exc)}") from None


def _representative(twins: Any, calibration: np.ndarray) -> Any:
    """Calibration for every signature: frames for ``encode``, float-encoder features for ``classify``."""

    def generate() -> Any:
        for window in calibration:
            if twins.streaming:
                for frame in window[::2]:
                    yield "encode", {"frame": frame[np.newaxis]}
                yield "classify", {"features": np.asarray(twins.encoder(window, training=False))[np.newaxis]}
            else:
                yield "window", {"frames": window[np.newaxis]}

    return generate


def _signatures(model_path: Path) -> dict[str, SignatureSpec]:
    """Tensor names and shapes as the .tflite file declares them (what the device will look up)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    specs = {}
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        specs[key] = SignatureSpec(
            inputs=[TensorSpec(name=n, shape=[int(d) for d in v["shape"]])
                    for n, v in runner.get_input_details().items()],
            outputs=[TensorSpec(name=n, shape=[int(d) for d in v["shape"]])
                     for n, v in runner.get_output_details().items()],
        )
    return specs


def _tf_reference(model_path: Path, manifest: Manifest, windows: np.ndarray) -> np.ndarray:
    """TensorFlow's own TFLite interpreter on the bundle: the result both device runtimes must match."""
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation notice; it is still TensorFlow's own reference
        interpreter = tf.lite.Interpreter(model_path=str(model_path))
    runners = {k: interpreter.get_signature_runner(k) for k in manifest.signatures}

    def call(key: str, x: np.ndarray) -> np.ndarray:
        spec = manifest.signatures[key]
        return runners[key](**{spec.inputs[0].name: x.astype(np.float32)})[spec.outputs[0].name]

    out = []
    for w in windows:
        if manifest.streaming:
            features = np.concatenate([call("encode", frame[np.newaxis]) for frame in w])
            out.append(call("classify", features[np.newaxis])[0])
        else:
            out.append(call("window", w[np.newaxis])[0])
    return np.stack(out)


def _other_runtime(python: Path, bundle: Path, windows: np.ndarray, workdir: Path) -> tuple[np.ndarray, dict[str, str]]:
    inputs, outputs = workdir / "verify-in.npz", workdir / "verify-out.npz"
    np.savez(inputs, windows=windows.astype(np.float32))
    done = subprocess.run(
        [str(python), "-m", "edge.verify", str(bundle), str(inputs), str(outputs), "--runtime", "tflite-runtime",
         "--time", str(BUDGET_REPEATS)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise ConvertRefused(f"{python}: the bundle does not run in tflite-runtime ({reason})")
    with np.load(outputs) as data:
        probs = data["probs"]
    return probs, json.loads(done.stdout.strip().splitlines()[-1])


def _metrics(result: dict[str, Any], view: str, runs: int | None = None) -> Metrics:
    row = result[view]
    return Metrics(accuracy=row["accuracy"], precision=row["precision"], recall=row["recall"], f1=row["f1"],
                   clips=int(result["clips"]), runs=runs, view=view)  # type: ignore[arg-type]


def _summary_metrics(summary: dict[str, Any], view: str) -> Metrics:
    row = summary[view]
    return Metrics(**{k: row[k]["mean"] for k in ("accuracy", "precision", "recall", "f1")},
                   **{f"{k}_std": row[k]["std"] for k in ("accuracy", "precision", "recall", "f1")},
                   clips=summary["clips"], runs=summary["runs"], view=view)  # type: ignore[arg-type]


def _training_record(run: RunRecord | None, split: int) -> dict[str, Any]:
    if run is None:
        return {}
    flat: dict[str, Any] = {}
    for key, value in run.options.items():
        if isinstance(value, list):
            flat[key] = [str(v) for v in value]
        elif value is None or isinstance(value, (str, int, float, bool)):
            flat[key] = value
    # The held-out clips the bundle's metrics were measured on, so `evaluate BUNDLE DATA_DIR` can reuse them.
    flat.update(grouping=run.grouping, split_index=split, data_dir=run.data_dir, hop=run.hop,
                sources=[f"{s.name}={s.path}" for s in run.sources],
                class_map=[f"{folder}={label}" for folder, label in run.class_map.items()],
                test_clips=run.split_test_clips(split))
    return flat


def _training_data(run: RunRecord | None, licences: dict[str, str]) -> list[TrainingData]:
    """The model card's data list: every source of the run, its usable clips and the terms given for it."""
    if run is None:
        if licences:
            raise ConvertError("--licence needs a model from `rclstm-convert train` (its run.json names the sources)")
        return []
    names = [s.name for s in run.source_list()]
    unknown = sorted(set(licences) - set(names))
    if unknown:
        raise ConvertError(f"--licence {', '.join(unknown)}: no such source in the run (sources: {', '.join(names)})")
    out = []
    for source in run.source_list():
        listed, _, _ = ds.scan(source, run.options.get("classes"), run.class_map)
        skipped = sum(entry.startswith(f"{source.name}/") for entry in run.skipped)
        out.append(TrainingData(name=source.name, clips=len(listed) - skipped,
                                licence=licences.get(source.name, "not stated")))
    return out


def _crosseval_rows(opts: ConvertOptions, notes: list[str]) -> list[SourceResult]:
    if opts.crosseval is None:
        return []
    from converter.crosseval import manifest_rows

    rows, complete = manifest_rows(opts.crosseval)
    if not complete:
        notes.append(f"{opts.crosseval}: the crosseval run had not finished; the manifest records what it measured")
    return rows


def _recommended_decision(opts: ConvertOptions, log: Callable[[str], None]) -> RecommendedDecision | None:
    """The decision settings crosseval's sweep chose for this recipe on held-out sources, if it ran one."""
    if opts.crosseval is None:
        return None
    from converter.crosseval import manifest_decision

    chosen = manifest_decision(opts.crosseval)
    if chosen:
        log(f"decision settings for the bundle: threshold {chosen.threshold}, start_windows {chosen.start_windows} "
            f"({chosen.chosen_by})")
    return chosen


def _verify_python(opts: ConvertOptions) -> Path | None:
    if opts.verify_python:
        return Path(opts.verify_python)
    env = os.environ.get("RCLSTM_TFLITE_PYTHON")
    return Path(env) if env else None


@dataclass
class _Inputs:
    """Step 1's result: the model, its run record and the held-out data every later step measures on."""

    model: Any
    arch: str
    run: RunRecord | None
    split: int
    representation: Representation
    frames: int
    size: int
    sampling: WindowSampling
    data: ds.Dataset
    labels: list[str]
    anomaly: list[str]
    name: str

    @property
    def preprocess_version(self) -> int:
        """The frame preprocessing the model was trained on, which its bundle records."""
        return self.run.preprocess_version if self.run else PREPROCESS_VERSION

    @property
    def channels(self) -> int:
        return channels_for(self.representation)


@dataclass
class _Parity:
    """Step 4's result: Keras vs bundle on every held-out clip (the manifest's metrics come from it)."""

    summary: dict[str, float]
    keras: dict[str, Any]
    bundle: dict[str, Any]


def convert(opts: ConvertOptions) -> Report:
    """Build, check and write a bundle; raises ConvertError (bad input) or ConvertRefused (quality gate).

    The steps are the module docstring's, in its order; each helper below is one of them.
    """
    if opts.quantize not in QUANTIZATIONS:
        raise ConvertError(f"--quantize {opts.quantize!r} is not one of {', '.join(QUANTIZATIONS)}")
    inputs = _load_inputs(opts)
    rng = np.random.default_rng(0)
    picks = sorted(rng.permutation(len(inputs.data.clips))[:PARITY_WINDOWS])
    windows = np.stack([ds.eval_windows(inputs.data.clips[i], inputs.sampling, inputs.representation)[0]
                        for i in picks])
    keras_all = ds.clip_probs(ds.keras_predictor(inputs.model), inputs.data.clips, inputs.sampling,
                              inputs.representation, SCORE_CHUNK)
    twins = _checked_twins(inputs, opts, windows)
    calibration = _calibration(inputs, opts, rng)
    out = Path(opts.out)
    if out.exists() and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise ConvertError(f"{out}: exists and is not a bundle; choose another --out")
    with tempfile.TemporaryDirectory(prefix="rclstm-convert-") as tmp:
        work = Path(tmp)
        bundle, manifest = _build_bundle(inputs, opts, twins, calibration, work)
        litert = BundleModel(bundle, runtime="ai-edge-litert")
        parity = _parity(inputs, litert, keras_all, opts.log)
        notes: list[str] = []
        checks, timings = _verify_runtimes(opts, manifest, bundle, litert, windows, work, notes)
        _quality_gates(opts, parity.summary)
        manifest = manifest.model_copy(update={
            "verified_runtimes": checks, "metrics": _manifest_metrics(inputs, opts, parity, work),
            "budget": _device_budget(inputs, timings, manifest, opts.log),
            "data": _training_data(inputs.run, opts.licences), "crosseval": _crosseval_rows(opts, notes),
            "decision": _recommended_decision(opts, opts.log),
        })
        write_manifest(bundle, manifest)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(bundle, out)
    opts.log(f"wrote {out} ({manifest.size_bytes / 1024:.0f} KiB, {opts.quantize}, sha256 {manifest.sha256[:12]}...)")
    return Report(out, manifest, parity.summary, notes, {"keras": parity.keras, "bundle": parity.bundle})


def _load_inputs(opts: ConvertOptions) -> _Inputs:
    """Step 1: the model, its run record and held-out clips; every mismatch between them is a ConvertError."""
    from converter.models import arch_of

    model = load_model(opts.model)
    try:
        arch = arch_of(model)
    except ValueError as exc:
        raise ConvertError(f"{opts.model}: {exc}") from None
    found = find_run(opts.model)
    run, split = found if found else (None, 0)
    representation = opts.representation or (run.representation if run else "rgb")
    if representation not in REPRESENTATIONS:
        raise ConvertError(f"--representation {representation!r} is not one of {', '.join(REPRESENTATIONS)}")
    frames, size = (run.frames, run.size) if run else (20, 64)
    sampling = run.window_sampling() if run else WindowSampling("spread", frames)
    expected = (frames, *input_shape(representation, size, size))
    actual = tuple(model.input_shape[1:])
    if actual != expected:
        raise ConvertError(
            f"{opts.model}: model input is {'x'.join(map(str, actual))} but the bundle needs "
            f"{'x'.join(map(str, expected))} (frames x model input for representation {representation!r}); "
            "train with matching --frames/--size/--representation"
        )
    data = held_out(run, split, opts.data, opts.cache, frames, size, representation)
    labels = run.labels if run else data.labels
    anomaly = opts.anomaly_classes if opts.anomaly_classes is not None else (run.anomaly_labels if run else [])
    name = opts.name or out_name(opts.out)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", name):
        raise ConvertError(f"--name {name!r}: use up to 100 letters, digits, '.', '_' or '-' (it is in every event)")
    unknown = [a for a in anomaly if a not in labels]
    if unknown:
        raise ConvertError(f"--anomaly-classes {', '.join(unknown)} not among the labels {', '.join(labels)}")
    if int(model.output_shape[-1]) != len(labels):
        raise ConvertError(f"{opts.model}: model has {model.output_shape[-1]} outputs but there are {len(labels)} "
                           f"classes ({', '.join(labels)})")
    return _Inputs(model, arch, run, split, representation, frames, size, sampling, data, labels, anomaly, name)


def _checked_twins(inputs: _Inputs, opts: ConvertOptions, windows: np.ndarray) -> Any:
    """Step 2: the batch-1 twins, refused unless they give the training graph's output on held-out windows.

    Single windows are compared: with interval sampling a clip's probabilities are the mean of several
    windows, so they are not what one window gives.
    """
    from converter.twins import build_twins

    keras_probs = ds.keras_predictor(inputs.model)(windows)
    twins = build_twins(inputs.model, inputs.arch, opts.whole_window)
    twin_diff = float(np.abs(twins.predict(windows) - keras_probs).max())
    if twin_diff > TWIN_TOLERANCE:
        raise ConvertError(f"inference twin differs from the trained model by {twin_diff:.2e} (> {TWIN_TOLERANCE})")
    opts.log(f"twin check: max |twin - keras| = {twin_diff:.2e} on {len(windows)} held-out windows")
    return twins


def _calibration(inputs: _Inputs, opts: ConvertOptions, rng: np.random.Generator) -> np.ndarray | None:
    """Step 3's int8 calibration windows: --calibration clips, else the run's clips that are not held out."""
    if opts.quantize != "int8":
        return None
    if opts.calibration:
        calib_data = ds.load_dataset(opts.calibration, inputs.labels, inputs.frames, inputs.size, opts.cache,
                                     version=inputs.preprocess_version, representation=inputs.representation)
    elif inputs.run:
        run = inputs.run
        held = {item.clip.name for item in inputs.data.clips}
        all_clips = ds.load_dataset(run.source_list(), run.options.get("classes"), inputs.frames, inputs.size,
                                    opts.cache, class_map=run.class_map, sampling=inputs.sampling,
                                    version=inputs.preprocess_version, representation=inputs.representation)
        calib_data = ds.Dataset([c for c in all_clips.clips if c.clip.name not in held], inputs.labels, [], "")
    else:
        raise ConvertError("--quantize int8 needs calibration clips: pass --calibration DATA_DIR")
    chosen = rng.permutation(len(calib_data.clips))[:CALIBRATION_WINDOWS]
    return ds.windows([calib_data.clips[i] for i in chosen], inputs.frames, inputs.representation)


def _build_bundle(
    inputs: _Inputs, opts: ConvertOptions, twins: Any, calibration: np.ndarray | None, work: Path
) -> tuple[Path, Manifest]:
    """Step 3: export, convert with builtin ops only and write the bundle with its first manifest."""
    import tensorflow as tf

    keys = _export(twins, inputs.frames, input_shape(inputs.representation, inputs.size, inputs.size), work / "saved")
    opts.log(f"converting ({opts.quantize}, builtin ops only)...")
    flat = _tflite_bytes(work / "saved", keys, opts.quantize, twins, calibration)
    bundle = work / "bundle"
    bundle.mkdir()
    model_file = bundle / MODEL_NAME
    model_file.write_bytes(flat)
    run = inputs.run
    recorded = run.sampling if run else inputs.sampling.manifest([(len(d.frames), d.fps) for d in inputs.data.clips])
    manifest = Manifest(
        name=inputs.name,
        version=opts.version,
        arch=inputs.arch,
        labels=inputs.labels,
        anomaly_labels=inputs.anomaly,
        input={"frames": inputs.frames, "height": inputs.size, "width": inputs.size, "channels": inputs.channels,
               "representation": inputs.representation, "preprocess_version": inputs.preprocess_version},
        sampling=Sampling(**recorded),
        quantization=opts.quantize,
        signatures=_signatures(model_file),
        sha256=sha256_file(model_file),
        size_bytes=model_file.stat().st_size,
        converter_version=metadata.version("rclstm-edge"),
        tensorflow_version=tf.__version__,
        created_at=datetime.now(timezone.utc),
        training=_training_record(run, inputs.split),
    )
    write_manifest(bundle, manifest)
    return bundle, manifest


def _parity(inputs: _Inputs, litert: BundleModel, keras_all: np.ndarray, log: Callable[[str], None]) -> _Parity:
    """Step 4: Keras vs the bundle on every held-out clip (the gates on it run after step 5)."""
    labels = inputs.labels
    bundle_all = ds.clip_probs(lambda w: np.stack([litert.predict_window(x) for x in w]), inputs.data.clips,
                               inputs.sampling, inputs.representation, SCORE_CHUNK)
    y_all = np.array([labels.index(item.clip.label) for item in inputs.data.clips])
    keras_result = scores(y_all, keras_all.argmax(1), labels, inputs.anomaly)
    bundle_result = scores(y_all, bundle_all.argmax(1), labels, inputs.anomaly)
    summary = {
        "clips": len(y_all),
        "max_abs_diff": float(np.abs(bundle_all - keras_all).max()),
        "top1_agreement": float(np.mean(bundle_all.argmax(1) == keras_all.argmax(1))),
        "keras_accuracy": keras_result["macro"]["accuracy"],  # type: ignore[index]
        "bundle_accuracy": bundle_result["macro"]["accuracy"],  # type: ignore[index]
    }
    log(f"parity on {len(y_all)} held-out clips: max |diff| {summary['max_abs_diff']:.2e}, "
        f"top-1 agreement {summary['top1_agreement']:.1%}, accuracy keras {summary['keras_accuracy']:.3f} "
        f"vs bundle {summary['bundle_accuracy']:.3f}")
    return _Parity(summary, keras_result, bundle_result)


def _verify_runtimes(
    opts: ConvertOptions, manifest: Manifest, bundle: Path, litert: BundleModel, windows: np.ndarray, work: Path,
    notes: list[str],
) -> tuple[list[RuntimeCheck], list[dict[str, Any]]]:
    """Step 5: every available device runtime against TensorFlow's interpreter; also times each for the budget."""
    reference = _tf_reference(bundle / MODEL_NAME, manifest, windows)
    tolerance = FLOAT_TOLERANCE if opts.quantize in FLOAT_MODES else INT8_STEP
    bundle_probs = np.stack([litert.predict_window(w) for w in windows])
    results = [(litert.runtime.name, litert.runtime.version, bundle_probs)]
    timings = [{"runtime": litert.runtime.name, **time_model(litert, windows[0], BUDGET_REPEATS)}]
    python = _verify_python(opts)
    if python:
        probs, info = _other_runtime(python, bundle, windows, work)
        results.append((info["runtime"], info["version"], probs))
        timings.append(info)
    else:
        notes.append("tflite-runtime not checked: set RCLSTM_TFLITE_PYTHON or pass --verify-python")
    checks = []
    for runtime, version, probs in results:
        diff = float(np.abs(probs - reference).max())
        agreement = float(np.mean(probs.argmax(1) == reference.argmax(1)))
        opts.log(f"runtime {runtime} {version}: max |diff| vs TensorFlow's interpreter {diff:.2e} "
                 f"(tolerance {tolerance:.1e}), top-1 agreement {agreement:.1%}")
        if diff > tolerance and not opts.force:
            raise ConvertRefused(f"{runtime} {version} differs from TensorFlow's result by {diff:.2e} "
                                 f"(> {tolerance:.1e}); the bundle is not trustworthy there (--force to keep)")
        checks.append(RuntimeCheck(runtime=runtime, version=version, max_abs_diff=diff, top1_agreement=agreement))
    return checks, timings


def _quality_gates(opts: ConvertOptions, parity: dict[str, float]) -> None:
    """Step 4's refusals: int8 may lose at most MAX_INT8_DROP accuracy, float modes must agree on MIN_TOP1."""
    if opts.force:
        return
    drop = parity["keras_accuracy"] - parity["bundle_accuracy"]
    if opts.quantize == "int8" and drop > MAX_INT8_DROP:
        raise ConvertRefused(f"int8 bundle loses {drop:.1%} accuracy on held-out clips (> {MAX_INT8_DROP:.0%}); "
                             "use --quantize dynamic, more --calibration clips, or --force")
    if opts.quantize != "int8" and parity["top1_agreement"] < MIN_TOP1:
        raise ConvertRefused(f"bundle agrees with the Keras model on only {parity['top1_agreement']:.1%} of "
                             f"held-out clips (< {MIN_TOP1:.0%}); --force to keep it anyway")


def _manifest_metrics(inputs: _Inputs, opts: ConvertOptions, parity: _Parity, work: Path) -> dict[str, Metrics]:
    """This split's Keras and bundle metrics and, step 6, the mean and spread over every split (or the
    run's Keras summary without --every-split)."""
    run = inputs.run
    view = "binary" if inputs.anomaly else "macro"
    metrics = {"keras": _metrics(parity.keras, view), "bundle": _metrics(parity.bundle, view)}
    summary_path = run.run_dir / "metrics.json" if run and run.run_dir else None
    if opts.every_split:
        per_split = _score_every_split(opts, run, inputs.split, {"keras": parity.keras, "bundle": parity.bundle}, work)
        for kind in ("keras", "bundle"):
            summary = summarize([result[kind] for result in per_split])
            metrics[f"{kind}_runs"] = _summary_metrics(summary, view)
            row = metrics[f"{kind}_runs"]
            opts.log(f"over {row.runs} splits ({row.clips} held-out clips), {kind}: accuracy {row.accuracy:.3f} ± "
                     f"{row.accuracy_std:.3f}, precision {row.precision:.3f} ± {row.precision_std:.3f}, recall "
                     f"{row.recall:.3f} ± {row.recall_std:.3f}, F1 {row.f1:.3f} ± {row.f1_std:.3f}")
    elif summary_path and summary_path.is_file():
        summary = json.loads(summary_path.read_text())["summary"]
        if view in summary:
            metrics["keras_runs"] = _summary_metrics(summary, view)
    return metrics


def _device_budget(
    inputs: _Inputs, timings: list[dict[str, Any]], manifest: Manifest, log: Callable[[str], None]
) -> DeviceBudget:
    """The device budget from the model's MACs and the runtimes' timings, at the device's hop."""
    from converter.budget import budget, model_macs, table

    device = budget(model_macs(inputs.model), timings, manifest.sampling.frame_interval_s,
                    inputs.run.hop if inputs.run else DEFAULT_HOP)
    log("device budget:\n" + table(device))
    return device


def _score_every_split(
    opts: ConvertOptions, run: RunRecord | None, split: int, this: dict[str, dict[str, Any]], work: Path
) -> list[dict[str, dict[str, Any]]]:
    """Keras and bundle scores of every split's model, each converted exactly like this one."""
    models = sorted(run.run_dir.glob("runs/[0-9]*/model.keras")) if run and run.run_dir else []
    if len(models) < 2:
        raise ConvertError(f"--every-split: {opts.model} is not from a run with several splits; "
                           "train with --seeds N or --folds K")
    results = []
    for path in models:
        index = int(path.parent.name)
        if index == split:
            results.append(this)
            continue
        opts.log(f"split {index}: converting {path} the same way to score it")
        quiet = replace(opts, model=path, out=work / f"split-{index:02d}", every_split=False, log=lambda _: None)
        try:
            results.append(convert(quiet).scores)
        except ConvertRefused as exc:
            raise ConvertRefused(f"split {index} ({path}): {exc}") from None
    return results
