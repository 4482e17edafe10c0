"""Pipeline overhead over decoding: CPU seconds per second of video, daemon vs a bare OpenCV decode loop.

Decoding is the floor any camera pipeline pays. Both sides open the file the same way
(``edge.adapters.sources.open_capture``) and both run as child processes measured by the kernel (wait4),
the daemon as fast as it can (``--fast``). Start-up (imports, model load) is a fixed cost that
says nothing about a camera running for days, so the per-second figure is the marginal one: the
difference between the full stream and a short stream, divided by the difference in length.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench.common import Settings, Table, child_cpu, run_daemon
from bench.scaling import realtime
from bench.streams import build_stream
from testbed.daemon import camera

OVERHEAD_GOAL = 0.15


def decode_only(path: Path) -> int:
    """The floor: read every frame as the daemon's source does, and nothing else."""
    from edge.adapters.sources import open_capture
    from edge.core.config import CameraConfig

    capture = open_capture(CameraConfig(id="decode", source=str(path)))
    frames = 0
    while True:
        ok, _ = capture.read()
        if not ok:
            break
        frames += 1
    capture.release()
    return frames


def streams(settings: Settings, normal: str, anomaly: str) -> tuple[dict, dict]:
    """The benchmark stream (60 s, normal footage with two fight segments) and a short one for start-up."""
    data = settings.data
    assert data is not None
    long = settings.pick([(normal, 4.0), (anomaly, 2.0)],
                         [(normal, 20.0), (anomaly, 10.0), (normal, 20.0), (anomaly, 10.0)])
    short = settings.pick([(normal, 1.0)], [(normal, 4.0)])
    cache = settings.work / "streams"
    return build_stream(data, long, cache), build_stream(data, short, cache)


def run(settings: Settings, bundle: Path, source: str, labels: tuple[str, str]) -> Table:
    long, short = streams(settings, *labels)
    repeats = settings.pick(1, 3)
    table = Table("pipeline_overhead", "Pipeline overhead over decoding (CPU s per s of video, marginal)",
                  ["pipeline", "cpu_s_long", "cpu_s_short", "cpu_s_per_video_s", "overhead_vs_decode", "fps_held",
                   "goal_met"])
    decode, daemon = [], []
    for _ in range(repeats):
        decode.append([child_cpu([sys.executable, "-m", "bench.pipeline_overhead", s["path"]]) for s in (long, short)])
        runs = [run_daemon(settings.work / "overhead", [camera(s["path"], realtime=False)], bundle)
                for s in (long, short)]
        daemon.append([r.cpu_s for r in runs])
    span = long["seconds"] - short["seconds"]
    floor = statistics.median((a - b) / span for a, b in decode)
    cost = statistics.median((a - b) / span for a, b in daemon)
    for name, pairs, per_s in (("bare OpenCV decode", decode, floor), ("daemon --fast", daemon, cost)):
        overhead = per_s / floor - 1.0
        table.rows.append({
            "pipeline": name, "cpu_s_long": round(statistics.median(p[0] for p in pairs), 3),
            "cpu_s_short": round(statistics.median(p[1] for p in pairs), 3),
            "cpu_s_per_video_s": round(per_s, 4), "overhead_vs_decode": f"{overhead:+.1%}",
            "goal_met": None if name.startswith("bare") else ("yes" if overhead <= OVERHEAD_GOAL else "no"),
        })
    paced = realtime(settings, long, bundle, 1)
    table.rows.append({"pipeline": "daemon, real-time pacing", "cpu_s_per_video_s": paced["cpu_cores"],
                       "overhead_vs_decode": f"{paced['cpu_cores'] / floor - 1.0:+.1%}",
                       "fps_held": paced["fps_held_min"]})
    table.extra.update(realtime=paced, stream=long, short_stream=short, bundle=str(bundle), model_source=source,
                       repeats=repeats, overhead=round(cost / floor - 1.0, 4))
    table.notes += [
        f"stream: {long['seconds']:g} s, {long['fps']:g} fps, {long['size'][0]}x{long['size'][1]} {long['codec']} "
        f"from {long['source']}; short stream {short['seconds']:g} s subtracts start-up; medians of {repeats}; "
        "the real-time row is CPU s per wall s after start-up (one run)",
        f"model: {source}; goal: overhead <= {OVERHEAD_GOAL:.0%}",
    ]
    return table


if __name__ == "__main__":
    decode_only(Path(sys.argv[1]))
