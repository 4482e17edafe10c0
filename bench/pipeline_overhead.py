"""The daemon against decoding: CPU seconds per second of video, per stream kind, as a ratio to a bare ``read()``.

Decoding is the floor any camera pipeline pays, and it depends on what the camera sends. So each
kind of stream a camera sends (H.264 at 640x360 and 1280x720, MPEG-4 part 2 files at 640x360 and 320x240, MJPEG over
HTTP) is measured against its own baseline in the same run: a bare ``cv2.VideoCapture(source)``
``read()`` loop with OpenCV's defaults (what any program that looks at every frame pays), and the
same loop with one decoder thread (the daemon's default up to 720p, so the ratio cannot come from
threads alone). Every side runs as a child process measured by the kernel: CPU of all its threads
(wait4) and its peak RSS (VmHWM). Start-up (imports, model load, opening) says nothing about a
camera running for days, so each figure is marginal: a long and a short stream of the same kind,
the difference in CPU over the difference in length. Each repeat gives its own ratio; the table
shows their median and range. The daemon reads files ``--fast`` (realtime = false); the MJPEG camera
is a real HTTP server sending the recording's JPEGs at 25 fps, so both sides take real time there.
"""

from __future__ import annotations

import statistics
import sys
import threading
from pathlib import Path
from typing import Any

from bench.common import Settings, Table, child_usage, run_daemon
from bench.streams import Segment, build_stream
from testbed.daemon import DaemonProcess, camera
from testbed.mjpeg import MjpegCamera, read_jpegs

# (row name, codec asked for, size, goal: daemon CPU at most this times the bare read() loop's, passes: how
# many times the long file stream plays its segments). Start-up (imports, model load) costs the daemon
# 0.7-1.0 s of CPU and moves by up to 0.3 s from run to run (six runs on the 320x240 file, 2026-12-01),
# so each long stream is made long enough that the daemon spends 5 s or more of CPU on it: over 112 s
# of 320x240 MPEG-4 (9.5 ms a video-second) that swing alone moved one repeat's ratio by up to 0.3.
# The MJPEG camera plays in real time and keeps one pass.
KINDS: tuple[tuple[str, str, tuple[int, int], float, int], ...] = (
    ("H.264 640x360", "h264", (640, 360), 1.0, 3),
    ("H.264 1280x720", "h264", (1280, 720), 1.0, 3),
    ("MPEG-4 640x360", "mpeg4", (640, 360), 1.1, 8),
    ("MPEG-4 320x240", "mpeg4", (320, 240), 1.1, 16),
    ("MJPEG 640x360 over HTTP", "mjpeg", (640, 360), 0.5, 1),
)
LIVE_TIMEOUT_S = 600.0


def kind_passes(settings: Settings, passes: int) -> int:
    """The passes a stream kind's long stream plays: the kind's own in a full run, one in a quick one (its
    figures are noise-sized whatever the length: the quick run checks that everything runs)."""
    return settings.pick(1, passes)


def bare_read(source: str, threads: int | None) -> int:
    """The baseline: read every frame, and nothing else (``threads`` None: OpenCV's default)."""
    import cv2

    params = [] if threads is None else [cv2.CAP_PROP_N_THREADS, threads]
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    return frames


def segments(settings: Settings, normal: str, anomaly: str, passes: int = 1) -> tuple[list[Segment], list[Segment]]:
    """The long stream (normal footage with two fight segments, ``passes`` times) and the short one that
    subtracts start-up."""
    long = settings.pick([(normal, 4.0), (anomaly, 2.0)],
                         [(normal, 12.0), (anomaly, 8.0), (normal, 12.0), (anomaly, 8.0)])
    return long * passes, settings.pick([(normal, 1.0)], [(normal, 8.0)])


def streams(settings: Settings, normal: str, anomaly: str, codec: str = "h264",
            size: tuple[int, int] = (640, 360), passes: int = 1) -> tuple[dict, dict]:
    """(long, short) streams of one kind, made of real clips (see ``bench.streams``)."""
    data = settings.data
    assert data is not None
    cache = settings.work / "streams"
    return tuple(build_stream(data, s, cache, size, codec)  # type: ignore[return-value]
                 for s in segments(settings, normal, anomaly, passes))


class _Source:
    """Where one stream is read from: its file, or an MJPEG camera serving it for the duration of a run."""

    def __init__(self, stream: dict) -> None:
        self.stream = stream
        self.live = stream["codec"] == "mjpeg"
        self._jpegs = read_jpegs(Path(stream["path"])) if self.live else None

    def measure(self, settings: Settings, bundle: Path, side: str) -> tuple[float, float]:
        """(CPU s, peak RSS MB) of one side over the whole stream: "daemon", "read" or "read-1t"."""
        server = MjpegCamera(self._jpegs, self.stream["fps"]) if self._jpegs is not None else None
        source = server.url if server is not None else self.stream["path"]
        try:
            if side == "daemon":
                run = run_daemon(settings.work / "overhead", [camera(source, realtime=False, read_timeout_s=2.0)],
                                 bundle, on_started=_stop_when_offline if self.live else None)
                return run.cpu_s, run.max_rss_mb
            threads = "1" if side == "read-1t" else "default"
            return child_usage([sys.executable, "-m", "bench.pipeline_overhead", source, threads])
        finally:
            if server is not None:
                server.close()


def _stop_when_offline(daemon: DaemonProcess) -> None:
    """A live camera never ends: once its stream has closed, stop the daemon as systemd would."""
    def watch() -> None:
        if daemon.wait_log("camera cam0 offline", LIVE_TIMEOUT_S) and daemon.proc.returncode is None:
            daemon.proc.terminate()

    threading.Thread(target=watch, daemon=True).start()


def run(settings: Settings, bundle: Path, source: str, labels: tuple[str, str]) -> Table:
    # The machine's own swings move one repeat's ratio by up to 0.8 on the cheapest stream (MPEG-4 320x240:
    # the daemon's 10.5-10.8 ms a video-second against a read() of 5.8-10.3 in three repeats, 2026-12-01),
    # so the median is of five.
    repeats = settings.pick(1, 5)
    table = Table("pipeline_overhead", "CPU per second of video: the daemon against a bare read() loop, per stream",
                  ["stream", "codec", "read_ms", "read_1t_ms", "daemon_ms", "ratio", "ratio_range", "ratio_vs_1t",
                   "goal", "goal_met", "read_rss_mb", "daemon_rss_mb"])
    detail: list[dict[str, Any]] = []
    for name, codec, size, goal, full_passes in KINDS:
        passes = kind_passes(settings, full_passes)
        long, short = (_Source(s) for s in streams(settings, *labels, codec, size, passes))
        span = long.stream["seconds"] - short.stream["seconds"]
        sides = ("daemon", "read") if long.live else ("daemon", "read", "read-1t")  # MJPEG decodes on one thread
        per_s: dict[str, list[float]] = {side: [] for side in sides}
        rss: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(repeats):
            for side in sides:
                (cpu_long, rss_long), (cpu_short, _) = (s.measure(settings, bundle, side) for s in (long, short))
                per_s[side].append((cpu_long - cpu_short) / span * 1000.0)
                rss[side].append(rss_long)
        ratios = [d / r for d, r in zip(per_s["daemon"], per_s["read"], strict=True)]
        ratio = statistics.median(ratios)
        row = {
            "stream": name, "codec": long.stream["codec"],
            "read_ms": round(statistics.median(per_s["read"]), 2),
            "read_1t_ms": round(statistics.median(per_s["read-1t"]), 2) if "read-1t" in per_s else None,
            "daemon_ms": round(statistics.median(per_s["daemon"]), 2),
            "ratio": round(ratio, 3), "ratio_range": f"{min(ratios):.2f}-{max(ratios):.2f}",
            "ratio_vs_1t": round(statistics.median(d / r for d, r in zip(per_s["daemon"], per_s["read-1t"],
                                                                            strict=True)), 3)
            if "read-1t" in per_s else None,
            "goal": f"<= {goal:g}x", "goal_met": "yes" if ratio <= goal else "no",
            "read_rss_mb": round(statistics.median(rss["read"]), 1),
            "daemon_rss_mb": round(statistics.median(rss["daemon"]), 1),
        }
        table.rows.append(row)
        detail.append({"stream": name, "long": long.stream, "short": short.stream, "passes": passes,
                       "ms_per_video_s": per_s, "peak_rss_mb": rss, "ratios": ratios})
    one_pass_s, short_s = (sum(t for _, t in s) for s in segments(settings, *labels))
    table.extra.update(streams=detail, bundle=str(bundle), model_source=source, repeats=repeats)
    table.notes += [
        "ms = CPU milliseconds (all threads) per second of video, marginal: (CPU of a long stream - CPU of a "
        f"{short_s:g} s one) / their difference, so start-up is not counted; the long stream plays {one_pass_s:g} s "
        "of clips "
        + ", ".join(f"{d['passes']}x for {d['stream']}" for d in detail)
        + " (the MJPEG camera plays in real time)",
        "read = cv2.VideoCapture(source).read() on every frame, OpenCV defaults; read_1t = the same with one "
        "decoder thread; ratio = daemon / read per repeat, median and range of "
        f"{repeats} repeat(s); rss = peak RSS of the long run, one camera",
        "streams: real clips of the data set resized and resampled to 25 fps (1280x720 is upscaled footage); "
        "the daemon reads files --fast; the MJPEG camera is an HTTP server sending the JPEGs at 25 fps",
        f"model: {source}",
    ]
    return table


if __name__ == "__main__":
    bare_read(sys.argv[1], None if sys.argv[2] == "default" else int(sys.argv[2]))
