"""One camera's processing chain: frames in, events out (sampler -> classifier -> decider -> events).

It holds no threads, sockets or clocks of its own, so the daemon runs one per camera on live frames
and ``replay`` runs the same object over a file, and both produce the same events for the same frames.

A source gap (the camera was lost and reopened) closes any open incident at the last frame seen
before the gap: frames either side of a gap do not form one window, nothing is known about the
scene while the camera was away, and an incident left open across an outage of unknown length
would have no honest end time. The camera's offline status tells the backend about the gap itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge.classifier import Prediction, StreamClassifier
from edge.config import CameraConfig, DecisionConfig
from edge.decision import Decider, EndReason, Transition
from edge.events import Event, build_event
from edge.runtime import BundleModel
from edge.sampler import Sampler
from edge.sources import ORDERLY_OFFLINE, Frame

Emit = Callable[[Event, Transition], None]
# Sees every classified window after the decision took it in (replay and calibration need the scores
# between transitions too, and the decider's state that window left behind).
WindowHook = Callable[[Prediction], None]

log = logging.getLogger(__name__)


class CameraPipeline:
    def __init__(
        self,
        camera: CameraConfig,
        decision: DecisionConfig,
        model: BundleModel,
        device_id: str,
        site: str,
        emit: Emit,
        on_window: WindowHook | None = None,
    ) -> None:
        self.camera = camera
        self.model = model
        self.device_id = device_id
        self.site = site
        self.emit = emit
        self.on_window = on_window
        self.sampler = Sampler(model.manifest.sampling.frame_interval_s)
        self.classifier = StreamClassifier(model, decision.hop, decision.scene_cut)
        self.decider = Decider(decision)
        self.frames_in = 0
        self.events = 0
        self.score: float | None = None  # the newest window's anomaly score, for stats and dashboards
        self._last: Frame | None = None

    def process(self, frame: Frame) -> None:
        """Feed one captured frame; emits any events it completes."""
        self.frames_in += 1
        self._last = frame
        sampled = self.sampler.offer(frame)
        if sampled is None:
            return
        prediction = self.classifier.push(sampled)
        if prediction is not None:
            if self.classifier.classified == 1:  # start-up is measured to here (bench/memory_startup.py)
                log.info("first window", extra={"fields": {"camera": self.camera.id, "ts": round(frame.ts, 3)}})
            self.score = prediction.anomaly_score
            self._publish(self.decider.update(prediction))
            if self.on_window is not None:
                self.on_window(prediction)

    def gap(self, reason: str) -> None:
        """The source went offline (``reason`` as the source reports it): close an open incident at the
        last frame and start the window afresh. A file that ended is a stop, anything else a loss."""
        self._close("stopped" if reason in ORDERLY_OFFLINE else "camera_lost")
        self.sampler.reset()
        self.classifier.reset()

    def finish(self) -> None:
        """End of stream or shutdown: close an open incident at the last frame seen."""
        self._close("stopped")

    def stats(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "frames_sampled": self.classifier.sampled,
            "bad_frames": self.classifier.bad_frames,
            "windows": self.classifier.classified,
            "scene_cuts": self.classifier.scene_cuts,
            "inference_ms": round(self.classifier.inference_ms_mean, 2),
            "inference_ms_last": round(self.classifier.inference_ms_last, 2),
            "score": None if self.score is None else round(self.score, 4),
            "incidents": self.decider.incidents,
            "incident_open": self.decider.open,
            "events": self.events,
        }

    def _close(self, reason: EndReason) -> None:
        if self._last is not None:
            self._publish(self.decider.close(self._last.wall, self._last.ts, reason))

    def _publish(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            event = build_event(transition, self.device_id, self.site, self.camera.id, self.model.manifest)
            self.events += 1
            self.emit(event, transition)
