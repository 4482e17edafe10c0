"""Scaling: one daemon watching 1, 2 and 4 cameras of the same stream at real-time pacing.

A file played in real time stands in for a camera: if the daemon keeps up, each camera's video
takes its own length to play (25 fps held); if it falls behind, playback stretches and the frame
rate held drops, as a live camera would drop frames. Each camera's play time runs from its
"online" log line to its "end of file" line; CPU is the kernel's count for the whole process.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from bench.common import Settings, Table, run_daemon
from bench.soak import sample
from testbed.daemon import DaemonProcess, camera


def realtime(settings: Settings, stream: dict, bundle: Path, cameras: int) -> dict[str, Any]:
    """Run ``cameras`` copies of ``stream`` in real time; frames per second held per camera and CPU."""
    configs = [camera(stream["path"], f"cam{i}") for i in range(cameras)]
    at_running: dict[str, float] = {}

    def watch(daemon: DaemonProcess) -> None:
        def wait() -> None:
            if daemon.wait_log("running:", 120):
                at_running["cpu_s"] = sample(daemon.proc.pid)["cpu_s"]

        threading.Thread(target=wait, daemon=True).start()

    done = run_daemon(settings.work / f"realtime-{cameras}", configs, bundle, on_started=watch)
    fps = []
    for i in range(cameras):
        play = done.between(f"camera cam{i} online", f"camera cam{i} offline: end of file")
        fps.append(stream["frames"] / play if play else 0.0)
    running = done.since_start("running:") or 0.0
    cores = (done.cpu_s - at_running.get("cpu_s", 0.0)) / max(1e-9, done.wall_s - running)
    return {
        "cameras": cameras,
        "fps_held_min": round(min(fps), 2),
        "fps_held_mean": round(sum(fps) / len(fps), 2),
        "stream_fps": stream["fps"],
        "cpu_cores": round(cores, 3),
        "cpu_share_of_machine": f"{cores / (os.cpu_count() or 1):.0%}",
        "max_rss_mb": round(done.max_rss_mb, 1),
    }


def run(settings: Settings, stream: dict, bundle: Path, source: str) -> Table:
    table = Table("scaling", "Scaling: cameras in one daemon at real-time pacing",
                  ["cameras", "fps_held_min", "fps_held_mean", "stream_fps", "cpu_cores", "cpu_share_of_machine",
                   "max_rss_mb"])
    for count in settings.pick((1, 2), (1, 2, 4)):
        table.rows.append(realtime(settings, stream, bundle, count))
    table.extra.update(stream=stream, bundle=str(bundle), model_source=source)
    table.notes += [
        f"stream: {stream['seconds']:g} s {stream['size'][0]}x{stream['size'][1]} {stream['codec']} at "
        f"{stream['fps']:g} fps per camera; CPU includes decoding, "
        "counted after the daemon logged 'running' (start-up excluded)",
        f"model: {source}; one interpreter per camera, 1 thread each",
    ]
    return table
