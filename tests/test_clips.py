"""Incident clips on real encoded video: what a clip holds, its bounds in size and age, restarts, full disks.

The daemon runs in-process on generated streams with the real demo bundle; clips are decoded back with
OpenCV; the full disk is a real 1 MB tmpfs (skipped where mounting is not allowed).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.adapters.clips import CLIPS_DIR, PARTIAL_SUFFIX, ClipKind, ClipRecord, ClipStore
from edge.app.daemon import Daemon
from edge.core.config import ClipsConfig, Config, ConfigError, validate_config
from edge.core.messages import ModelRef
from edge.sinks.lines import StdoutSink
from edge.synthetic import write_stream
from testbed.daemon import camera, launch, write_config
from testbed.faults import fill_space
from tests.media import read_frames

STREAM = [("calm", 12.0), ("fight", 5.0), ("calm", 8.0)]
MODEL = ModelRef(name="demo-synth", version="2", sha256="0" * 64)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    video = tmp_path_factory.mktemp("stream") / "store.mp4"
    write_stream(video, STREAM, fps=25)
    return video


def run_daemon(state_dir: Path, video: Path, model: str = "demo", **clips: object) -> Daemon:
    """The daemon in-process over ``video`` read as fast as possible, clips on, events kept in memory."""
    config = Config.model_validate({
        "device_id": "pi-1", "site": "store-1", "state_dir": str(state_dir), "model": {"bundle": model},
        "clips": {"enabled": True, "calm_s": 5.0, **clips},
        "cameras": [{"id": "door", "source": str(video), "kind": "file", "realtime": False}],
    })
    daemon = Daemon(config, StdoutSink(io.StringIO()))
    assert daemon.run() == 0
    return daemon


def events(daemon: Daemon) -> list[dict[str, object]]:
    import json

    sink = daemon.sink
    assert isinstance(sink, StdoutSink) and isinstance(sink.out, io.StringIO)
    return [json.loads(line) for line in sink.out.getvalue().splitlines()]


def test_clips_are_off_by_default_and_a_misspelt_key_is_one_line() -> None:
    assert Config().clips.enabled is False
    with pytest.raises(ConfigError) as caught:
        validate_config({"clips": {"enable": True}})
    assert caught.value.problems == ["clips.enable = True: unknown key; remove it or check its spelling"]


def test_an_incident_clip_holds_the_sampled_frames_from_before_its_start_to_its_end(
        tmp_path: Path, stream: Path) -> None:
    daemon = run_daemon(tmp_path / "state", stream, pre_s=3.0, calm_s=1.0)  # the lead-in, not calm_s, sizes it
    start, end = (e for e in events(daemon) if e["type"] in ("start", "end"))
    store = daemon.clips
    assert store is not None
    kept = {record.kind: (record, video) for record, video in store.clips()}
    assert sorted(kept) == ["calm", "incident"]
    record, video = kept["incident"]
    assert str(record.clip_id) == start["event_id"] and record.label == "fight" and record.model.name == "demo-synth"
    interval = 1 / record.fps
    lead = (record.started_at - record.clip_start).total_seconds()
    assert 3.0 - 2 * interval <= lead <= 3.0
    assert record.ended_at is not None and record.clip_end >= record.ended_at
    assert record.ended_at == datetime.fromisoformat(str(end["ended_at"]))
    frames, fps = read_frames(video)
    assert len(frames) == record.frames and abs(fps - record.fps) < 0.5
    assert frames[0].shape[1] <= 256
    assert abs(len(frames) - (record.clip_end - record.clip_start).total_seconds() * record.fps) <= 2
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in store.root.iterdir()} == {0o600}
    assert daemon.stats().clips == 2 and daemon.stats().clips_errors == 0


def test_a_calm_clip_is_quiet_footage_and_the_schedule_survives_a_restart(tmp_path: Path, stream: Path) -> None:
    first = run_daemon(tmp_path / "state", stream, calm_every_s=3600)
    assert first.clips is not None
    calm = [(r, v) for r, v in first.clips.clips() if r.kind == "calm"]
    assert len(calm) == 1
    start = next(e for e in events(first) if e["type"] == "start")
    assert calm[0][0].clip_end < datetime.fromisoformat(str(start["started_at"]))
    assert len(read_frames(calm[0][1])[0]) == calm[0][0].frames >= 5.0 * calm[0][0].fps - 2

    second = run_daemon(tmp_path / "state", stream, calm_every_s=3600)
    assert second.clips is not None
    kinds = [r.kind for r, _ in second.clips.clips()]
    assert kinds.count("incident") == 2, "the first run's clips are still there"
    assert kinds.count("calm") == 1, "no second calm clip within calm_every_s, although the daemon restarted"


def make_clip(store: ClipStore, start: datetime, frames: int = 20, kind: ClipKind = "calm",
              clip_id: uuid.UUID | None = None) -> Path:
    """A real encoded clip of noise frames, kept through the store's own writer."""
    record = ClipRecord(clip_id=clip_id or uuid.uuid4(), kind=kind, device_id=store.device_id, site="s",
                        camera_id="door", model=MODEL, clip_start=start, clip_end=start, fps=10.0)
    writer = store.begin(record, (64, 48))
    assert writer is not None
    rng = np.random.default_rng(0)
    for i in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), start + timedelta(seconds=i / 10))
    video = writer.finish()
    assert video is not None
    return video


def test_storage_is_bounded_by_size_oldest_first(tmp_path: Path) -> None:
    store = ClipStore(tmp_path, ClipsConfig(enabled=True, min_free_bytes=0), "pi-1")
    t0 = datetime.now(timezone.utc) - timedelta(days=1)  # recent: max_age_days must not be what removes them
    one = make_clip(store, t0)
    size = one.stat().st_size + one.with_suffix(".json").stat().st_size
    store.cfg = ClipsConfig(enabled=True, min_free_bytes=0, max_bytes=max(100_000, int(size * 3.5)))
    videos = [one] + [make_clip(store, t0 + timedelta(minutes=i)) for i in range(1, 6)]
    kept = [video for _, video in store.clips()]
    assert kept == videos[-len(kept):], "the newest clips are the ones kept"
    assert 1 <= len(kept) < len(videos)
    assert store.usage()[1] <= store.cfg.max_bytes
    assert not any(v.exists() or v.with_suffix(".json").exists() for v in videos[: -len(kept)])


def test_storage_is_bounded_by_age(tmp_path: Path) -> None:
    store = ClipStore(tmp_path, ClipsConfig(enabled=True, min_free_bytes=0, max_age_days=30), "pi-1")
    now = datetime.now(timezone.utc)
    old, recent = make_clip(store, now - timedelta(days=31)), make_clip(store, now - timedelta(days=29))
    assert not old.exists(), "a clip past max_age_days goes when the next one is kept"
    assert recent.exists()
    assert store.prune(now + timedelta(days=2)) == 1 and not recent.exists()


def test_clips_survive_a_restart_and_a_clip_cut_short_by_sigkill_is_deleted(tmp_path: Path) -> None:
    video = tmp_path / "fight.mp4"
    write_stream(video, [("calm", 3.0), ("fight", 60.0)], fps=25)
    state = tmp_path / "state"
    earlier = ClipStore(state, ClipsConfig(enabled=True, min_free_bytes=0), "dev-faults")
    kept = make_clip(earlier, datetime.now(timezone.utc) - timedelta(hours=1))
    config = write_config(tmp_path, [camera(str(video), "door", kind="file")], clips={"enabled": True,
                                                                                     "min_free_bytes": 0})
    daemon = launch(config, tmp_path)
    try:
        assert daemon.wait_log("type=start", 60), daemon.stderr
        # The worker hands the start to the sink (which logs it) before the recorder opens the clip, so
        # the clip appears just after the log line: wait for it rather than race the camera thread.
        deadline = time.monotonic() + 30
        while not (partial := list((state / CLIPS_DIR).glob(f"*{PARTIAL_SUFFIX}"))) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(partial) == 1, "the open incident's clip is being written"
    finally:
        daemon.stop(signal.SIGKILL)
    restarted = ClipStore(state, ClipsConfig(enabled=True, min_free_bytes=0), "dev-faults")
    assert [v for _, v in restarted.clips()] == [kept], "the complete clip survived, nothing else is listed"
    assert not partial[0].exists() and not list((state / CLIPS_DIR).glob("*.json.tmp"))
    assert sorted(p.suffix for p in (state / CLIPS_DIR).iterdir()) == [".json", ".mp4"]


def test_a_record_write_cut_short_is_removed_and_the_record_it_replaced_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    earlier = ClipStore(state, ClipsConfig(enabled=True, min_free_bytes=0), "dev-faults")
    kept = make_clip(earlier, datetime.now(timezone.utc) - timedelta(hours=1))
    record = next((state / CLIPS_DIR).glob("*.json"))
    stray = record.with_suffix(".json.tmp")
    stray.write_text('{"cut sho')  # a run killed between writing the temporary record and renaming it
    restarted = ClipStore(state, ClipsConfig(enabled=True, min_free_bytes=0), "dev-faults")
    assert not stray.exists()
    assert [v for _, v in restarted.clips()] == [kept]


@pytest.mark.parametrize(("reserve", "left", "said"), [
    (0, 0, ["cannot start a clip"]),
    (0, 24_000, ["cannot keep a clip"]),
    (50_000_000, 24_000, ["cannot start a clip"]),
], ids=["disk-full", "disk-fills-mid-clip", "reserve-refuses-the-clip"])
def test_a_full_disk_never_stops_detection(tmpfs: Path, stream: Path, reserve: int, left: int, said: list[str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    state = tmpfs / "state"
    (state / CLIPS_DIR).mkdir(parents=True)
    filler = fill_space(tmpfs)
    os.truncate(filler, filler.stat().st_size - left)  # room for a clip's start, not for the whole clip
    with caplog.at_level(logging.DEBUG, logger="edge.adapters.clips"):
        daemon = run_daemon(state, stream, min_free_bytes=reserve)
    kinds = [e["type"] for e in events(daemon)]
    assert kinds[0] == "start" and kinds[-1] == "end", "detection went on"
    stats = daemon.stats()
    assert stats.clips == 0 and (stats.clips_errors or 0) >= 2  # the calm clip and the incident's
    errors = [r.getMessage().removeprefix("clips: ") for r in caplog.records if r.levelno >= logging.ERROR]
    assert [e.split(" (")[0].split(" of camera")[0] for e in errors] == said, errors  # one line per kind
    assert all("detection goes on without this clip" in line for line in errors)
    assert not list((state / CLIPS_DIR).iterdir()), "nothing half-written is left"


@pytest.mark.parametrize(("reserve", "said"), [
    (0, "PASS clips: {root}: 1 clip(s), 0 judged, "),
    (10**11, "FAIL clips: "),
], ids=["room", "disk-too-full"])
def test_check_says_whether_clips_will_be_kept(tmp_path: Path, stream: Path, reserve: int, said: str) -> None:
    make_clip(ClipStore(tmp_path / "state", ClipsConfig(enabled=True, min_free_bytes=0), "pi-1"),
              datetime.now(timezone.utc))
    config = tmp_path / "config.toml"
    config.write_text(f'device_id = "pi-1"\nsite = "s"\nstate_dir = "{tmp_path / "state"}"\n[model]\nbundle = "demo"\n'
                      f'[clips]\nenabled = true\nmin_free_bytes = {reserve}\n'
                      f'[[cameras]]\nid = "door"\nsource = "{stream}"\n')
    done = subprocess.run([sys.executable, "-m", "edge", "check", "--config", str(config)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(said.format(root=tmp_path / "state" / CLIPS_DIR)), done.stdout
    assert done.returncode == (0 if reserve == 0 else 1)
    if reserve:
        assert "under clips.min_free_bytes" in last and "no clip will be kept" in last
