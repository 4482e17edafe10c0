"""Annotated replay: the daemon's own chain over a recording, with what the model saw drawn on it.

Usage::

    rclstm-edge replay store.mp4 --config /etc/rclstm-edge/config.toml --camera door --out replay-door/

writes into the output folder ``annotated.mp4`` (every input frame, with the newest window's top
label and anomaly score, and a red border and "INCIDENT" while an incident is open), ``timeline.png``
(score over stream time, threshold, hysteresis phase, incidents; needs the ``plots`` extra, or pass
``--no-plots``), ``events.jsonl`` (the exact event messages the daemon would have published) and
prints a summary table.

Why it cannot drift from the daemon: frames come from ``CameraSource`` and go through
``CameraPipeline`` (sampler, classifier, decider, events) built from the same config section; only
the camera's source is replaced by the file, read as fast as possible, and a source that goes
offline is treated as the daemon treats it (a gap). A file's frames carry "when reading started +
position" as wall time, as in the daemon, so events differ between two runs only in their ids and
that starting instant; the summary and the timeline use stream time (seconds into the file).

The border shows the live state, as an operator watching the alerts would have seen it: from the
window that opened the incident (its start event) to the window that closed it (its end event).
The incident as reported (``started_at`` .. ``ended_at``) begins earlier and ends earlier than
that; the timeline draws both.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from edge.classifier import Prediction
from edge.config import CameraConfig, Config, ConfigError, DecisionConfig
from edge.decision import Phase, Transition
from edge.events import Event, event_json
from edge.models import resolve_bundle
from edge.pipeline import CameraPipeline
from edge.runtime import BundleModel
from edge.sources import DEFAULT_FPS, ORDERLY_OFFLINE, CameraSource, Frame, SourceError, open_capture

VIDEO_NAME = "annotated.mp4"
TIMELINE_NAME = "timeline.png"
EVENTS_NAME = "events.jsonl"
INCIDENT_BGR = (0, 0, 255)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg", ".mjpg")

# Sees each frame after the chain took it in, with the newest window and whether an incident is open.
FrameHook = Callable[[Frame, "Window | None", bool], None]


class ReplayError(Exception):
    """A recording that cannot be replayed; the message is one line naming the file and the fix."""


@dataclass(frozen=True)
class Window:
    """One classified window and the hysteresis phase it left the decider in."""

    phase: Phase
    prediction: Prediction  # without its frame, so hours of windows fit in memory

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


def load_model(config: Config, model_spec: str | None) -> BundleModel:
    spec = config.model
    return BundleModel(resolve_bundle(model_spec or spec.bundle), spec.num_threads, spec.runtime)


def scan(
    camera: CameraConfig,
    decision: DecisionConfig,
    model: BundleModel,
    device_id: str,
    site: str,
    *,
    on_event: Callable[[Event], None] | None = None,
    on_frame: FrameHook | None = None,
) -> Scan:
    """Run the daemon's chain over a file camera (see ``file_camera``) once; raises ReplayError."""
    result = Scan(video=Path(str(camera.source)), decision=decision)
    stop = threading.Event()
    failures: list[str] = []

    def emit(event: Event, transition: Transition) -> None:
        result.events.append(event)
        result.transitions.append(transition)
        if on_event is not None:
            on_event(event)

    def window(prediction: Prediction) -> None:
        kept = dataclasses.replace(prediction, frame=None)
        phase = pipeline.decider.phase
        result.windows.append(Window(phase, kept))

    def state(online: bool, reason: str) -> None:
        if online:
            return
        pipeline.gap(reason)  # as the daemon does whenever a source goes offline
        if reason not in ORDERLY_OFFLINE:
            failures.append(reason)
            stop.set()  # a file that cannot be read would otherwise be retried forever

    pipeline = CameraPipeline(camera, decision, model, device_id, site, emit, on_window=window)
    source = CameraSource(camera, on_state=state)
    for frame in source.frames(stop):
        if result.first is None:
            result.first = frame
        result.frames += 1
        result.last_ts = frame.ts
        cuts = pipeline.classifier.scene_cuts
        pipeline.process(frame)
        if pipeline.classifier.scene_cuts > cuts:
            result.scene_cuts.append(frame.ts)
        if on_frame is not None:
            on_frame(frame, result.windows[-1] if result.windows else None, pipeline.decider.open)
    pipeline.finish()
    if failures:
        reason = failures[0].removeprefix(f"camera {camera.id}: ")
        raise ReplayError(f"{result.video}: {reason}")
    return result


class Annotator:
    """Writes each frame with the newest window's label and score, and the incident marker."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._latest: Window | None = None

    def __call__(self, frame: Frame, window: Window | None, incident: bool) -> None:
        image = frame.image.copy()
        if self._writer is None:
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot open an mp4v writer (is FFmpeg support missing?)")
        self.draw(image, frame.ts, window, incident)
        self._writer.write(image)

    @staticmethod
    def draw(image: np.ndarray, ts: float, window: Window | None, incident: bool) -> None:
        height, width = image.shape[:2]
        scale = max(0.3, height / 400)
        thick = max(1, round(scale * 2))
        band = int(cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][1] * 1.9) + 2
        text = "warming up" if window is None else f"{window.top_label}  anomaly {window.score:.2f}"
        overlay = image[:band].astype(np.float32) * 0.35
        image[:band] = overlay.astype(np.uint8)
        baseline = band - band // 4
        cv2.putText(image, text, (band // 3, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
        clock = f"{ts:.1f}s"
        clock_w = cv2.getTextSize(clock, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]
        cv2.putText(image, clock, (width - clock_w - band // 3, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
        if not incident:
            return
        border = border_width(image.shape)
        image[:border] = INCIDENT_BGR
        image[-border:] = INCIDENT_BGR
        image[:, :border] = INCIDENT_BGR
        image[:, -border:] = INCIDENT_BGR
        tag_w = cv2.getTextSize("INCIDENT", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] + 2 * (band // 3)
        cv2.rectangle(image, (border, height - border - band), (border + tag_w, height - border), INCIDENT_BGR, -1)
        cv2.putText(image, "INCIDENT", (border + band // 3, height - border - band // 4), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), thick, cv2.LINE_AA)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def border_width(shape: tuple[int, ...]) -> int:
    """Thick enough to survive lossy encoding and be seen on a phone; thin enough to hide little."""
    return max(4, min(shape[:2]) // 25)


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


@dataclass
class Replay:
    """What ``replay`` wrote, with the scan it came from."""

    scan: Scan
    out_dir: Path
    video: Path
    events: Path
    timeline: Path | None
    model: str


def replay(
    video: Path,
    out_dir: Path,
    config: Config,
    *,
    camera_id: str | None = None,
    config_path: Path | None = None,
    model_spec: str | None = None,
    plots: bool = True,
) -> Replay:
    """The daemon's chain over one recording, writing the annotated video, events and timeline."""
    camera = file_camera(select_camera(config, camera_id, config_path), video)
    if plots:
        from edge.plots import require_matplotlib

        require_matplotlib()  # before minutes of inference, not after
    fps = probe(camera)
    decision = config.decision_for(camera)
    model = load_model(config, model_spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    annotator = Annotator(out_dir / VIDEO_NAME, fps)
    events_path = out_dir / EVENTS_NAME
    with events_path.open("wb") as sink:
        try:
            result = scan(camera, decision, model, config.device_id, config.site,
                          on_event=lambda event: _write_line(sink, event), on_frame=annotator)
        finally:
            annotator.close()
    timeline = None
    manifest = model.manifest
    if plots:
        from edge.plots import timeline_png

        timeline = timeline_png(out_dir / TIMELINE_NAME, result,
                                title=f"{video.name} - camera {camera.id} - {manifest.name} {manifest.version}")
    return Replay(result, out_dir, annotator.path, events_path, timeline, f"{manifest.name} {manifest.version}")


def _write_line(sink: IO[bytes], event: Event) -> None:
    sink.write(event_json(event) + b"\n")


def summary(result: Replay) -> str:
    """The terminal table: one row per incident, then the totals."""
    scan_ = result.scan
    d = scan_.decision
    lines = [
        f"replay {scan_.video.name}: {scan_.frames} frames, {scan_.duration_s:.1f} s, "
        f"{len(scan_.windows)} windows, model {result.model}",
        f"decision: threshold {d.threshold:g}, start_windows {d.start_windows}, end_windows {d.end_windows}, "
        f"cooldown {d.cooldown_s:g} s, hop {d.hop}",
    ]
    incidents = scan_.incidents
    if incidents:
        lines.append(f"{'#':>3}  {'label':12s} {'start s':>8} {'end s':>8} {'alert s':>8} {'peak':>6} {'mean':>6} "
                     f"{'windows':>7} {'ended':8s} started_at")
        for n, inc in enumerate(incidents, 1):
            lines.append(f"{n:>3}  {inc.label[:12]:12s} {inc.start_ts:8.2f} {inc.end_ts:8.2f} {inc.alert_ts:8.2f} "
                         f"{inc.peak:6.3f} {inc.mean:6.3f} {inc.windows:7d} {inc.end_reason:8s} "
                         f"{inc.started_at.isoformat()}")
    lines.append(f"{len(incidents)} incident(s), {len(scan_.events)} event(s) -> {result.events}")
    if scan_.scene_cuts:
        shown = ", ".join(f"{ts:.2f}" for ts in scan_.scene_cuts[:10]) + (" ..." if len(scan_.scene_cuts) > 10 else "")
        lines.append(f"{len(scan_.scene_cuts)} scene cut(s), read as no movement, at {shown} s")
    lines.append(f"annotated video -> {result.video}")
    if result.timeline is not None:
        lines.append(f"timeline -> {result.timeline}")
    return "\n".join(lines)
