"""Sampled frames in, class probabilities per window out (streaming or whole-window bundles).

A window is ``frames`` model inputs built from ``frames + 1`` consecutive sampled frames, each input
paired with its predecessor, exactly as ``edge.preprocess.window_inputs`` builds training windows;
so after a reset the first sampled frame only serves as the predecessor of the second.

A streaming (RCLSTM) bundle encodes each sampled frame once and keeps the feature vectors in a ring
buffer, so classifying every ``hop`` frames costs one small LSTM run instead of ``frames`` CNN runs.
A whole-window (ConvLSTM) bundle keeps the inputs themselves and runs the full window each time.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from edge.core.values import Frame, Prediction
from edge.preprocess import FrameError, changed_fraction, model_input

if TYPE_CHECKING:
    from edge.adapters.runtime import BundleModel

log = logging.getLogger(__name__)


class StreamClassifier:
    """One camera's window state over a loaded bundle."""

    def __init__(self, model: BundleModel, hop: int, scene_cut: float = 1.0) -> None:
        if hop < 1:
            raise ValueError(f"hop must be at least 1, got {hop}")
        self.model = model
        self.hop = hop
        self.scene_cut = scene_cut
        self.scene_cuts = 0
        manifest = model.manifest
        self._spec = manifest.input
        self._labels = list(manifest.labels)
        self._anomaly = np.array([self._labels.index(a) for a in manifest.anomaly_labels], dtype=np.int64)
        self._buffer: deque[np.ndarray] = deque(maxlen=self._spec.frames)
        self.sampled = 0
        self.classified = 0
        self.bad_frames = 0
        self.inference_ms_last = 0.0
        self._inference_ms_total = 0.0
        self._pending_ms = 0.0  # model time spent since the last window (the encodes of its newest frames)
        self.reset()

    @property
    def inference_ms_mean(self) -> float:
        """Mean model time per classified window, counting every encode (for streaming bundles) between windows.

        That is the compute a camera costs per window whatever the hop, which is what sizing a
        device for N cameras needs.
        """
        return self._inference_ms_total / self.classified if self.classified else 0.0

    def reset(self) -> None:
        """Forget the window after a source gap: frames either side of a gap are not one window."""
        self._buffer.clear()
        self._previous: np.ndarray | None = None
        self._since = self.hop  # the first full window is classified at once

    def push(self, frame: Frame) -> Prediction | None:
        """Add one sampled frame; returns a prediction when a window is due, else None."""
        spec = self._spec
        try:
            image = frame.image if frame.model_image is None else frame.model_image
            prepared = spec.prepare(image)
        except FrameError as exc:
            self.bad_frames += 1
            level = logging.WARNING if self.bad_frames == 1 else logging.DEBUG
            log.log(level, "skipping unusable frame at %.3fs: %s (%d so far)", frame.ts, exc, self.bad_frames)
            return None
        self.sampled += 1
        previous, self._previous = self._previous, prepared
        if previous is None:
            return None
        if self.scene_cut < 1.0 and changed_fraction(prepared, previous) > self.scene_cut:
            # Not movement but a new picture: read as none, like a stream's first frame (see DecisionConfig).
            self.scene_cuts += 1
            log.debug("scene cut at %.3fs (%d so far)", frame.ts, self.scene_cuts)
            previous = None
        started = time.perf_counter()
        x = model_input(prepared, previous, spec.representation)
        self._buffer.append(self.model.encode(x) if self.model.streaming else x)
        self._since += 1
        if len(self._buffer) < spec.frames or self._since < self.hop:
            self._pending_ms += (time.perf_counter() - started) * 1000.0
            return None
        window = np.stack(self._buffer)
        probs = self.model.classify(window) if self.model.streaming else self.model.predict_window(window)
        elapsed = self._pending_ms + (time.perf_counter() - started) * 1000.0
        self._pending_ms = 0.0
        self._since = 0
        self.classified += 1
        self.inference_ms_last = elapsed
        self._inference_ms_total += elapsed
        probs = np.asarray(probs, dtype=np.float32)
        anomaly_label = None
        if self._anomaly.size:
            anomaly_label = self._labels[int(self._anomaly[np.argmax(probs[self._anomaly])])]
        return Prediction(
            probs=probs,
            labels=self._labels,
            top_label=self._labels[int(np.argmax(probs))],
            anomaly_score=float(np.clip(probs[self._anomaly].sum(), 0.0, 1.0)),
            ts=frame.ts,
            wall=frame.wall,
            anomaly_label=anomaly_label,
        )
