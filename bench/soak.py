"""Soak: four 25 fps cameras in one daemon for N minutes against a real mosquitto; resources over time.

Not a test (it takes minutes and its numbers depend on the machine): run it before a release and
compare with the last results. Each camera is a generated calm/fight/calm video looped at its own
frame rate, so the daemon decodes, samples, classifies and publishes as it would on a store shelf.
Every few seconds it samples the daemon's RSS, threads, open file descriptors and CPU from /proc,
and a subscriber times the stats messages. The goal (issue 6): RSS growth under 5 MB after warm-up,
no thread or descriptor growth, stats on time.

    python -m bench.soak --minutes 10          # writes bench/results/soak.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.synthetic import write_stream
from testbed.broker import Broker, Subscriber, free_port
from testbed.daemon import DEVICE, camera, launch, received, write_config

ROOT = Path(__file__).resolve().parents[1]

CAMERAS = 4
FPS = 25
SEGMENTS = [("calm", 8.0), ("fight", 4.0), ("calm", 8.0)]
STATS_INTERVAL_S = 10.0
RSS_GOAL_MB = 5.0


def sample(pid: int) -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "threads": int(status["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "cpu_s": (int(ticks[11]) + int(ticks[12])) / os.sysconf("SC_CLK_TCK"),
    }


def soak(minutes: float, every_s: float, warmup_s: float, workdir: Path) -> dict[str, Any]:
    videos = []
    for i in range(CAMERAS):
        path = workdir / f"cam{i}.mp4"
        write_stream(path, SEGMENTS, fps=FPS, size=(320, 240), seed=i)
        videos.append(path)
    broker = Broker(workdir=workdir / "broker", port=free_port())
    broker.workdir.mkdir()
    broker.start()
    sub = Subscriber(broker, f"rclstm/{DEVICE}/#")
    stats_at: list[float] = []
    def on_stats(client: Any, userdata: Any, message: Any) -> None:
        stats_at.append(time.monotonic())
        sub._on_message(client, userdata, message)  # still recorded with every other message

    sub.client.message_callback_add(f"rclstm/{DEVICE}/stats", on_stats)
    config = write_config(workdir, [camera(str(v), f"cam{i}", loop=True) for i, v in enumerate(videos)], broker,
                          mqtt={"stats_interval_s": STATS_INTERVAL_S})
    daemon = launch(config, workdir)
    samples: list[dict[str, float]] = []
    start = time.monotonic()
    try:
        if not daemon.wait_log("running:", 60):
            raise SystemExit(f"daemon did not start:\n{daemon.stderr[-3000:]}")
        while (elapsed := time.monotonic() - start) < minutes * 60:
            if daemon.proc.poll() is not None:
                raise SystemExit(f"daemon exited with {daemon.proc.returncode}:\n{daemon.stderr[-3000:]}")
            samples.append({"t_s": round(elapsed, 1), **sample(daemon.proc.pid)})
            time.sleep(every_s)
    finally:
        code = daemon.stop()
        sub.close()
        broker.stop()
    last_stats = json.loads(sub.on(f"rclstm/{DEVICE}/stats")[-1].payload)
    after = [s for s in samples if s["t_s"] >= warmup_s] or samples[-1:]
    head, tail = after[: max(1, len(after) // 10)], after[-max(1, len(after) // 10):]
    gaps = [b - a for a, b in itertools.pairwise(stats_at)]
    cpu = (samples[-1]["cpu_s"] - samples[0]["cpu_s"]) / max(1e-9, samples[-1]["t_s"] - samples[0]["t_s"])
    return {
        "minutes": minutes, "cameras": CAMERAS, "fps": FPS, "warmup_s": warmup_s, "exit_code": code,
        "rss_mb_after_warmup": round(statistics.median(s["rss_mb"] for s in head), 1),
        "rss_mb_end": round(statistics.median(s["rss_mb"] for s in tail), 1),
        "rss_growth_mb": round(statistics.median(s["rss_mb"] for s in tail)
                               - statistics.median(s["rss_mb"] for s in head), 2),
        "threads": sorted({int(s["threads"]) for s in after}),
        "fds": sorted({int(s["fds"]) for s in after}),
        "cpu_cores": round(cpu, 2),
        "stats_messages": len(stats_at),
        "stats_gap_s": {"median": round(statistics.median(gaps), 2), "max": round(max(gaps), 2)} if gaps else None,
        "frames_in": last_stats["frames_in"],
        "frames_per_s": round(last_stats["frames_in"] / max(1.0, last_stats["uptime_s"]), 1),
        "inference_ms": last_stats["inference_ms"],
        "events_received": len(received(sub)),
        "samples": samples,
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        ("cameras x fps", f"{result['cameras']} x {result['fps']}"),
        ("minutes (warm-up s)", f"{result['minutes']:g} ({result['warmup_s']:g})"),
        ("RSS after warm-up / end", f"{result['rss_mb_after_warmup']} / {result['rss_mb_end']} MB"),
        ("RSS growth (goal < 5 MB)", f"{result['rss_growth_mb']} MB"
                                      f" {'ok' if result['rss_growth_mb'] < RSS_GOAL_MB else 'OVER'}"),
        ("threads after warm-up", ", ".join(map(str, result["threads"]))),
        ("open fds after warm-up", ", ".join(map(str, result["fds"]))),
        ("CPU (cores)", str(result["cpu_cores"])),
        ("frames in (per s)", f"{result['frames_in']} ({result['frames_per_s']})"),
        ("inference ms (mean, slowest camera)", str(result["inference_ms"])),
        ("stats messages, gap median / max", f"{result['stats_messages']}, {result['stats_gap_s']}"),
        ("events received", str(result["events_received"])),
        ("daemon exit code", str(result["exit_code"])),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between resource samples")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds ignored before measuring growth")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rclstm-soak-") as tmp:
        result = soak(args.minutes, args.every, min(args.warmup, args.minutes * 30), Path(tmp))
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0 if result["rss_growth_mb"] < RSS_GOAL_MB and len(result["threads"]) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
