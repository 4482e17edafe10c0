"""The model bundle: the contract between the converter (which writes it) and the device (which runs it).

A bundle is a directory holding ``model.tflite`` and ``manifest.json``. The manifest says everything
the device needs to feed the model the way it was trained (input size, representation, how far
apart training frames were in time) and everything an operator needs to trust it (sha256, the
runtimes it was verified on, its measured metrics). The device owns this contract, so it lives in
``edge/`` and the converter imports it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.core.config import key_path
from edge.preprocess import (
    PREPROCESS_VERSION,
    SUPPORTED_PREPROCESS_VERSIONS,
    Representation,
    channels_for,
    prepare_frame,
    reads_grey,
)

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.tflite"

Quantization = Literal["float32", "float16", "dynamic", "int8"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)


class BundleError(Exception):
    """A bundle that cannot be used; the message is one line naming the file and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """What one model input is: ``frames`` inputs per window, each ``height x width x channels``."""

    frames: int = Field(20, ge=2, le=256)
    height: int = Field(64, ge=8, le=1024)
    width: int = Field(64, ge=8, le=1024)
    channels: int = Field(3, ge=1, le=16)
    color_order: Literal["RGB"] = "RGB"
    scale: float = Field(1.0 / 255.0, gt=0)
    representation: Representation = "rgb"
    dtype: Literal["float32"] = "float32"
    # Which edge.preprocess.prepare_frame the model was trained with (1 = before the version was recorded).
    preprocess_version: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _channels_match(self) -> InputSpec:
        expected = channels_for(self.representation)
        if self.channels != expected:
            raise ValueError(f"channels is {self.channels} but representation {self.representation!r} has {expected}")
        return self

    @property
    def grey(self) -> bool:
        """Whether this model's frames are prepared grey (``edge.preprocess.reads_grey``)."""
        return reads_grey(self.representation, self.preprocess_version)

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """A camera frame prepared as this model was trained (``edge.preprocess.prepare_frame``)."""
        return prepare_frame(frame, self.height, self.width, self.preprocess_version, self.grey)


class Sampling(_Strict):
    """How training picked frames, so the device can pick them the same way by timestamp.

    ``spread``: training spread ``frames + 1`` frames evenly over each clip; ``frame_interval_s`` is the
    typical (median) time between two of them. ``interval``: training took frames exactly
    ``frame_interval_s`` apart (several windows from a long clip), the time scale the device serves.
    Either way the device samples its stream at ``frame_interval_s``, so a live window spans the time
    a training window did.
    """

    method: Literal["spread", "interval"] = "spread"
    frame_interval_s: float = Field(gt=0, le=60)
    window_s: float = Field(gt=0)
    interval_min_s: float | None = None
    interval_max_s: float | None = None


class TensorSpec(_Strict):
    name: str
    shape: list[int]


class SignatureSpec(_Strict):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Metrics(_Strict):
    """Scores on held-out clips; ``*_std`` is the spread over seeds or folds when there were several."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    accuracy_std: float | None = None
    precision_std: float | None = None
    recall_std: float | None = None
    f1_std: float | None = None
    clips: int | None = None
    runs: int | None = None
    view: Literal["macro", "binary"] = "macro"


class RuntimeCheck(_Strict):
    """A runtime the bundle was loaded and run in, and how far its outputs were from TensorFlow's."""

    runtime: str
    version: str
    max_abs_diff: float
    top1_agreement: float


class Figure(_Strict):
    """A metric with its 95 % interval from a bootstrap over groups (None where undefined: no alarm, no group)."""

    value: float | None
    low: float | None = None
    high: float | None = None


class SourceResult(_Strict):
    """One row of `rclstm-convert crosseval`, pooled over ``seeds``.

    ``protocol`` "loso" trained on every other source and tested on all of ``source``; "group" is a
    group split over all sources pooled, scored on ``source``'s held-out clips. ``level`` "clip" scores
    each clip; "event" runs the daemon's decision rule and counts an alarm as an incident opened.
    """

    protocol: Literal["loso", "group"]
    level: Literal["clip", "event"]
    source: str
    units: int = Field(ge=0)
    seeds: list[int]
    balanced_accuracy: Figure
    accuracy: Figure
    precision: Figure
    recall: Figure
    f1: Figure


class TrainingData(_Strict):
    """A dataset the model learned from, and the terms it may be used under (the model card's data list)."""

    name: str
    clips: int = Field(ge=0)
    licence: str


class DeviceBudget(_Strict):
    """What the model costs a device per camera (see converter.budget): exact MACs, measured x86 ms, a Pi 4 estimate."""

    mac_per_frame: int = Field(ge=0)  # per sampled frame, the window's classify spread over the hop
    mac_per_window: int = Field(ge=0)
    mac_per_video_second: float = Field(ge=0)
    x86_ms_per_frame: dict[str, float]  # runtime name -> model ms per sampled frame, one thread
    pi4_ms_per_frame_estimate: float = Field(ge=0)
    pi4_core_share_estimate: float = Field(ge=0)  # share of one Pi 4 core per camera


class RecommendedDecision(_Strict):
    """Decision settings chosen for this model (``crosseval``'s sweep over held-out sources).

    A model's scores have their own scale: the threshold that suits one model is too strict or too
    loose for another, so the bundle carries its own; a config that sets a value still wins.
    """

    threshold: float = Field(ge=0.0, le=1.0)
    start_windows: int = Field(ge=1, le=1000)
    # The classifier.hop the settings were chosen at: start_windows counts windows, so the same count
    # means another span of video at another hop. None (bundles before it was recorded): the config's.
    hop: int | None = Field(None, ge=1, le=256)
    chosen_by: str = Field(max_length=500)

    def settings(self) -> dict[str, float | int]:
        """The decision keys this recommends, as ``Config.decision_for`` takes them."""
        return {"threshold": self.threshold, "start_windows": self.start_windows}

    def classifier_settings(self) -> dict[str, int]:
        """The classifier keys this recommends, as ``Config.classifier_for`` takes them."""
        return {} if self.hop is None else {"hop": self.hop}


class Manifest(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    version: str = Field(min_length=1, max_length=50)
    arch: Literal["rclstm", "convlstm"]
    labels: list[str] = Field(min_length=2)
    anomaly_labels: list[str] = Field(default_factory=list)
    input: InputSpec
    sampling: Sampling
    quantization: Quantization
    # "encode" + "classify" (streaming RCLSTM) or "window" (whole-window, e.g. ConvLSTM).
    signatures: dict[str, SignatureSpec]
    model_file: str = MODEL_NAME
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    converter_version: str
    tensorflow_version: str
    created_at: datetime
    verified_runtimes: list[RuntimeCheck] = Field(default_factory=list)
    metrics: dict[str, Metrics] = Field(default_factory=dict)
    training: dict[str, str | int | float | bool | list[str] | None] = Field(default_factory=dict)
    data: list[TrainingData] = Field(default_factory=list)
    crosseval: list[SourceResult] = Field(default_factory=list)
    budget: DeviceBudget | None = None
    decision: RecommendedDecision | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        unknown = [a for a in self.anomaly_labels if a not in self.labels]
        if unknown:
            raise ValueError(f"anomaly_labels {unknown} are not in labels {self.labels}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels {self.labels} contain duplicates")
        names = set(self.signatures)
        if names not in ({"encode", "classify"}, {"window"}):
            raise ValueError(f"signatures {sorted(names)} must be ['classify', 'encode'] or ['window']")
        if "/" in self.model_file or "\\" in self.model_file or self.model_file.startswith("."):
            raise ValueError(f"model_file {self.model_file!r} must be a plain file name inside the bundle")
        return self

    def chance_warning(self, margin: float = 0.05) -> str | None:
        """A sentence when the recorded held-out accuracy of the bundle is within ``margin`` of chance."""
        metrics = self.metrics.get("bundle") or self.metrics.get("keras")
        if metrics is None:
            return None
        # The binary view scores Normal vs Anomaly; otherwise chance is one in the number of labels.
        chance = 0.5 if metrics.view == "binary" else 1.0 / len(self.labels)
        if metrics.accuracy > chance + margin:
            return None
        return (f"bundle {self.name} {self.version} records accuracy {metrics.accuracy:.2f} on its held-out clips, "
                f"about chance ({chance:.2f}): its alerts are no better than guessing; retrain it or use 'builtin'")

    @property
    def streaming(self) -> bool:
        """True when frames can be encoded once and windows classified from cached features."""
        return "encode" in self.signatures


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = key_path(err["loc"]) or "manifest"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)


MANIFEST_MAX_BYTES = 1_000_000  # a real one is a few kB


def read_manifest(bundle_dir: Path) -> Manifest:
    """Read and validate a bundle's manifest without touching the model file."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not Path(bundle_dir).is_dir():
        raise BundleError(f"{bundle_dir}: not a bundle directory (expected a folder with {MANIFEST_NAME})")
    if path.exists() and not path.is_file():  # a directory, or a link to a device such as /dev/zero
        raise BundleError(f"{path}: not a regular file; the bundle is damaged, copy it again")
    try:
        with path.open("rb") as fh:
            data = fh.read(MANIFEST_MAX_BYTES + 1)
        if len(data) > MANIFEST_MAX_BYTES:
            raise BundleError(f"{path}: larger than {MANIFEST_MAX_BYTES} bytes, not a manifest; copy the bundle again")
        raw = json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; convert the model again with `rclstm-convert convert`") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc.strerror or exc}); check the bundle's files") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc}); the bundle is damaged, copy it again") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: expected a JSON object; the bundle is damaged, copy it again")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{path}: {_first_error(exc)}") from None


def _either(versions: tuple[int, ...]) -> str:
    """``(2, 3, 4)`` as "v2, v3 or v4"."""
    names = [f"v{v}" for v in versions]
    return " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else names[0]


def load_bundle(bundle_dir: Path) -> tuple[Manifest, Path]:
    """Validate a bundle and check its model file against the manifest's sha256.

    A truncated copy or a swapped model file would otherwise run and silently give other answers;
    refusing it here is what lets an operator trust the model name and hash in every event.
    """
    manifest = read_manifest(bundle_dir)
    if manifest.input.preprocess_version not in SUPPORTED_PREPROCESS_VERSIONS:
        raise BundleError(
            f"{Path(bundle_dir) / MANIFEST_NAME}: the model was trained on frame preprocessing "
            f"v{manifest.input.preprocess_version} but this rclstm-edge prepares frames with "
            f"{_either(SUPPORTED_PREPROCESS_VERSIONS)}; "
            f"train and convert the model again (it trains with v{PREPROCESS_VERSION})"
        )
    model_path = Path(bundle_dir) / manifest.model_file
    if not model_path.is_file():
        raise BundleError(f"{model_path}: missing; the bundle is incomplete, copy it again")
    actual = sha256_file(model_path)
    if actual != manifest.sha256:
        raise BundleError(
            f"{model_path}: sha256 {actual[:12]}... does not match the manifest's {manifest.sha256[:12]}...; "
            "the model file was changed or damaged, copy the bundle again"
        )
    return manifest, model_path


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    path = Path(bundle_dir) / MANIFEST_NAME
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
