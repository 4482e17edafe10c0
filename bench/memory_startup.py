"""Memory and start-up: the daemon's peak RSS with one camera, per runtime and resolution; time to its first window.

Peak RSS is the daemon's own high-water mark (VmHWM from /proc, sampled while it runs; see
``bench.common._memory_kb`` for why not ``ru_maxrss``), so it includes the interpreter, OpenCV's
decoder and every import. It is split into anonymous memory (what the process needs) and file
pages (library code, clean and reclaimable) at the highest sample, because the two call for
different remedies. What a camera costs is the same daemon's peak on a 64x64 stream (the imports,
the model and the threads, with next to nothing to decode) subtracted from its peak at the
camera's resolution. Under both lies the stack (``bench.stack``): the device's packages, the model
loaded and run, and the same stream read with none of our code; the daemon's peak minus the stack's
at the same stream is what our code, its config and the pipeline add. Start-up is timed from just
before the process is created to its "running" log line (models loaded, camera thread started) and
to its "first window" line: the first classification, taken as soon as the first window's frames
are in (the file is read ``--fast``, so no waiting for a camera's 1.4 s of frames is counted).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bench.common import DaemonRun, Settings, Table, child_usage, run_daemon, tflite_python
from bench.pipeline_overhead import streams
from edge.adapters.runtime import RUNTIMES
from edge.bundle import load_bundle
from testbed.daemon import camera

# Peak RSS goals (MB): issue 14's for one 720p camera, and the earlier one for any single camera.
GOAL_720P_MB = 90.0
RSS_GOAL_MB = 150.0
FLOOR_SIZE = (64, 64)  # the model's own input size: the daemon with (almost) no decoding
SIZES = (FLOOR_SIZE, (640, 360), (1280, 720))


def _runs(settings: Settings, stream: dict, bundle: Path, runtime: str, python: Path, repeats: int) -> list[DaemonRun]:
    runs = [run_daemon(settings.work / "memory", [camera(stream["path"], realtime=False)], bundle,
                       python=python, runtime=runtime) for _ in range(repeats)]
    failed = [r for r in runs if r.since_start("first window") is None]
    if failed:
        raise RuntimeError(f"{runtime}: daemon never classified a window: {failed[0].stderr[-500:]}")
    return runs


def _stack_mb(stream: dict, model: Path, runtime: str, python: Path, repeats: int) -> float:
    """Median peak RSS (MB) of ``bench.stack`` on the stream: the packages and model without the daemon."""
    argv = [str(python), "-m", "bench.stack", stream["path"], str(model), dict(RUNTIMES)[runtime]]
    return statistics.median(child_usage(argv)[1] for _ in range(repeats))


def run(settings: Settings, labels: tuple[str, str], bundle: Path, source: str) -> Table:
    table = Table("memory_startup", "Memory and start-up, one camera (H.264), per runtime and resolution",
                  ["runtime", "stream", "peak_rss_mb", "anon_mb", "file_mb", "camera_mb", "stack_mb",
                   "over_stack_mb", "to_running_s", "to_first_window_s", "goal", "goal_met"])
    repeats = settings.pick(1, 3)
    runtimes = [("ai-edge-litert", Path(sys.executable))]
    other = tflite_python()
    if other is not None and other.exists():
        runtimes.append(("tflite-runtime", other))
    else:
        table.notes.append("tflite-runtime not measured: set RCLSTM_TFLITE_PYTHON to its interpreter")
    used = {size: streams(settings, *labels, "h264", size)[0] for size in SIZES}
    model = load_bundle(bundle)[1]
    for runtime, python in runtimes:
        floor_mb = 0.0  # SIZES starts with the floor, so it is set before any camera is compared with it
        for size, stream in used.items():
            runs = _runs(settings, stream, bundle, runtime, python, repeats)
            rss = statistics.median(r.peak.rss_mb for r in runs)
            stack = _stack_mb(stream, model, runtime, python, repeats)
            is_floor = size == FLOOR_SIZE
            if is_floor:
                floor_mb = rss
            goal = GOAL_720P_MB if size == (1280, 720) else RSS_GOAL_MB
            table.rows.append({
                "runtime": runtime, "stream": f"{size[0]}x{size[1]}" + (" (floor)" if is_floor else ""),
                "peak_rss_mb": round(rss, 1),
                "anon_mb": round(statistics.median(r.peak.anon_mb for r in runs), 1),
                "file_mb": round(statistics.median(r.peak.file_mb for r in runs), 1),
                "camera_mb": None if is_floor else round(rss - floor_mb, 1),
                "stack_mb": round(stack, 1), "over_stack_mb": round(rss - stack, 1),
                "to_running_s": round(statistics.median(r.since_start("running:") or 0.0 for r in runs), 3),
                "to_first_window_s": round(statistics.median(r.since_start("first window") or 0.0 for r in runs), 3),
                "goal": f"<= {goal:g} MB", "goal_met": "yes" if rss <= goal else "no",
            })
    table.extra.update(streams={f"{s[0]}x{s[1]}": m for s, m in used.items()}, bundle=str(bundle),
                       model_source=source, repeats=repeats)
    table.notes += [
        f"model: {source}; H.264 streams of real clips read --fast; medians of {repeats}",
        "peak_rss_mb = VmHWM; anon_mb / file_mb = anonymous and file-backed resident memory at the highest "
        "sample; camera_mb = peak minus the same runtime's 64x64 floor (what decoding and preparing that "
        "resolution adds); stack_mb = bench.stack's peak on the same stream (numpy, OpenCV, the runtime, "
        "paho-mqtt, sqlite3, the model loaded and run, every frame read; none of the daemon's code): a floor "
        "under any daemon on these packages; over_stack_mb = peak minus it",
        f"goals: one 1280x720 camera <= {GOAL_720P_MB:g} MB (issue 14), any one camera <= {RSS_GOAL_MB:g} MB",
    ]
    return table
