"""Annotated replay: the daemon's own chain over a recording, with what the model saw drawn on it.

Usage::

    rclstm-edge replay store.mp4 --config /etc/rclstm-edge/config.toml --camera door --out replay-door/

writes into the output folder ``annotated.mp4`` (every input frame, with the newest window's top
label and anomaly score, and a red border and "INCIDENT" while an incident is open), ``timeline.png``
(score over stream time, threshold, hysteresis phase, incidents; needs the ``plots`` extra, or pass
``--no-plots``), ``events.jsonl`` (the exact event messages the daemon would have published) and
prints a summary table.

Why it cannot drift from the daemon: it is the daemon's own chain (``edge.tools.scan``) and the
events leave through a sink, as the daemon's do. The summary and the timeline use stream time
(seconds into the file).

The border shows the live state, as an operator watching the alerts would have seen it: from the
window that opened the incident (its start event) to the window that closed it (its end event).
The incident as reported (``started_at`` .. ``ended_at``) begins earlier and ends earlier than
that; the timeline draws both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.adapters.runtime import BundleModel
from edge.core.config import Config
from edge.core.values import Frame
from edge.sinks.lines import EventsFile
from edge.tools.scan import Scan, Window, file_camera, probe, scan, select_camera

VIDEO_NAME = "annotated.mp4"
TIMELINE_NAME = "timeline.png"
EVENTS_NAME = "events.jsonl"
INCIDENT_BGR = (0, 0, 255)


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
        from edge.tools.plots import require_matplotlib

        require_matplotlib()  # before minutes of inference, not after
    fps = probe(camera)
    model = BundleModel.configured(config.model, model_spec)
    decision = config.decision_for(camera, model.recommended_decision())
    classifier = config.classifier_for(camera, model.recommended_classifier())
    out_dir.mkdir(parents=True, exist_ok=True)
    annotator = Annotator(out_dir / VIDEO_NAME, fps)
    events_path = out_dir / EVENTS_NAME
    with events_path.open("wb") as events:
        try:
            result = scan(camera, decision, classifier, model, config.device_id, config.site,
                          sink=EventsFile(events), on_frame=annotator)
        finally:
            annotator.close()
    timeline = None
    manifest = model.manifest
    if plots:
        from edge.tools.plots import timeline_png

        timeline = timeline_png(out_dir / TIMELINE_NAME, result,
                                title=f"{video.name} - camera {camera.id} - {manifest.name} {manifest.version}")
    return Replay(result, out_dir, annotator.path, events_path, timeline, f"{manifest.name} {manifest.version}")


def summary(result: Replay) -> str:
    """The terminal table: one row per incident, then the totals."""
    scan_ = result.scan
    d = scan_.decision
    lines = [
        f"replay {scan_.video.name}: {scan_.frames} frames, {scan_.duration_s:.1f} s, "
        f"{len(scan_.windows)} windows, model {result.model}",
        f"decision: threshold {d.threshold:g}, start_windows {d.start_windows}, end_windows {d.end_windows}, "
        f"cooldown {d.cooldown_s:g} s, hop {scan_.classifier.hop}",
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
