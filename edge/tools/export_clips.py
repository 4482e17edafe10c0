"""``rclstm-edge export-clips OUT``: the judged clips of a device as a dataset `rclstm-convert train` reads.

Layout (the converter's folder-per-class, see converter/dataset.py):

    OUT/{label}/{stem}.mp4     confirmed incidents, under the label the model raised (e.g. fight/)
    OUT/{normal}/{stem}.mp4    false alarms and calm clips, under ``--normal-label`` (default normal)
    OUT/groups.tsv             clip stem TAB device.camera: a camera is one group, so a split never
                               tests on a camera it trained on (converter/groups.py)
    OUT/manifest.json          per clip: device, camera, the model that fired, verdict, times

Incidents nobody judged are left out (their label is unknown). A false alarm is the example the
loop exists for: the model's mistake, labelled by a person; its whole clip is normal (the seconds
before it too). A confirmed incident's clip is cut to the incident (``started_at`` to ``ended_at``,
the windows at or above the threshold): the seconds before its start are the calm that preceded it,
and would teach the model that calm is a fight. Copies keep the private modes of the
state directory (folder 0700, files 0600): they are video of people.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.adapters.clips import CLIPS_DIR, ClipRecord, list_clips
from edge.core.errors import UsageError
from edge.synthetic import write_video

MANIFEST_NAME = "manifest.json"
HALF_FRAME = timedelta(milliseconds=20)  # frame times are rebuilt from the clip's rate: allow for rounding
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
GROUPS_TSV_NAME = "groups.tsv"  # the name converter/groups.py looks for (tests/test_export_clips.py trains on it)


@dataclass
class Export:
    out: Path
    written: dict[str, int] = field(default_factory=dict)  # class folder -> clips
    unjudged: int = 0

    def summary(self) -> str:
        classes = ", ".join(f"{n} {label}" for label, n in sorted(self.written.items()))
        line = f"wrote {sum(self.written.values())} clip(s) to {self.out} ({classes})"
        if self.unjudged:
            line += f"; {self.unjudged} incident clip(s) without a verdict left out"
        return line


def class_of(record: ClipRecord, normal_label: str) -> str | None:
    """The class folder a clip belongs in, or None when nobody judged the incident."""
    if record.kind == "calm" or record.verdict == "false_alarm":
        return normal_label
    if record.verdict == "confirmed":
        return record.label or "anomaly"
    return None


def export_clips(state_dir: Path, out: Path, normal_label: str = "normal") -> Export:
    """Copy the judged and calm clips of ``state_dir`` into ``out``; UsageError names the path and the fix."""
    if not LABEL.match(normal_label):
        raise UsageError(f"--normal-label {normal_label!r}: a class folder name is letters, digits, '.', '_' or '-', "
                         "e.g. normal")
    root = Path(state_dir) / CLIPS_DIR
    if not root.is_dir():
        raise UsageError(f"{root}: no clips folder; set [clips] enabled = true (and let incidents happen), or pass "
                         "the daemon's --state-dir / --config")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out}: exists and is not an empty folder; export into a new folder")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    done = Export(out)
    rows: list[dict[str, Any]] = []
    groups: list[str] = []
    for record, video in list_clips(root):
        label = class_of(record, normal_label)
        if label is None:
            done.unjudged += 1
            continue
        target = out / label / video.name
        target.parent.mkdir(mode=0o700, exist_ok=True)
        if record.verdict == "confirmed":
            record = _cut_to_incident(record, video, target)
        else:
            shutil.copyfile(video, target)
        os.chmod(target, 0o600)
        done.written[label] = done.written.get(label, 0) + 1
        groups.append(f"{video.stem}\t{record.device_id}.{record.camera_id}")
        rows.append({"file": f"{label}/{video.name}", "class": label, **_fields(record)})
    if not rows:
        raise UsageError(f"{root}: no judged or calm clips to export ({done.unjudged} incident clip(s) wait for a "
                         "verdict); send verdicts (docs/mqtt.md, Verdicts) first")
    _private_text(out / GROUPS_TSV_NAME, "# clip stem\tgroup (device.camera)\n" + "\n".join(groups) + "\n")
    manifest = {"exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "normal_label": normal_label, "clips": rows}
    _private_text(out / MANIFEST_NAME, json.dumps(manifest, indent=1) + "\n")
    return done


def _cut_to_incident(record: ClipRecord, video: Path, target: Path) -> ClipRecord:
    """Write the frames of ``video`` from the incident's start to its end; the record of what was written."""
    assert record.started_at is not None and record.ended_at is not None  # a kept incident clip has both
    capture = cv2.VideoCapture(str(video))
    kept: list[np.ndarray] = []
    times: list[datetime] = []
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        at = record.clip_start + timedelta(seconds=index / record.fps)
        index += 1
        if record.started_at - HALF_FRAME <= at <= record.ended_at + HALF_FRAME:
            kept.append(frame)
            times.append(at)
    capture.release()
    if not kept:
        raise UsageError(f"{video}: no frames between the incident's start and end; the clip is damaged, delete it "
                         "and its .json")
    write_video(target, kept, record.fps)
    return record.model_copy(update={"clip_start": times[0], "clip_end": times[-1], "frames": len(kept)})


def _fields(record: ClipRecord) -> dict[str, Any]:
    """The manifest's view of a record: who, where, which model, the verdict, the times."""
    data = json.loads(record.model_dump_json(exclude={"complete", "feedback"}))
    feedback = record.feedback
    data.update(verdict=record.verdict, judged_at=None if feedback is None or feedback.judged_at is None
                else feedback.judged_at.isoformat().replace("+00:00", "Z"),
                judged_by=None if feedback is None else feedback.judged_by)
    return data


def _private_text(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
