"""`rclstm-edge export-clips`: judged clips of a real daemon run become a dataset the converter's loader reads."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from converter.dataset import scan
from converter.sources import Source
from edge.app.daemon import Daemon
from edge.synthetic import write_stream
from edge.tools.export_clips import HALF_FRAME
from tests.media import read_frames
from tests.test_clips import events, run_daemon

ROOT = Path(__file__).resolve().parents[1]
THREE_FIGHTS = [("calm", 8.0), ("fight", 5.0), ("calm", 8.0), ("fight", 5.0), ("calm", 8.0), ("fight", 5.0),
                ("calm", 6.0)]


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Daemon, list[str]]:
    """A daemon run with three incidents: the first judged a false alarm, the second confirmed, the third not."""
    tmp = tmp_path_factory.mktemp("judged")
    write_stream(tmp / "store.mp4", THREE_FIGHTS, fps=25, seed=3)
    daemon = run_daemon(tmp / "state", tmp / "store.mp4", calm_every_s=15.0)
    ids = [str(e["event_id"]) for e in events(daemon) if e["type"] == "start"]
    assert len(ids) == 3 and daemon.clips is not None
    for event_id, verdict in zip(ids, ("false_alarm", "confirmed"), strict=False):
        payload = {"schema_version": 1, "event_id": event_id, "device_id": "pi-1", "verdict": verdict}
        assert daemon.clips.receive_feedback(json.dumps(payload).encode())
    return tmp / "state", daemon, ids


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", "export-clips", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_export_writes_judged_and_calm_clips_in_the_converters_layout(judged: tuple[Path, Daemon, list[str]],
                                                                     tmp_path: Path) -> None:
    state, daemon, (false_alarm, confirmed, unjudged) = judged
    out = tmp_path / "site"
    done = export(str(out), "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    calm = [r for r, _ in daemon.clips.clips() if r.kind == "calm"] if daemon.clips else []
    assert len(calm) >= 2
    assert done.stdout.strip() == (f"wrote {len(calm) + 2} clip(s) to {out} (1 fight, {len(calm) + 1} normal); "
                                   "1 incident clip(s) without a verdict left out")
    manifest = json.loads((out / "manifest.json").read_text())
    rows = {row["clip_id"]: row for row in manifest["clips"]}
    assert unjudged not in rows
    assert (rows[false_alarm]["class"], rows[false_alarm]["verdict"]) == ("normal", "false_alarm")
    assert (rows[confirmed]["class"], rows[confirmed]["verdict"]) == ("fight", "confirmed")
    assert {row["class"] for row in rows.values() if row["kind"] == "calm"} == {"normal"}
    cut, whole = ({k: datetime.fromisoformat(v) for k, v in rows[i].items() if k.endswith(("_at", "_start", "_end"))
                   and v} for i in (confirmed, false_alarm))
    # Frame times in a clip are rebuilt from its rate, so they may stand HALF_FRAME off the incident's own.
    assert cut["started_at"] - HALF_FRAME <= cut["clip_start"] < cut["clip_end"] <= cut["ended_at"] + HALF_FRAME, \
        "a fight clip holds no calm"
    assert whole["clip_start"] < whole["started_at"], "a false alarm keeps its lead-in"
    for row in rows.values():
        assert row["device_id"] == "pi-1" and row["camera_id"] == "door" and row["model"]["name"] == "demo-synth"
        frames, _ = read_frames(out / row["file"])
        assert len(frames) == row["frames"] > 0, f"{row['file']} does not decode whole"
    groups = [line.split("\t") for line in (out / "groups.tsv").read_text().splitlines() if not line.startswith("#")]
    assert sorted(stem for stem, _ in groups) == sorted(Path(row["file"]).stem for row in rows.values())
    assert {group for _, group in groups} == {"pi-1.door"}
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o600}

    clips, labels, grouping = scan(Source("site", out), class_map={"normal": "calm", "fight": "fight"})
    assert sorted(labels) == ["calm", "fight"] and grouping == "groups.tsv"
    assert {c.group for c in clips} == {"site:pi-1.door"}, "the camera is one group"
    by_stem = {c.path.stem: c.label for c in clips}
    assert by_stem[Path(rows[false_alarm]["file"]).stem] == "calm"
    assert by_stem[Path(rows[confirmed]["file"]).stem] == "fight"


@pytest.mark.parametrize(("setup", "args", "said"), [
    ("full", ["--normal-label", "../x"], "--normal-label '../x': a class folder name is"),
    ("full", [], "exists and is not an empty folder; export into a new folder"),
    ("no-clips", [], "no clips folder; set [clips] enabled = true"),
], ids=["bad-label", "out-not-empty", "no-clips-folder"])
def test_bad_input_is_one_line_and_exit_2(judged: tuple[Path, Daemon, list[str]], tmp_path: Path, setup: str,
                                          args: list[str], said: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    state = judged[0] if setup == "full" else tmp_path / "empty-state"
    done = export(str(out), "--state-dir", str(state), *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and said in done.stderr
