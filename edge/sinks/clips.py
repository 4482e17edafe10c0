"""One camera's clips: the sampled frames around each incident, and now and then a calm stretch.

Fed from the camera's chain on its own thread: every sampled frame (``sampled``), every classified
window (``window``, for calm clips) and every output (``output``, for incidents). The frames of the
last ``pre_s`` (or ``calm_s``) seconds are kept small in memory; an incident's ``start`` writes them
and every frame after it to the clip until its ``end`` (capped at ``max_s``). Frames are the
sampled ones, at the model's interval, so a clip is exactly what the model saw, at its frame rate.

A calm clip is taken when the camera has stayed below its threshold (no incident, no window at or
above it) for ``calm_s`` and the camera's last calm clip is at least ``calm_every_s`` old (by frame
time, read back from the store at start so a restart does not take another at once).

The recent frames are kept as JPEG (quality 90): raw, the default 10 s at 14 frames per second and 256
pixels wide would be 16-21 MB per camera (a tenth of the unit's memory limit for four cameras); as JPEG
they are about 1.6 MB (fight-surv CCTV at 256x144: 11 kB a frame, 0.26 ms to encode on this x86 core),
decoded only when a clip starts. A source gap empties them: frames either side of an outage are not one
scene in time.
"""

from __future__ import annotations

import uuid
from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edge.adapters.clips import ClipKind, ClipRecord, ClipStore, ClipWriter
from edge.core.config import ClipsConfig, DecisionConfig
from edge.core.messages import ModelRef
from edge.core.values import Frame, Output, Prediction
from edge.preprocess import shrink

if TYPE_CHECKING:
    from edge.bundle import Manifest

RECENT_QUALITY = 90


def clip_size(image: np.ndarray, width: int) -> tuple[int, int]:
    """(width, height) of a clip for frames like ``image``: at most ``width`` wide, aspect kept, even sides."""
    h, w = image.shape[:2]
    out_w = min(width, w)
    out_h = max(2, round(h * out_w / w))
    return out_w - out_w % 2, out_h - out_h % 2


class ClipRecorder:
    def __init__(self, store: ClipStore, cfg: ClipsConfig, camera_id: str, device_id: str, site: str,
                 manifest: Manifest, decision: DecisionConfig, hop: int) -> None:
        self.store = store
        self.cfg = cfg
        self.camera_id = camera_id
        self.device_id = device_id
        self.site = site
        self.model = ModelRef(name=manifest.name, version=manifest.version, sha256=manifest.sha256)
        self.fps = 1.0 / manifest.sampling.frame_interval_s
        self.threshold = decision.threshold
        # The start is sent start_windows windows (each hop sampled frames apart) after its started_at,
        # so the lead-in reaches that much further back than pre_s from the moment it is written.
        delay = decision.start_windows * hop / self.fps
        span = max(cfg.pre_s + delay, cfg.calm_s)
        self._recent: deque[tuple[float, datetime, np.ndarray]] = deque(maxlen=int(span * self.fps) + 2)  # JPEG
        self._clip: ClipWriter | None = None
        self._size: tuple[int, int] | None = None
        self._quiet_since: float | None = None  # stream time since which every window was below the threshold
        self._open = False
        calm = [r.clip_end for r, _ in store.clips() if r.kind == "calm" and r.camera_id == camera_id]
        self._last_calm: datetime | None = max(calm, default=None)

    def sampled(self, frame: Frame) -> None:
        if self._size is None:
            self._size = clip_size(frame.image, self.cfg.width)
        small = shrink(frame.image, self._size[1], self._size[0])
        ok, jpeg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, RECENT_QUALITY])
        if ok:
            self._recent.append((frame.ts, frame.wall, jpeg))
        clip = self._clip
        if clip is not None and clip.record.frames < self.cfg.max_s * self.fps:
            clip.write(small, frame.wall)

    def gap(self) -> None:
        """The source went offline (after the chain closed any incident): forget the frames before it."""
        self._recent.clear()
        self._quiet_since = None

    def window(self, prediction: Prediction) -> None:
        if self._open or prediction.anomaly_score >= self.threshold:
            self._quiet_since = None
            return
        if self._quiet_since is None:
            self._quiet_since = prediction.ts
        if self.cfg.calm_every_s and prediction.ts - self._quiet_since >= self.cfg.calm_s and self._calm_due(
                prediction.wall):
            self._calm(prediction.ts)

    def output(self, output: Output) -> None:
        event = output.event
        if event.type == "start":
            self._open = True
            self._quiet_since = None
            self._start(output)
        elif event.type == "end":
            self._open = False
            if self._clip is not None:
                self._clip.finish(label=event.label, peak_score=event.peak_score, ended_at=event.ended_at)
                self._clip = None

    def close(self) -> None:
        """The camera stopped with a clip still being written (its end never came): drop it."""
        if self._clip is not None:
            self._clip.abandon()
            self._clip = None

    def _start(self, output: Output) -> None:
        if self._clip is not None:  # an end was lost (cannot happen in one chain); keep what was written
            self._clip.finish()
        event = output.event
        since = event.started_at - timedelta(seconds=self.cfg.pre_s)
        frames = [(wall, image) for _, wall, image in self._recent if wall >= since]
        if not frames or self._size is None:
            self._clip = None
            return
        self._clip = self._begin(event.event_id, "incident", frames, started_at=event.started_at, label=event.label)

    def _calm_due(self, wall: datetime) -> bool:
        return self._last_calm is None or (wall - self._last_calm).total_seconds() >= self.cfg.calm_every_s

    def _calm(self, now_ts: float) -> None:
        assert self._quiet_since is not None
        since = max(self._quiet_since, now_ts - self.cfg.calm_s)
        frames = [(wall, image) for ts, wall, image in self._recent if ts >= since]
        if len(frames) < 2:
            return
        self._last_calm = frames[-1][0]  # also when the disk refuses it: tried again only after calm_every_s
        clip = self._begin(uuid.uuid4(), "calm", frames)
        if clip is not None:
            clip.finish()

    def _begin(self, clip_id: uuid.UUID, kind: ClipKind, frames: list[tuple[datetime, np.ndarray]],
               **fields: object) -> ClipWriter | None:
        assert self._size is not None
        record = ClipRecord.model_validate({
            "clip_id": clip_id, "kind": kind, "device_id": self.device_id, "site": self.site,
            "camera_id": self.camera_id, "model": self.model, "clip_start": frames[0][0], "clip_end": frames[0][0],
            "fps": self.fps, **fields,
        })
        clip = self.store.begin(record, self._size)
        if clip is not None:
            for wall, jpeg in frames:
                clip.write(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), wall)
        return clip
