"""TFLite runtime: open ai-edge-litert (else tflite-runtime) and run a bundle's signatures.

Both runtimes expose the same ``Interpreter`` API, so the rest of the device code never knows
which one it has. The wrapper checks the model file against the manifest once at load, so a bundle
whose tensors disagree with what its manifest promises is refused before the first frame.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import BundleError, Manifest, load_bundle
from edge.core.config import ModelConfig, RuntimeName
from edge.models import resolve_bundle
from edge.preprocess import input_shape

log = logging.getLogger(__name__)

# (distribution name, module holding Interpreter), in order of preference.
RUNTIMES: tuple[tuple[str, str], ...] = (
    ("ai-edge-litert", "ai_edge_litert.interpreter"),
    ("tflite-runtime", "tflite_runtime.interpreter"),
)
INSTALL_HINT = (
    "no TFLite runtime is installed: pip install 'rclstm-edge[litert]' "
    "(or 'rclstm-edge[tflite]' on Python <= 3.11 with numpy 1.x)"
)


class RuntimeMissing(RuntimeError):
    """Neither supported TFLite runtime can be imported."""


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    version: str


def open_interpreter(model_path: Path, num_threads: int = 1, runtime: RuntimeName = "auto") -> tuple[Any, RuntimeInfo]:
    """Create an allocated interpreter with the preferred (or the named) runtime."""
    candidates = [r for r in RUNTIMES if runtime in ("auto", r[0])]
    for dist, module_name in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            interpreter = module.Interpreter(model_path=str(model_path), num_threads=num_threads)
        except (ValueError, RuntimeError) as exc:
            reason = _first_line(exc)
            raise BundleError(f"{model_path}: {dist} cannot load it ({reason}); convert the model again") from None
        return interpreter, RuntimeInfo(dist, _version(dist))
    if runtime != "auto":
        raise RuntimeMissing(f"runtime {runtime} is not installed; {INSTALL_HINT}")
    raise RuntimeMissing(INSTALL_HINT)


@contextlib.contextmanager
def native_output_to_log() -> Iterator[None]:
    """Route what the runtime's C++ code prints on stderr into the log, at debug level.

    ai-edge-litert prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to file
    descriptor 2 when a model is first run, with no switch to turn it off; in the journal that line
    breaks the daemon's one-logfmt-line-per-record format. Models load before any thread starts,
    so borrowing fd 2 for that moment takes nothing from anyone else.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if line.strip():
                    log.debug("runtime: %s", line.strip())


def _first_line(exc: BaseException) -> str:
    """The runtime's error in one line: its messages carry multi-line C++ context nobody needs."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


class _Signature:
    """One signature runner with a single input and a single output, named by the manifest."""

    def __init__(self, interpreter: Any, name: str, manifest: Manifest, model_path: Path) -> None:
        spec = manifest.signatures[name]
        available = interpreter.get_signature_list()
        if name not in available:
            raise BundleError(
                f"{model_path}: signature {name!r} is in the manifest but not in the model "
                f"(model has {sorted(available)}); convert the model again"
            )
        self.runner = interpreter.get_signature_runner(name)
        self.input_name = spec.inputs[0].name
        self.output_name = spec.outputs[0].name
        details = self.runner.get_input_details()
        if self.input_name not in details:
            raise BundleError(f"{model_path}: signature {name!r} has no input {self.input_name!r}")
        actual = [int(d) for d in details[self.input_name]["shape"]]
        if actual != list(spec.inputs[0].shape):
            raise BundleError(
                f"{model_path}: signature {name!r} input shape {actual} does not match the manifest's "
                f"{spec.inputs[0].shape}; convert the model again"
            )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.runner(**{self.input_name: x})[self.output_name]


class BundleModel:
    """A loaded bundle: encode a frame, classify a window of features, or predict a whole window.

    Streaming bundles (RCLSTM) carry ``encode`` and ``classify``; whole-window bundles (ConvLSTM)
    carry ``window``. ``predict_window`` works for both, which is what evaluation uses.
    """

    def __init__(self, bundle_dir: Path, num_threads: int = 1, runtime: RuntimeName = "auto") -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest, model_path = load_bundle(self.bundle_dir)
        with native_output_to_log():
            self._load(model_path, num_threads, runtime)

    def _load(self, model_path: Path, num_threads: int, runtime: RuntimeName) -> None:
        self.interpreter, self.runtime = open_interpreter(model_path, num_threads, runtime)
        self._signatures = {
            name: _Signature(self.interpreter, name, self.manifest, model_path) for name in self.manifest.signatures
        }
        spec = self.manifest.input
        frame_shape = list(input_shape(spec.representation, spec.height, spec.width))
        expected_input = [1, *frame_shape] if self.manifest.streaming else [1, spec.frames, *frame_shape]
        declared = list(self.manifest.signatures[first_name(self.manifest)].inputs[0].shape)
        if declared != expected_input:
            raise BundleError(
                f"{model_path}: input shape {declared} does not match the manifest's input spec "
                f"{expected_input}; convert the model again"
            )
        self._self_test(model_path)

    def _self_test(self, model_path: Path) -> None:
        """Run every signature once on zeros.

        A damaged model (or a converter bug) can pass the sha256 and load, then fail when its tensors
        are first allocated; finding that here gives a one-line error at start instead of a traceback
        in a camera thread, and the first real frame does not pay for the allocation.
        """
        for name, signature in self._signatures.items():
            shape = self.manifest.signatures[name].inputs[0].shape
            try:
                signature(np.zeros(shape, np.float32))
            except (RuntimeError, ValueError) as exc:
                reason = _first_line(exc)
                raise BundleError(f"{model_path}: signature {name!r} cannot run ({reason}); convert the model again") \
                    from None

    @classmethod
    def configured(cls, spec: ModelConfig, bundle: str | None = None) -> BundleModel:
        """The configured bundle (or ``bundle``, a built-in name or a path, instead) with its runtime settings."""
        return cls(resolve_bundle(bundle or spec.bundle), spec.num_threads, spec.runtime)

    def recommended_decision(self) -> dict[str, float | int]:
        """The decision settings the bundle recommends for itself (none for bundles without them)."""
        return self.manifest.decision.settings() if self.manifest.decision else {}

    def recommended_classifier(self) -> dict[str, int]:
        """The classifier settings (the hop) the bundle's decision settings were chosen at, if it records them."""
        return self.manifest.decision.classifier_settings() if self.manifest.decision else {}

    @property
    def streaming(self) -> bool:
        return self.manifest.streaming

    def encode(self, model_input: np.ndarray) -> np.ndarray:
        """One frame input (H x W x C) to its feature vector."""
        return self._signatures["encode"](model_input[np.newaxis].astype(np.float32, copy=False))[0]

    def classify(self, features: np.ndarray) -> np.ndarray:
        """A window of feature vectors (T x F) to class probabilities (K)."""
        return self._signatures["classify"](features[np.newaxis].astype(np.float32, copy=False))[0]

    def predict_window(self, inputs: np.ndarray) -> np.ndarray:
        """A whole window of inputs (T x H x W x C) to class probabilities (K)."""
        if self.streaming:
            return self.classify(np.stack([self.encode(x) for x in inputs]))
        return self._signatures["window"](inputs[np.newaxis].astype(np.float32, copy=False))[0]


def first_name(manifest: Manifest) -> str:
    """The signature that receives frames: ``encode`` for streaming bundles, ``window`` otherwise."""
    return "encode" if manifest.streaming else "window"
