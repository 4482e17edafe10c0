"""Incident clips on disk: small videos beside the outbox, each with a JSON record, bounded in size and age.

A clip is ``state_dir/clips/{stem}.mp4`` with ``{stem}.json`` beside it; the record says what the
clip shows (an incident or calm), which camera and model, its times, and the verdict a backend sent
for it. The video is written while the incident is open, to a ``.partial.mp4`` that is renamed
when the incident ends, so memory never holds more than the frames before a start; a daemon killed
mid-incident leaves a partial video that cannot be decoded (no index), and the next start deletes it.

Nothing here may stop detection: every write is guarded, a failure is logged once (repeats go to
debug) and counted in ``errors``, and the clip is dropped. Before a clip starts the disk must keep
``clips.min_free_bytes`` free, so clips never take the last space the outbox needs, and a kept clip
is decoded back once: an encoder that ran out of space mid-clip writes a file nothing can read. The folder is 0700
and every file 0600, created so before anything is written into it (the videos are of people).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from edge.core.config import ClipsConfig
from edge.core.messages import Feedback, ModelRef, Verdict

log = logging.getLogger(__name__)

CLIPS_DIR = "clips"
VIDEO_SUFFIX = ".mp4"
PARTIAL_SUFFIX = ".partial.mp4"
RECORD_TMP_SUFFIX = ".json.tmp"  # a record being written; renamed over the record when complete
FOURCC = "mp4v"  # decodes with every OpenCV build the project supports (as edge.synthetic writes)
MAX_FEEDBACK_BYTES = 4096  # a verdict with the longest note is under 1 kB; anything larger is not one

ClipKind = Literal["incident", "calm"]


class ClipRecord(BaseModel):
    """What a clip shows, written beside it as JSON; ``clip_id`` is the incident's event_id (calm: a new uuid)."""

    model_config = ConfigDict(extra="forbid")

    clip_id: uuid.UUID
    kind: ClipKind
    device_id: str
    site: str
    camera_id: str
    model: ModelRef
    label: str | None = None  # the incident's label when it ended
    peak_score: float | None = None
    started_at: AwareDatetime | None = None  # the incident's start and end (frame times)
    ended_at: AwareDatetime | None = None
    clip_start: AwareDatetime  # the clip's first and last frame
    clip_end: AwareDatetime
    frames: int = 0
    fps: float
    complete: bool = False
    feedback: Feedback | None = None

    @property
    def verdict(self) -> Verdict | None:
        return None if self.feedback is None else self.feedback.verdict

    def stem(self) -> str:
        """File name without suffix: sorts by time, names the camera, unique by id."""
        return f"{self.clip_start.astimezone(timezone.utc):%Y%m%dT%H%M%S}_{self.camera_id}_{self.kind}_{self.clip_id}"


class ClipWriter:
    """One clip being encoded, frame by frame, on its camera's thread."""

    def __init__(self, store: ClipStore, record: ClipRecord, writer: cv2.VideoWriter, size: tuple[int, int]) -> None:
        self.store = store
        self.record = record
        self.size = size  # width, height
        self._writer = writer
        self.failed = False

    def write(self, image: np.ndarray, wall: datetime) -> None:
        if self.failed:
            return
        if (image.shape[1], image.shape[0]) != self.size:  # the camera changed resolution mid-clip
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        try:
            self._writer.write(image)
        except cv2.error as exc:
            self.failed = True
            self.store.failure("cannot encode a clip frame", exc)
            return
        self.record = self.record.model_copy(update={"frames": self.record.frames + 1, "clip_end": wall})

    def finish(self, **changes: object) -> Path | None:
        """Close the video and keep it with its record (``changes`` updated); None when it could not be kept."""
        self._writer.release()
        return self.store.keep(self, changes)

    def abandon(self) -> None:
        self._writer.release()
        self.store.discard(self.record)


class ClipStore:
    """The clips folder of one device; thread-safe (camera threads write clips, the MQTT thread verdicts)."""

    def __init__(self, state_dir: Path, cfg: ClipsConfig, device_id: str) -> None:
        self.root = Path(state_dir) / CLIPS_DIR
        self.cfg = cfg
        self.device_id = device_id
        self.errors = 0
        self.feedback_accepted = 0
        self.feedback_refused = 0
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.root.chmod(0o700)
        except OSError as exc:
            self.failure("cannot create the clips folder", exc, f" {self.root}")
            return
        self._drop_partials()
        self.prune()

    # -- writing ---------------------------------------------------------------------------------

    def begin(self, record: ClipRecord, size: tuple[int, int]) -> ClipWriter | None:
        """A writer for a new clip at ``size`` (width, height), or None when the disk cannot take one."""
        try:
            free, wanted = shutil.disk_usage(self.root).free, self.cfg.min_free_bytes
            if free < wanted:
                raise OSError(f"{free} bytes free, clips.min_free_bytes = {wanted} are kept for the outbox")
            video = self._path(record, PARTIAL_SUFFIX)
            os.close(os.open(video, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # private before any frame
            writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*FOURCC), record.fps, size)
            if not writer.isOpened():
                raise OSError(f"OpenCV cannot open a {FOURCC} writer for {video.name}")
            self._write_record(record)
        except (OSError, cv2.error) as exc:
            self.failure("cannot start a clip", exc, f" of camera {record.camera_id}")
            self.discard(record)
            return None
        return ClipWriter(self, record, writer, size)

    def keep(self, clip: ClipWriter, changes: dict[str, object]) -> Path | None:
        record = clip.record.model_copy(update={**changes, "complete": True})
        if clip.failed or record.frames == 0:
            self.discard(record)
            return None
        video = self._path(record, VIDEO_SUFFIX)
        try:
            if not decodes(self._path(record, PARTIAL_SUFFIX)):
                raise OSError("the video does not decode back (disk full while encoding?)")
            with self._lock:
                kept = self._read(self._path(record, ".json"))  # a verdict may have arrived meanwhile
                if kept is not None and kept.feedback is not None:
                    record = record.model_copy(update={"feedback": kept.feedback})
                self._write_record(record)
                self._path(record, PARTIAL_SUFFIX).replace(video)
        except OSError as exc:
            self.failure("cannot keep a clip", exc, f" ({video.name})")
            self.discard(record)
            return None
        log.info("clip kept", extra={"fields": {"camera": record.camera_id, "kind": record.kind,
                                                "clip": video.name, "frames": record.frames}})
        self.prune()
        return video

    def discard(self, record: ClipRecord) -> None:
        for suffix in (PARTIAL_SUFFIX, VIDEO_SUFFIX, ".json"):
            with contextlib.suppress(OSError):
                self._path(record, suffix).unlink()

    # -- verdicts --------------------------------------------------------------------------------

    def receive_feedback(self, payload: bytes) -> bool:
        """A verdict as received from the broker: checked, then kept beside its clip; one line when refused."""
        if len(payload) > MAX_FEEDBACK_BYTES:
            return self._refuse(f"{len(payload)} bytes, more than {MAX_FEEDBACK_BYTES}; a verdict is a small JSON "
                                "object")
        try:
            feedback = Feedback.model_validate_json(payload)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "(message)"
            if error["type"] == "json_invalid":
                return self._refuse(f"not JSON ({error['msg']}); publish one JSON object per verdict")
            return self._refuse(f"{where}: {error['msg']}; see `rclstm-edge schema feedback`")
        if feedback.device_id != self.device_id:
            return self._refuse(f"device_id {feedback.device_id!r} is not this device ({self.device_id!r}); publish "
                                f"it to {feedback.device_id}'s feedback topic")
        if not self.record_feedback(feedback):
            return self._refuse(f"event_id {feedback.event_id}: no clip of that incident on this device (unknown, "
                                "calm, or already deleted by clips.max_age_days / max_bytes)")
        self.feedback_accepted += 1
        log.info("verdict recorded", extra={"fields": {"event_id": feedback.event_id, "verdict": feedback.verdict}})
        return True

    def _refuse(self, reason: str) -> bool:
        self.feedback_refused += 1
        log.warning("feedback refused: %s", reason)
        return False

    def stats(self) -> dict[str, int]:
        """The clip and verdict counters of the stats message."""
        count, size = self.usage()
        return {"clips": count, "clips_bytes": size, "clips_errors": self.errors,
                "feedback_accepted": self.feedback_accepted, "feedback_refused": self.feedback_refused}

    def record_feedback(self, feedback: Feedback) -> bool:
        """Keep a verdict beside its incident's clip (also while the incident is still open); False if none."""
        with self._lock:
            for path in self.root.glob(f"*_incident_{feedback.event_id}.json"):
                record = self._read(path)
                if record is not None:
                    try:
                        self._write_record(record.model_copy(update={"feedback": feedback}))
                    except OSError as exc:
                        self.failure("cannot record a verdict", exc, f" on {path.name}")
                        return False
                    return True
        return False

    # -- reading and bounds ----------------------------------------------------------------------

    def clips(self) -> list[tuple[ClipRecord, Path]]:
        return list_clips(self.root)

    def usage(self) -> tuple[int, int]:
        """(complete clips, bytes on disk in the folder)."""
        try:
            files = [p for p in self.root.iterdir() if p.is_file()]
            return sum(1 for p in files if p.name.endswith(VIDEO_SUFFIX) and not p.name.endswith(PARTIAL_SUFFIX)), \
                sum(p.stat().st_size for p in files)
        except OSError:
            return 0, 0

    def prune(self, now: datetime | None = None) -> int:
        """Delete clips past ``max_age_days``, then the oldest until the folder fits ``max_bytes``; how many went."""
        cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=self.cfg.max_age_days)
        removed = 0
        with self._lock:
            try:
                kept = self.clips()
                total = self.usage()[1]
                for record, video in kept:
                    if record.clip_end >= cutoff and total <= self.cfg.max_bytes:
                        break
                    size = video.stat().st_size + video.with_suffix(".json").stat().st_size
                    self.discard(record)
                    total -= size
                    removed += 1
            except OSError as exc:
                self.failure("cannot prune the clips folder", exc)
        if removed:
            log.info("clips pruned", extra={"fields": {"removed": removed, "max_bytes": self.cfg.max_bytes,
                                                       "max_age_days": self.cfg.max_age_days}})
        return removed

    def failure(self, what: str, exc: BaseException, where: str = "") -> None:
        """Count a failure; the first of its kind (``what``) is an error line, repeats are debug (a full disk
        repeats); ``where`` names the file or camera in the line without making it another kind."""
        self.errors += 1
        line = f"{what}{where} ({getattr(exc, 'strerror', None) or exc}); detection goes on without this clip"
        if what not in self._logged:
            self._logged.add(what)
            log.error("clips: %s", line)
        else:
            log.debug("clips: %s", line)

    # -- internals -------------------------------------------------------------------------------

    def _path(self, record: ClipRecord, suffix: str) -> Path:
        return self.root / f"{record.stem()}{suffix}"

    def _write_record(self, record: ClipRecord) -> None:
        """Atomically (temporary file, then rename), 0600 from creation."""
        path = self._path(record, ".json")
        tmp = path.with_suffix(RECORD_TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(record.model_dump_json(indent=1) + "\n")
        tmp.replace(path)

    @staticmethod
    def _read(path: Path) -> ClipRecord | None:
        return read_record(path)

    def _drop_partials(self) -> None:
        """A previous run died mid-incident: its partial videos have no index and cannot be decoded.

        A run killed inside ``_write_record`` also leaves its temporary record; the record it was
        replacing (if any) is intact, so the temporary one is only litter.
        """
        for tmp in self.root.glob(f"*{RECORD_TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                tmp.unlink()
        dropped = 0
        for path in self.root.glob(f"*{PARTIAL_SUFFIX}"):
            with contextlib.suppress(OSError):
                path.unlink()
                dropped += 1
            with contextlib.suppress(OSError):
                Path(str(path)[: -len(PARTIAL_SUFFIX)] + ".json").unlink()
        if dropped:
            log.warning("clips: %d clip(s) left unfinished by the previous run deleted (a video cut short cannot "
                        "be decoded)", dropped)


def read_record(path: Path) -> ClipRecord | None:
    """A clip's record, or None when it is missing or damaged (such a clip is never listed or exported)."""
    try:
        return ClipRecord.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


def list_clips(root: Path) -> list[tuple[ClipRecord, Path]]:
    """Complete clips in a clips folder, oldest first, with their videos; reads only (the export runs beside
    the daemon)."""
    found = []
    for path in sorted(Path(root).glob("*.json")):
        record = read_record(path)
        video = path.with_suffix(VIDEO_SUFFIX)
        if record is not None and record.complete and video.is_file():
            found.append((record, video))
    return sorted(found, key=lambda pair: pair[0].clip_start)


def decodes(video: Path) -> bool:
    """True when OpenCV reads a first frame of ``video``."""
    capture = cv2.VideoCapture(str(video))
    try:
        return bool(capture.read()[0])
    finally:
        capture.release()

