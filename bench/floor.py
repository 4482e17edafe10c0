"""How far down the daemon's CPU can go: bare loops that add the daemon's steps one at a time.

``pipeline_overhead`` compares the whole daemon with a bare ``read()``. This says where that ratio
comes from, and what no change to the daemon after a step can undo: per stream kind (the files of
``pipeline_overhead``; MJPEG is left out because its camera takes real time per run), a child
process with one decoder thread (the daemon's setting up to 720p) runs

1. ``grab`` every frame (demuxing and decoding), and offer the sampler those it does not pass over;
2. + ``retrieve`` (the colour conversion) of the frames the bundle's sampler takes;
3. + ``prepare_frame`` of those (shrinking to the model's size);
4. + the model input of each (``model_input``: for a motion bundle, the flow statistics).

Step 4 is the work of any model with this sampling and representation before the model itself
runs, the decision, events or anything else. Each figure is marginal, like ``pipeline_overhead``'s
and on its streams (long stream minus short stream), and each repeat has its own bare ``read()``
baseline. Unlike there, each child times its own loop (CPU of all its threads, from opening the
file to the last frame), so the interpreter's start-up and imports, whose CPU varies by tens of
milliseconds from run to run on a shared machine, are not in the difference: the steps differ by a
few ms per video-second.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.common import Settings, Table
from bench.pipeline_overhead import KINDS, bare_read, kind_passes, streams

STEPS = ("grab", "retrieve", "prepare", "input")


def steps_loop(source: str, bundle: str, step: str) -> tuple[int, int, int]:
    """Grab every frame of a file and do the daemon's work up to ``step`` on the sampled ones.

    Returns (frames grabbed, frames retrieved, frames prepared), so a test can tell that each step
    does what the daemon would.
    """
    import cv2

    from edge.bundle import read_manifest
    from edge.core.values import Frame
    from edge.preprocess import model_input
    from edge.stages.sampler import Sampler

    depth = STEPS.index(step)
    manifest = read_manifest(Path(bundle))
    spec = manifest.input
    sampler = Sampler(manifest.sampling.frame_interval_s)
    cv2.setNumThreads(1)
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    # The streams are constant-rate, so a frame's time and the next one's follow from its index (the
    # daemon reads them from the file's packets): the sampler then takes exactly what it would there.
    period = 1.0 / capture.get(cv2.CAP_PROP_FPS)
    wall = datetime.now(timezone.utc)
    frames = retrieved = prepared_count = 0
    previous = None
    while capture.grab():
        ts = frames * period
        frames += 1
        if sampler.passes_over(ts, ts + period):
            continue  # the daemon's source does not deliver these
        image = None
        if depth > 0 and sampler.could_take(ts, ts + period):
            image = capture.retrieve()[1]
            retrieved += 1
        taken = sampler.offer(Frame(image, ts, wall))  # this frame or the one before it
        if depth == 1 or taken is None or taken.image is None:
            continue
        prepared = spec.prepare(taken.image)
        prepared_count += 1
        if depth == 3:
            model_input(prepared, previous, spec.representation)
        previous = prepared
    capture.release()
    return frames, retrieved, prepared_count


def _loop_cpu(path: str, bundle: Path, side: str) -> float:
    """CPU seconds (all threads) of one side's loop over a file, timed inside a fresh child process."""
    done = subprocess.run([sys.executable, "-m", "bench.floor", path, str(bundle), side],
                          capture_output=True, text=True, timeout=600, check=True)
    return float(done.stdout.split()[-1])


def run(settings: Settings, bundle: Path, source: str, labels: tuple[str, str]) -> Table:
    repeats = settings.pick(1, 5)
    sides = ("read", *STEPS)
    table = Table("floor", "CPU per second of video of the daemon's first steps, added one at a time",
                  ["stream", "read_ms", *(f"{s}_ms" for s in STEPS), "floor_ratio", "floor_range", "goal",
                   "goal_reachable"])
    detail = []
    for name, codec, size, goal, passes in KINDS:
        if codec == "mjpeg":
            continue
        long, short = streams(settings, *labels, codec, size, kind_passes(settings, passes))
        span = long["seconds"] - short["seconds"]
        per_s: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(repeats):
            for side in sides:
                cpu = [_loop_cpu(stream["path"], bundle, side) for stream in (long, short)]
                per_s[side].append((cpu[0] - cpu[1]) / span * 1000.0)
        ratios = [f / r for f, r in zip(per_s["input"], per_s["read"], strict=True)]
        floor = statistics.median(ratios)
        table.rows.append({
            "stream": name,
            **{f"{side}_ms": round(statistics.median(v), 2) for side, v in per_s.items()},
            "floor_ratio": round(floor, 3), "floor_range": f"{min(ratios):.2f}-{max(ratios):.2f}",
            "goal": f"<= {goal:g}x", "goal_reachable": "yes" if floor <= goal else "no",
        })
        detail.append({"stream": name, "long": long, "short": short, "ms_per_video_s": per_s, "ratios": ratios})
    table.extra.update(streams=detail, bundle=str(bundle), model_source=source, repeats=repeats)
    table.notes += [
        "ms = CPU milliseconds (all threads) per second of video, marginal as in pipeline_overhead but timed "
        "inside each child around its loop; read = the same bare read() loop with OpenCV's defaults; each "
        "later column adds one step to the one before",
        "grab = grab() every frame on one decoder thread; retrieve = + retrieve() of the frames the sampler "
        "takes; prepare = + prepare_frame of those; input = + model_input (what the model is fed)",
        "floor_ratio = input / read, median and range of the repeats: what the daemon costs at least before "
        "its model runs; goal_reachable = whether issue 14's goal for this stream kind lies above that floor",
        f"model: {source}",
    ]
    return table


if __name__ == "__main__":
    import cv2  # noqa: F401  (imported before the clock starts: the loops' own imports are then free)

    import edge.bundle
    import edge.preprocess
    import edge.stages.sampler  # noqa: F401

    path, bundle_dir, side = sys.argv[1:4]
    started = time.process_time()
    if side == "read":
        bare_read(path, None)
    else:
        steps_loop(path, bundle_dir, side)
    print(time.process_time() - started)
