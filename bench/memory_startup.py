"""Memory and start-up: peak RSS of the daemon with one camera in each runtime, and time to the first window.

Peak RSS is the daemon's own high-water mark (VmHWM from /proc, sampled while it runs; see
``bench.common._high_water_kb`` for why not ``ru_maxrss``), so it includes the interpreter,
OpenCV's decoder and every import. Start-up is timed from just before the process
is created to its "running" log line (models loaded, camera thread started) and to its "first
window" line: the first classification, taken as soon as the first window's frames are in (the
file is read ``--fast``, so no waiting for a camera's 1.4 s of frames is counted).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench.common import Settings, Table, run_daemon, tflite_python
from testbed.daemon import camera

RSS_GOAL_MB = 150.0


def run(settings: Settings, stream: dict, bundle: Path, source: str) -> Table:
    table = Table("memory_startup", "Memory and start-up, one camera",
                  ["runtime", "python", "peak_rss_mb", "to_running_s", "to_first_window_s", "goal_met"])
    repeats = settings.pick(1, 3)
    runtimes = [("ai-edge-litert", Path(sys.executable))]
    other = tflite_python()
    if other is not None and other.exists():
        runtimes.append(("tflite-runtime", other))
    else:
        table.notes.append("tflite-runtime not measured: set RCLSTM_TFLITE_PYTHON to its interpreter")
    for runtime, python in runtimes:
        runs = [run_daemon(settings.work / "memory", [camera(stream["path"], realtime=False)], bundle,
                           python=python, runtime=runtime) for _ in range(repeats)]
        failed = [r for r in runs if r.since_start("first window") is None]
        if failed:
            raise RuntimeError(f"{runtime}: daemon never classified a window: {failed[0].stderr[-500:]}")
        rss = statistics.median(r.max_rss_mb for r in runs)
        table.rows.append({
            "runtime": runtime, "python": str(python), "peak_rss_mb": round(rss, 1),
            "to_running_s": round(statistics.median(r.since_start("running:") or 0.0 for r in runs), 3),
            "to_first_window_s": round(statistics.median(r.since_start("first window") or 0.0 for r in runs), 3),
            "goal_met": "yes" if rss <= RSS_GOAL_MB else "no",
        })
    table.extra.update(stream=stream, bundle=str(bundle), model_source=source, repeats=repeats)
    table.notes += [
        f"model: {source}; stream {stream['size'][0]}x{stream['size'][1]} {stream['codec']} read --fast; "
        f"medians of {repeats}; goal: peak RSS <= {RSS_GOAL_MB:g} MB",
    ]
    return table
