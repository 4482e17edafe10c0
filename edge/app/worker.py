"""One camera's thread: its source feeds its pipeline, whose outputs go to the sink.

Each worker has its own interpreter (they are not thread-safe). The source's state changes arrive
here, on the camera's own thread: going offline closes the pipeline's window (and any incident)
before the sink hears that the camera is offline.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from edge.adapters.clips import ClipStore
from edge.adapters.runtime import BundleModel
from edge.adapters.sources import CameraSource
from edge.core.config import CameraConfig, Config
from edge.core.messages import CameraStats, CameraStatus
from edge.core.values import Output, SourceState
from edge.preprocess import SNAPSHOT_MAX
from edge.sinks.base import Sink
from edge.sinks.clips import ClipRecorder
from edge.stages.pipeline import CameraPipeline

log = logging.getLogger(__name__)


def kept_size(config: Config, clips: bool) -> tuple[int, int] | None:
    """(width, height) a sampled picture must keep beyond the model's input: for snapshots, for clips."""
    sizes = ([SNAPSHOT_MAX] if config.mqtt.snapshots else []) + ([(config.clips.width, 0)] if clips else [])
    return (max(w for w, _ in sizes), max(h for _, h in sizes)) if sizes else None


class CameraWorker:
    def __init__(self, camera: CameraConfig, config: Config, model: BundleModel, sink: Sink,
                 clips: ClipStore | None = None) -> None:
        self.camera = camera
        self.sink = sink
        decision = config.decision_for(camera, model.recommended_decision())
        classifier = config.classifier_for(camera, model.recommended_classifier())
        self.recorder = None if clips is None else ClipRecorder(
            clips, config.clips, camera.id, config.device_id, config.site, model.manifest, decision, classifier.hop)
        recorder = self.recorder
        self.pipeline = CameraPipeline(camera, decision, classifier, model, config.device_id,
                                       config.site, on_window=recorder.window if recorder else None,
                                       on_sampled=recorder.sampled if recorder else None,
                                       keep_size=kept_size(config, clips is not None))
        self.source = CameraSource(camera, on_state=self._source_state)
        self.thread: threading.Thread | None = None
        self.started = time.monotonic()
        self.error: str | None = None

    def start(self, stop: threading.Event) -> None:
        self.thread = threading.Thread(target=self._run, args=(stop,), name=f"camera-{self.camera.id}", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def progress(self) -> float:
        """Monotonic time of the last sign of life from the capture/processing loop."""
        return max(self.started, self.source.heartbeat)

    def stale_after(self) -> float:
        """How long the loop may legitimately block: an open or a read waiting for its timeout."""
        c = self.camera
        return 2 * max(c.open_timeout_s, c.read_timeout_s, c.stall_timeout_s)

    def stats(self) -> CameraStats:
        source = self.source
        return CameraStats(
            **self.pipeline.stats().model_dump(),  # CameraStats extends ChainStats: the same fields by definition
            online=source.online,
            reconnects=source.reconnects,
            stalls=source.stalls,
            source_bad_frames=source.bad_frames,
            stale_frames=source.stale_frames,
        )

    def _run(self, stop: threading.Event) -> None:
        try:
            for frame in self.source.frames(stop, self.pipeline.sampler):
                self._emit(self.pipeline.process(frame))
        except Exception as exc:  # a bug in one camera's chain must not take the others down silently
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("camera %s stopped: %s", self.camera.id, self.error)
        finally:
            self._emit(self.pipeline.finish())
            if self.recorder is not None:
                self.recorder.close()

    def _source_state(self, state: SourceState) -> None:
        if state.reason is not None:
            self._emit(self.pipeline.gap(state.reason))
            if self.recorder is not None:
                self.recorder.gap()
        status = CameraStatus(online=state.online, reason=state.text, since=datetime.now(timezone.utc))
        self.sink.camera_state(self.camera.id, status)

    def _emit(self, outputs: list[Output]) -> None:
        for output in outputs:
            self.sink.emit(self.camera.id, output)
            if self.recorder is not None:
                self.recorder.output(output)
