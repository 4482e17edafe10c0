"""Annotated replay on a real encoded video with a known fight, the demo bundle and the real daemon.

The replay must find exactly the incidents the daemon finds on the same file; its annotated video,
timeline and summary are checked against the incidents it reports and against the input frames.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.core.config import Config
from edge.synthetic import write_stream
from edge.tools.replay import EVENTS_NAME, TIMELINE_NAME, VIDEO_NAME, Replay, border_width, replay
from tests.media import read_frames

ROOT = Path(__file__).resolve().parents[1]
FPS = 25.0
SEGMENTS = [("calm", 6.0), ("fight", 5.0), ("calm", 8.0)]
TIME_FIELDS = ("started_at", "ended_at", "emitted_at")
Stream = tuple[Path, tuple[float, float]]  # the video and the fight's span in seconds


def rclstm(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env={**os.environ})


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """A real mp4 (calm, fight, calm in one scene) and the fight's span in seconds."""
    video = tmp_path_factory.mktemp("video") / "store.mp4"
    spans = write_stream(video, SEGMENTS, fps=FPS, seed=3)
    return video, (spans[1][1], spans[1][2])


@pytest.fixture(scope="module")
def replayed(stream: Stream, tmp_path_factory: pytest.TempPathFactory) -> Replay:
    config = Config.model_validate({"model": {"bundle": "demo"}})
    return replay(stream[0], tmp_path_factory.mktemp("replay"), config)


def read_events(lines: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines.splitlines() if line.strip()]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_replay_finds_the_incidents_the_daemon_finds(replayed: Replay, stream: Stream) -> None:
    video, (fight_start, fight_end) = stream
    daemon = rclstm("run", "--source", str(video), "--fast", "--model", "demo")
    assert daemon.returncode == 0, daemon.stderr
    ours = read_events(replayed.events.read_text())
    theirs = read_events(daemon.stdout)

    assert [e["type"] for e in ours] == [e["type"] for e in theirs]
    assert ours[0]["type"] == "start" and ours[-1]["type"] == "end"
    # Same grouping of messages into incidents (ids are random per run).
    ids_ours = [e["event_id"] for e in ours]
    ids_theirs = [e["event_id"] for e in theirs]
    assert [ids_ours.index(i) for i in ids_ours] == [ids_theirs.index(i) for i in ids_theirs]
    # Frame times are "when reading started + position": the same positions, shifted by one constant.
    shift = when(theirs[0]["started_at"]) - when(ours[0]["started_at"])
    for mine, daemons in zip(ours, theirs, strict=True):
        for key in TIME_FIELDS:
            if mine[key] is None:
                assert daemons[key] is None
            else:
                assert when(daemons[key]) - when(mine[key]) == shift, key
        rest = {k: v for k, v in mine.items() if k not in (*TIME_FIELDS, "event_id")}
        assert rest == {k: v for k, v in daemons.items() if k not in (*TIME_FIELDS, "event_id")}

    # And the incident is the fight: stream-time span overlapping it, peak and mean as published.
    incidents = replayed.scan.incidents
    assert len(incidents) == [e["type"] for e in ours].count("end") == 1
    incident = incidents[0]
    assert incident.start_ts < fight_end and incident.end_ts > fight_start
    assert fight_start <= incident.alert_ts <= fight_start + 3.0
    end_event = ours[-1]
    assert (end_event["peak_score"], end_event["mean_score"]) == (round(incident.peak, 4), round(incident.mean, 4))
    origin = replayed.scan.first.wall - timedelta(seconds=replayed.scan.first.ts)  # type: ignore[union-attr]
    assert when(end_event["started_at"]) == origin + timedelta(seconds=incident.start_ts)
    assert when(end_event["ended_at"]) == origin + timedelta(seconds=incident.end_ts)


def test_annotated_video_keeps_every_frame_and_marks_the_open_incident(
    replayed: Replay, stream: Stream
) -> None:
    original = read_frames(stream[0])[0]
    annotated = read_frames(replayed.video)[0]
    assert replayed.video.name == VIDEO_NAME
    assert len(annotated) == len(original) == replayed.scan.frames == round(sum(s for _, s in SEGMENTS) * FPS)
    assert annotated[0].shape == original[0].shape

    incident = replayed.scan.incidents[0]
    height = original[0].shape[0]
    strip = (slice(height // 3, 2 * height // 3), slice(0, border_width(original[0].shape) - 1))
    period = 1.0 / FPS
    inside = outside = 0
    for i, (mine, source) in enumerate(zip(annotated, original, strict=True)):
        ts = i * period
        b, g, r = (float(c) for c in mine[strip].reshape(-1, 3).mean(axis=0))
        red = r > 170 and g < 80 and b < 80
        if incident.alert_ts + period < ts < incident.closed_ts - period:
            inside += 1
            assert red, f"frame {i} at {ts:.2f}s is inside the open incident but has no red border"
        elif ts < incident.alert_ts - period or ts > incident.closed_ts + period:
            outside += 1
            assert not red, f"frame {i} at {ts:.2f}s is outside the incident but has a red border"
            assert np.abs(mine[strip].astype(int) - source[strip].astype(int)).mean() < 20
    assert inside > 3 * FPS and outside > 10 * FPS
    # The label band is drawn on every frame: the top rows are darkened and carry text.
    band = slice(0, 8)
    assert annotated[0][band].mean() < original[0][band].mean() - 20


def test_timeline_is_a_png_and_phases_follow_the_incident(replayed: Replay) -> None:
    assert replayed.timeline == replayed.out_dir / TIMELINE_NAME
    data = replayed.timeline.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and 250 <= image.shape[0] <= 1000 and 600 <= image.shape[1] <= 2000
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # a drawing, not a blank canvas

    # The hysteresis phase each window left behind: pending for the first qualifying window
    # (start_windows = 2), open from the alert until the window that closed it, then cooldown.
    incident = replayed.scan.incidents[0]
    phases = {w.ts: w.phase for w in replayed.scan.windows}
    assert phases[incident.start_ts] == "pending"
    assert {p for ts, p in phases.items() if incident.alert_ts <= ts < incident.closed_ts} == {"open"}
    assert phases[incident.closed_ts] == "cooldown"
    assert {p for ts, p in phases.items() if ts < incident.start_ts} == {"idle"}


def test_cli_replay_prints_the_summary_and_writes_events(
    stream: Stream, replayed: Replay, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[model]\nbundle = "demo"\n\n[[cameras]]\nid = "till"\nsource = 0\n\n'
                      '[[cameras]]\nid = "door"\nsource = "rtsp://cam/door"\n[cameras.decision]\nstart_windows = 2\n')
    out = tmp_path / "out"
    proc = rclstm("replay", str(stream[0]), "--config", str(config), "--camera", "door", "--out", str(out),
                  "--no-plots")
    assert proc.returncode == 0, proc.stderr
    incident = replayed.scan.incidents[0]
    row = next(line for line in proc.stdout.splitlines() if line.strip().startswith("1 "))
    assert row.split()[1:4] == ["fight", f"{incident.start_ts:.2f}", f"{incident.end_ts:.2f}"]
    assert row.split()[8] == incident.end_reason == "calm"
    events = read_events((out / EVENTS_NAME).read_text())
    assert f"1 incident(s), {len(events)} event(s)" in proc.stdout
    assert {e["camera_id"] for e in events} == {"door"}
    assert [e["type"] for e in events] == [e["type"] for e in read_events(replayed.events.read_text())]
    assert (out / VIDEO_NAME).is_file() and not (out / TIMELINE_NAME).exists()


def test_replay_shows_where_the_lights_switched(tmp_path: Path) -> None:
    """A calm scene whose lights go down at 2 s and back up at 4 s: two scene cuts, no incident."""
    from edge.synthetic import render_clip, write_video

    frames = render_clip("calm", int(6 * FPS), 160, 120, np.random.default_rng(4))
    dimmed = [(f * (0.25 if 2.0 <= i / FPS < 4.0 else 1.0)).astype(np.uint8) for i, f in enumerate(frames)]
    video = write_video(tmp_path / "lights.mp4", dimmed, FPS)
    proc = rclstm("replay", str(video), "--model", "demo", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "scene cut(s)" in x)
    cuts = [float(t) for t in line.split(" at ")[1].removesuffix(" s").split(", ")]
    # The first sampled frame at or after each switch (one every 0.1 s).
    assert len(cuts) == 2 and abs(cuts[0] - 2.0) <= 0.11 and abs(cuts[1] - 4.0) <= 0.11, line
    assert "0 incident(s)" in proc.stdout
    assert (tmp_path / "out" / TIMELINE_NAME).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("case", ["missing video", "unknown camera", "not a video", "empty file"])
def test_bad_input_is_one_line_and_exit_2(case: str, tmp_path: Path, stream: Stream) -> None:
    video = stream[0]
    args = ["--model", "demo", "--out", str(tmp_path / "out")]
    if case == "missing video":
        video, expected = tmp_path / "absent.mp4", "absent.mp4: no such file"
    elif case == "unknown camera":
        args += ["--camera", "nope"]
        expected = "--camera nope: no camera with that id in the built-in defaults; cameras: cam0"
    elif case == "not a video":
        video = tmp_path / "notes.mp4"
        video.write_bytes(os.urandom(2000))
        expected = "it is not a video OpenCV can decode"
    else:
        video = tmp_path / "empty.mp4"
        video.write_bytes(b"")
        expected = "it is not a video OpenCV can decode"
    proc = rclstm("replay", str(video), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / VIDEO_NAME).exists()


def test_missing_matplotlib_is_one_line_before_any_work(tmp_path: Path, stream: Stream) -> None:
    code = ("import sys; sys.modules['matplotlib'] = None; from edge.app.cli import main; "
            f"raise SystemExit(main(['replay', {str(stream[0])!r}, '--model', 'demo', '--out', {str(tmp_path)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: matplotlib is not installed: pip install 'rclstm-edge[plots]' "
                                   "(or pass --no-plots)")
    assert not (tmp_path / VIDEO_NAME).exists()
