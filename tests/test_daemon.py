"""The daemon in-process: real video files, the real demo bundle, and a sink that records what it is given.

The daemon only supervises; these tests show that what the cameras produce reaches the sink in the
order the contract needs (a camera's status, its incident's events, its end of stream), that the
stats add the cameras up, and how the exit code and shutdown follow the workers.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge.app.daemon import Daemon
from edge.core.config import Config
from edge.core.messages import CameraStatus, Stats
from edge.core.values import Output
from edge.sinks.base import Sink
from edge.synthetic import write_stream
from testbed.mjpeg import MjpegCamera, read_jpegs


class Recorder(Sink):
    """Keeps everything in memory; ``fail`` makes the first delivery raise, as a broken sink or chain would."""

    description = "memory"

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.lock = threading.Lock()
        self.calls: list[tuple[str, ...]] = []
        self.outputs: dict[str, list[Output]] = {}
        self.statuses: dict[str, list[CameraStatus]] = {}
        self.reports: list[Stats] = []
        self.opened: tuple[list[str], str] | None = None
        self.closed_with: float | None = None

    def open(self, camera_ids: list[str], model: str) -> None:
        self.opened = (camera_ids, model)

    def deliver(self, camera_id: str, output: Output) -> None:
        if self.fail:
            self.fail = False
            raise RuntimeError("the sink broke")
        with self.lock:
            self.calls.append((camera_id, output.event.type))
            self.outputs.setdefault(camera_id, []).append(output)

    def camera_state(self, camera_id: str, status: CameraStatus) -> None:
        with self.lock:
            self.calls.append((camera_id, "online" if status.online else "offline"))
            self.statuses.setdefault(camera_id, []).append(status)

    def stats(self, stats: Stats) -> None:
        self.reports.append(stats)

    def close(self, flush_timeout_s: float) -> None:
        self.closed_with = flush_timeout_s


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("daemon")
    fight, calm = folder / "fight.mp4", folder / "calm.mp4"
    write_stream(fight, [("calm", 8), ("fight", 5), ("calm", 8)], fps=25)
    write_stream(calm, [("calm", 8)], fps=25)
    return {"door": fight, "till": calm}


def config(tmp_path: Path, sources: dict[str, str]) -> Config:
    cameras = [{"id": cid, "source": src, "realtime": False, "open_timeout_s": 2} for cid, src in sources.items()]
    return Config.model_validate({"device_id": "pi-1", "site": "shop", "state_dir": str(tmp_path),
                                  "model": {"bundle": "demo"}, "cameras": cameras,
                                  "outbox": {"flush_timeout_s": 3.0}})


def test_cameras_reach_the_sink_and_the_daemon_ends_with_its_sources(tmp_path: Path, videos: dict[str, Path]) -> None:
    sink = Recorder()
    daemon = Daemon(config(tmp_path, {k: str(v) for k, v in videos.items()}), sink)
    assert daemon.run() == 0

    assert sink.opened is not None and sink.opened[0] == ["door", "till"]
    assert sink.opened[1].startswith("demo-synth ")
    door = [e.event for e in sink.outputs["door"]]
    assert door[0].type == "start" and door[-1].type == "end" and "till" not in sink.outputs
    assert {(e.device_id, e.site, e.camera_id) for e in door} == {("pi-1", "shop", "door")}
    # Per camera: online first; the incident's events; offline (end of file) after its end.
    door_calls = [kind for camera, kind in sink.calls if camera == "door"]
    assert door_calls[0] == "online" and door_calls[-1] == "offline" and door_calls[-2] == "end"
    assert [s.reason for s in sink.statuses["till"]] == ["streaming", "end of file"]
    assert sink.outputs["door"][-1].peak_frame is None  # no snapshots, no clips: no camera picture is kept

    # Stats at shutdown add the cameras up; the sink is closed with the configured flush time.
    last = sink.reports[-1]
    assert last.events == sink.emitted() == len(door)
    assert set(last.cameras) == {"door", "till"} and last.frames_in == 21 * 25 + 8 * 25
    assert last.cameras["door"].incidents == 1 and not last.cameras["door"].incident_open
    assert last.outbox_depth is None  # a sink without delivery counters leaves them out
    assert sink.closed_with == 3.0


def test_a_stop_request_ends_a_camera_that_never_opens(tmp_path: Path) -> None:
    sink = Recorder()
    daemon = Daemon(config(tmp_path, {"yard": str(tmp_path / "missing.mp4")}), sink)
    threading.Timer(1.5, daemon.stop_requested.set).start()
    assert daemon.run() == 0
    offline = sink.statuses["yard"]
    assert not offline[0].online and "cannot open file source" in offline[0].reason
    assert sink.outputs == {} and sink.closed_with == 3.0


def test_a_camera_whose_chain_fails_makes_the_exit_code_1(tmp_path: Path, videos: dict[str, Path]) -> None:
    sink = Recorder(fail=True)
    daemon = Daemon(config(tmp_path, {"door": str(videos["door"])}), sink)
    assert daemon.run() == 1
    assert daemon.workers[0].error == "RuntimeError: the sink broke"
    assert sink.closed_with == 3.0


def test_an_mjpeg_camera_decodes_only_the_jpegs_it_samples_and_finds_the_fight(tmp_path: Path) -> None:
    """A real HTTP MJPEG camera at 25 fps (the generated scene at 320x240, its JPEGs): the incident is found
    from the sampled JPEGs alone (test_pipeline.py checks the size they are decoded at)."""
    video = tmp_path / "fight.avi"
    write_stream(video, [("calm", 3), ("fight", 5), ("calm", 3)], fps=25, size=(320, 240))
    camera = MjpegCamera(read_jpegs(video), fps=25)
    sink = Recorder()
    daemon = Daemon(config(tmp_path, {"yard": camera.url}), sink)

    def stop_when_the_stream_ends() -> None:
        while not any(not s.online for s in sink.statuses.get("yard", [])):
            if daemon.stop_requested.wait(0.1):
                return
        daemon.stop_requested.set()

    threading.Thread(target=stop_when_the_stream_ends, daemon=True).start()
    try:
        assert daemon.run() == 0
    finally:
        camera.close()
    kinds = [o.event.type for o in sink.outputs["yard"]]
    assert kinds[0] == "start" and kinds[-1] == "end"
    stats = sink.reports[-1].cameras["yard"]
    assert stats.frames_in == 11 * 25 and 0 < stats.frames_sampled < stats.frames_in
