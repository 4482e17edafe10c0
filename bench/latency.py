"""Alert latency: from the first frame of a fight segment (stream time) to the `start` event at a subscriber.

A normal stream with fight segments spliced in plays in real time into the daemon, which publishes
to a real mosquitto on a free port; a real paho subscriber notes when each `start` arrives. A file
source stamps frame ``ts`` at ``file start + ts`` and paces delivery from its first frame, so the
segment's first frame is "shown" at the camera's "online" log time plus the segment's start; the
latency is the arrival time minus that. Everything runs on one clock (this machine's).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bench.common import Settings, Table, log_times, run_daemon
from edge.adapters.mqtt import Topics
from edge.bundle import read_manifest
from edge.core.config import ClassifierConfig, DecisionConfig
from testbed.broker import Broker, Subscriber, free_port
from testbed.daemon import DEVICE, camera


def segments(settings: Settings, normal: str, anomaly: str) -> list[tuple[str, float]]:
    """Fight segments far enough apart for each incident to end and its cooldown to pass."""
    gap = DecisionConfig().cooldown_s + 10.0
    return settings.pick([(normal, 6.0), (anomaly, 6.0)],
                         [(normal, 15.0), (anomaly, 8.0), (normal, gap), (anomaly, 8.0), (normal, gap),
                          (anomaly, 8.0), (normal, 5.0)])


def run(settings: Settings, stream: dict, bundle: Path, source: str, anomaly: str) -> Table:
    manifest = read_manifest(bundle)
    # What the daemon decides with: the bundle's recommended settings and hop over the built-in defaults
    # (the benchmark's config sets none), as Config.decision_for and classifier_for give them.
    decision = DecisionConfig(**(manifest.decision.settings() if manifest.decision else {}))
    hop = ClassifierConfig(**(manifest.decision.classifier_settings() if manifest.decision else {})).hop
    hop_s = hop * manifest.sampling.frame_interval_s
    goal = manifest.sampling.window_s + hop_s
    table = Table("latency", "Alert latency: fight segment's first frame to `start` at a subscriber",
                  ["segment", "segment_start_s", "detected", "latency_s", "goal_s", "goal_met"])
    work = settings.work / "latency"
    work.mkdir(parents=True, exist_ok=True)
    broker = Broker(workdir=work / "broker", port=free_port())
    broker.workdir.mkdir(exist_ok=True)
    broker.start()
    arrivals: list[tuple[float, dict]] = []
    topics = Topics("rclstm", DEVICE)
    sub = Subscriber(broker, f"{topics.base}/#")
    sub.client.message_callback_add(
        topics.camera("+", "events"), lambda c, u, m: arrivals.append((time.time(), json.loads(m.payload))))
    try:
        done = run_daemon(work, [camera(stream["path"])], bundle, broker=broker)
        time.sleep(0.5)  # the last messages in flight
    finally:
        sub.close()
        broker.stop()
    online = log_times(done.stderr, "camera cam0 online")[0].timestamp()
    starts = [t for t, event in arrivals if event["type"] == "start"]
    # A start belongs to a fight from the fight's first frame until the last window holding any of its
    # frames (one window span and one hop after its last frame); every other start is a false alarm.
    fights = [(online + start, online + end + goal) for label, start, end in stream["spans"] if label == anomaly]
    for i, (shown, last) in enumerate(fights):
        hits = [t for t in starts if shown <= t <= last]
        latency = hits[0] - shown if hits else None
        table.rows.append({"segment": i + 1, "segment_start_s": round(shown - online, 2),
                           "detected": "yes" if hits else "no",
                           "latency_s": None if latency is None else round(latency, 3), "goal_s": round(goal, 3),
                           "goal_met": "yes" if latency is not None and latency <= goal else "no"})
    false = [round(t - online, 2) for t in starts if not any(shown <= t <= last for shown, last in fights)]
    table.extra.update(stream=stream, bundle=str(bundle), model_source=source, decision=decision.model_dump(),
                       false_starts=len(false), false_start_times_s=false, events_received=len(arrivals))
    table.notes += [
        f"goal = window span {manifest.sampling.window_s:.2f} s + one hop ({hop} sampled frames = "
        f"{hop_s:.2f} s); decision: start after {decision.start_windows} windows over {decision.threshold} (the "
        "bundle's recommendation, else the defaults), so a detection also waits for "
        f"{decision.start_windows - 1} more hop(s)",
        f"model: {source}; stream {stream['seconds']:g} s {stream['codec']} from {stream['source']}, real-time; "
        f"real mosquitto on 127.0.0.1; {len(false)} false start(s) outside the fights"
        + (f" (at {', '.join(f'{t:g}' for t in false)} s of stream time)" if false else ""),
    ]
    return table
