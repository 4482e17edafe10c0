"""One camera's processing chain: frames in, outputs out (sampler -> classifier -> decider -> events).

It holds no threads, sockets, clocks or sinks of its own: each call returns what it produced, so the
daemon's camera worker runs one per camera on live frames and ``replay`` runs the same object over
a file, and both produce the same events for the same frames.

A source gap (the camera was lost and reopened) closes any open incident at the last frame seen
before the gap: frames either side of a gap do not form one window, nothing is known about the
scene while the camera was away, and an incident left open across an outage of unknown length
would have no honest end time. The camera's offline status tells the backend about the gap itself.

The pipeline, not the decision, keeps the frame of the open incident's peak window: the decision
works on scores, and an incident's end carries that frame to the sink for an optional snapshot. Only
when something will use it (``keep_size``: snapshots or incident clips are on): otherwise the chain
holds no camera picture beyond the sampler's candidate and the frame in hand, which at 1280x720 is
2.8 MB for each of the last ``start_windows`` windows and the last frame seen.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from edge.core.config import CameraConfig, ClassifierConfig, DecisionConfig
from edge.core.messages import ChainStats, EndReason
from edge.core.values import Frame, OfflineReason, Output, Prediction, Transition
from edge.preprocess import bound_frame, decode_jpeg
from edge.stages.classifier import StreamClassifier
from edge.stages.decision import Decider
from edge.stages.events import build_event
from edge.stages.sampler import Sampler

if TYPE_CHECKING:
    from edge.adapters.runtime import BundleModel

# Sees every classified window after the decision took it in (replay and calibration need the scores
# between transitions too, and the decider's state that window left behind).
WindowHook = Callable[[Prediction], None]
# Sees every sampled frame before it is classified (incident clips keep what the model saw).
SampleHook = Callable[[Frame], None]

log = logging.getLogger(__name__)


class CameraPipeline:
    def __init__(
        self,
        camera: CameraConfig,
        decision: DecisionConfig,
        classifier: ClassifierConfig,
        model: BundleModel,
        device_id: str,
        site: str,
        on_window: WindowHook | None = None,
        on_sampled: SampleHook | None = None,
        keep_size: tuple[int, int] | None = None,
    ) -> None:
        """``keep_size`` (width, height) is what a sampled picture must keep (for snapshots, clips) when an
        MJPEG camera's JPEGs are decoded at reduced size; None: the model's input size is enough, and
        nothing uses an incident's peak picture, so none is kept (``Output.peak_frame`` is None)."""
        self.camera = camera
        self.model = model
        self.device_id = device_id
        self.site = site
        self.on_window = on_window
        self.on_sampled = on_sampled
        spec = model.manifest.input
        self._decode_size = (max(spec.width, keep_size[0]), max(spec.height, keep_size[1])) \
            if keep_size else (spec.width, spec.height)
        self.sampler = Sampler(model.manifest.sampling.frame_interval_s)
        self.classifier = StreamClassifier(model, classifier.hop, classifier.scene_cut)
        self.decider = Decider(decision)
        self.frames_in = 0
        self.events = 0
        self.score: float | None = None  # the newest window's anomaly score, for stats and dashboards
        self._keep_pictures = keep_size is not None
        self._last: tuple[datetime, float] | None = None  # (wall, ts) of the last frame seen, for a close
        # An incident starts on its start_windows-th window but its peak may be any of them.
        self._recent: deque[tuple[float, np.ndarray | None]] = deque(maxlen=decision.start_windows)
        self._peak: tuple[float, np.ndarray | None] | None = None

    def process(self, frame: Frame) -> list[Output]:
        """Feed one captured frame; returns the outputs it completes (usually none)."""
        self.frames_in += 1 + frame.passed_over
        frame = self._bounded(frame)
        self._last = (frame.wall, frame.ts)
        sampled = self.sampler.offer(frame)
        if sampled is None:
            return []
        if sampled.image is None and sampled.encoded is not None:  # an MJPEG camera's JPEG, decoded once taken
            sampled = self._bounded(replace(sampled, image=decode_jpeg(sampled.encoded, *self._decode_size),
                                            encoded=None))
        if self.on_sampled is not None and sampled.image is not None:  # none: undecodable, the classifier counts it
            self.on_sampled(sampled)
        prediction = self.classifier.push(sampled)
        if prediction is None:
            return []
        if self.classifier.classified == 1:  # start-up is measured to here (bench/memory_startup.py)
            log.info("first window", extra={"fields": {"camera": self.camera.id, "ts": round(frame.ts, 3)}})
        self.score = prediction.anomaly_score
        self._recent.append((prediction.ts, sampled.image if self._keep_pictures else None))
        outputs = self._outputs(self.decider.update(prediction))
        self._keep_peak()
        if self.on_window is not None:
            self.on_window(prediction)
        return outputs

    def gap(self, reason: OfflineReason) -> list[Output]:
        """The source went offline: close an open incident at the last frame and start the window
        afresh. A file that ended or a stop is a stop, a loss is a loss."""
        outputs = self._close("stopped" if reason.orderly else "camera_lost")
        self.sampler.reset()
        self.classifier.reset()
        self._recent.clear()
        return outputs

    def finish(self) -> list[Output]:
        """End of stream or shutdown: close an open incident at the last frame seen."""
        return self._close("stopped")

    def stats(self) -> ChainStats:
        classifier = self.classifier
        return ChainStats(
            frames_in=self.frames_in,
            frames_sampled=classifier.sampled,
            bad_frames=classifier.bad_frames,
            windows=classifier.classified,
            scene_cuts=classifier.scene_cuts,
            inference_ms=round(classifier.inference_ms_mean, 2),
            inference_ms_last=round(classifier.inference_ms_last, 2),
            score=None if self.score is None else round(self.score, 4),
            incidents=self.decider.incidents,
            incident_open=self.decider.open,
            events=self.events,
        )

    def _bounded(self, frame: Frame) -> Frame:
        """The frame with a large image replaced as ``bound_frame`` says (a frame without pixels as it is)."""
        if frame.image is None:
            return frame
        spec = self.model.manifest.input
        kept, model_image = bound_frame(frame.image, spec.height, spec.width, spec.preprocess_version, spec.grey)
        if model_image is None:
            return frame
        return replace(frame, image=kept, model_image=model_image)  # memory bounded, the model's input unchanged

    def _keep_peak(self) -> None:
        peak_ts = self.decider.peak_ts
        if peak_ts is None:
            self._peak = None
        elif self._peak is None or self._peak[0] != peak_ts:
            self._peak = next(kept for kept in self._recent if kept[0] == peak_ts)

    def _close(self, reason: EndReason) -> list[Output]:
        if self._last is None:
            return []
        outputs = self._outputs(self.decider.close(*self._last, reason))
        self._keep_peak()
        return outputs

    def _outputs(self, transitions: list[Transition]) -> list[Output]:
        outputs = []
        for transition in transitions:
            event = build_event(transition, self.device_id, self.site, self.camera.id, self.model.manifest)
            peak = self._peak[1] if transition.kind == "end" and self._peak is not None else None
            outputs.append(Output(event, transition, peak))
        self.events += len(outputs)
        return outputs
