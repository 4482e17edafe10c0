"""The daemon's chain over one recording, for the offline tools (replay, calibrate).

Frames come from ``CameraSource`` and go through ``CameraPipeline`` (sampler, classifier, decider,
events) built from the same config section as the daemon's; only the camera's source is replaced by
the file, read as fast as possible, and a source that goes offline is treated as the daemon treats
it (a gap). A file's frames carry "when reading started + position" as wall time, as in the daemon,
so events differ between two runs only in their ids and that starting instant.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cv2

from edge.adapters.runtime import BundleModel
from edge.adapters.sources import DEFAULT_FPS, CameraSource, SourceError, open_capture
from edge.core.config import CameraConfig, ClassifierConfig, Config, ConfigError, DecisionConfig
from edge.core.errors import UsageError
from edge.core.messages import Event
from edge.core.values import Frame, Output, Phase, Prediction, SourceState, Transition
from edge.sinks.base import Sink
from edge.stages.pipeline import CameraPipeline

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg", ".mjpg")

# Sees each frame after the chain took it in, with the newest window and whether an incident is open.
FrameHook = Callable[[Frame, "Window | None", bool], None]


class ReplayError(UsageError):
    """A recording that cannot be replayed; the message is one line naming the file and the fix."""


@dataclass(frozen=True)
class Window:
    """One classified window and the hysteresis phase it left the decider in."""

    phase: Phase
    prediction: Prediction

    @property
    def ts(self) -> float:
        return self.prediction.ts

    @property
    def score(self) -> float:
        return self.prediction.anomaly_score

    @property
    def top_label(self) -> str:
        return self.prediction.top_label


@dataclass(frozen=True)
class Incident:
    """One incident in stream seconds, from its start and end transitions."""

    id: str
    label: str
    start_ts: float  # first qualifying window (the event's started_at)
    end_ts: float  # last window at/above the threshold (the event's ended_at)
    alert_ts: float  # the window that opened it (the start event was sent then)
    closed_ts: float  # the window, or last frame, that closed it (the end event)
    started_at: datetime
    ended_at: datetime
    peak: float
    mean: float
    windows: int
    end_reason: str  # the end event's: calm, or stopped when the recording ended with the incident open


@dataclass
class Scan:
    """Everything one pass of the chain over a recording produced."""

    video: Path
    decision: DecisionConfig
    classifier: ClassifierConfig
    frames: int = 0
    first: Frame | None = None
    last_ts: float = 0.0
    windows: list[Window] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    scene_cuts: list[float] = field(default_factory=list)  # stream times of the frames read as a cut

    @property
    def duration_s(self) -> float:
        """Recorded time: first to last frame plus one frame period (a 1-frame file still covers a frame)."""
        if self.first is None:
            return 0.0
        span = self.last_ts - self.first.ts
        return span + (span / (self.frames - 1) if self.frames > 1 else 1.0 / DEFAULT_FPS)

    @property
    def incidents(self) -> list[Incident]:
        ts_of = {w.prediction.wall: w.ts for w in self.windows}
        alerts = {t.incident_id: t.ts for t in self.transitions if t.kind == "start"}
        out = []
        for t in self.transitions:
            if t.kind != "end":
                continue
            assert t.ended_at is not None
            out.append(Incident(
                id=t.incident_id, label=t.top_label, start_ts=ts_of[t.started_at], end_ts=ts_of[t.ended_at],
                alert_ts=alerts[t.incident_id], closed_ts=t.ts, started_at=t.started_at, ended_at=t.ended_at,
                peak=t.peak_score, mean=t.mean_score, windows=t.windows, end_reason=t.end_reason or "",
            ))
        return out


def select_camera(config: Config, camera_id: str | None, where: Path | None) -> CameraConfig:
    """The named camera (or the first one); an unknown id is a config error listing the known ones."""
    if camera_id is None:
        return config.cameras[0]
    for camera in config.cameras:
        if camera.id == camera_id:
            return camera
    known = ", ".join(c.id for c in config.cameras)
    source = where if where is not None else "the built-in defaults"
    raise ConfigError([f"--camera {camera_id}: no camera with that id in {source}; cameras: {known}"])


def file_camera(camera: CameraConfig, video: Path) -> CameraConfig:
    """The camera's settings with its source replaced by a recording read once, as fast as possible."""
    if not video.is_file():
        raise ReplayError(f"{video}: no such file; check the path of the recording")
    return camera.model_copy(update={"source": str(video), "kind": "file", "realtime": False, "loop": False})


def scan(
    camera: CameraConfig,
    decision: DecisionConfig,
    classifier: ClassifierConfig,
    model: BundleModel,
    device_id: str,
    site: str,
    *,
    sink: Sink | None = None,
    on_frame: FrameHook | None = None,
) -> Scan:
    """Run the daemon's chain over a file camera (see ``file_camera``) once; raises ReplayError."""
    result = Scan(video=Path(str(camera.source)), decision=decision, classifier=classifier)
    stop = threading.Event()
    failures: list[str] = []

    def emit(outputs: list[Output]) -> None:
        for output in outputs:
            result.events.append(output.event)
            result.transitions.append(output.transition)
            if sink is not None:
                sink.emit(camera.id, output)

    def window(prediction: Prediction) -> None:
        result.windows.append(Window(pipeline.decider.phase, prediction))

    def state(change: SourceState) -> None:
        if change.reason is None:
            return
        emit(pipeline.gap(change.reason))  # as the daemon's worker does whenever a source goes offline
        if not change.reason.orderly:
            failures.append(change.text)
            stop.set()  # a file that cannot be read would otherwise be retried forever

    pipeline = CameraPipeline(camera, decision, classifier, model, device_id, site, on_window=window)
    source = CameraSource(camera, on_state=state)
    # Only a frame hook (replay's annotated video) needs the frames the sampler does not take.
    for frame in source.frames(stop, pipeline.sampler if on_frame is None else None):
        if result.first is None:
            result.first = frame
        result.last_ts = frame.ts
        cuts = pipeline.classifier.scene_cuts
        emit(pipeline.process(frame))
        if pipeline.classifier.scene_cuts > cuts:
            result.scene_cuts.append(frame.ts)
        if on_frame is not None:
            on_frame(frame, result.windows[-1] if result.windows else None, pipeline.decider.open)
    emit(pipeline.finish())
    result.frames = pipeline.frames_in  # the chain counts every frame read, those passed over too
    if failures:
        reason = failures[0].removeprefix(f"camera {camera.id}: ")
        raise ReplayError(f"{result.video}: {reason}")
    return result


def probe(camera: CameraConfig) -> float:
    """The recording's frame rate, after checking it opens and decodes (before any model is loaded)."""
    try:
        capture = open_capture(camera)
    except SourceError as exc:
        raise ReplayError(f"{camera.source}: {str(exc).removeprefix(f'camera {camera.id}: ')}") from None
    try:
        ok, image = capture.read()
        if not ok or image is None or not image.size:
            raise ReplayError(f"{camera.source}: OpenCV opens it but decodes no frame; is it a complete video?")
        fps = capture.get(cv2.CAP_PROP_FPS)
    finally:
        capture.release()
    return fps if 0 < fps < 1000 else DEFAULT_FPS
