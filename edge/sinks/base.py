"""One interface for everything a camera produces: its events, its status and the device's stats.

The daemon is handed one sink at start (stdout lines, the durable outbox + MQTT, or both for the
demo; replay writes its events file through one) and never asks which it has, so a new destination
is a new subclass, not a branch in the daemon. Camera threads call ``emit`` and ``camera_state``
concurrently; subclasses make their own delivery thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypedDict

from edge.core.messages import CameraStatus, Event, Stats
from edge.core.values import Output

log = logging.getLogger(__name__)


class Delivery(TypedDict, total=False):
    """The delivery counters of a sink that has any (the outbox + MQTT), for the stats message."""

    outbox_depth: int
    outbox_bytes: int
    dropped: int
    outbox_errors: int
    acked: int
    rejected: int
    outbox_oldest_s: float
    recovered: int
    quarantined: int


# Takes one received verdict payload (raw bytes: checking it is the receiver's job).
FeedbackHandler = Callable[[bytes], None]


class Sink:
    """Where a camera's outputs go; every hook but ``deliver`` does nothing unless a sink needs it."""

    description = "nowhere"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._emitted = 0

    def listen_feedback(self, handler: FeedbackHandler) -> None:
        """Before ``open``: hand the backend's verdicts to ``handler`` (only a broker can deliver any)."""

    def open(self, camera_ids: list[str], model: str) -> None:
        """Before the first camera starts (``model`` is the bundle's name and version)."""

    def emit(self, camera_id: str, output: Output) -> None:
        """Deliver an event, then log and count it: an event that appears in the log has been delivered."""
        self.deliver(camera_id, output)
        self._record(output.event)

    def deliver(self, camera_id: str, output: Output) -> None:
        raise NotImplementedError

    def camera_state(self, camera_id: str, status: CameraStatus) -> None:
        """A camera's source came online or went offline."""

    def stats(self, stats: Stats) -> None:
        """The periodic stats (and the last ones at shutdown)."""

    def delivery(self) -> Delivery:
        return {}

    def emitted(self) -> int:
        """Events emitted through this sink since it was opened."""
        with self._lock:
            return self._emitted

    def close(self, flush_timeout_s: float) -> None:
        """After every camera stopped: deliver what is pending within the timeout, then let go."""

    def _record(self, event: Event) -> None:
        with self._lock:
            self._emitted += 1
        fields = {"camera": event.camera_id, "type": event.type, "event_id": event.event_id, "seq": event.seq,
                  "label": event.label, "score": event.score, "peak": event.peak_score}
        if event.end_reason is not None:
            fields["end_reason"] = event.end_reason
        log.info("event", extra={"fields": fields})


class FanOut(Sink):
    """Several sinks as one (the demo prints its events and may publish them too)."""

    def __init__(self, *sinks: Sink) -> None:
        super().__init__()
        self.sinks = sinks
        self.description = ", ".join(s.description for s in sinks)

    def open(self, camera_ids: list[str], model: str) -> None:
        for sink in self.sinks:
            sink.open(camera_ids, model)

    def deliver(self, camera_id: str, output: Output) -> None:
        for sink in self.sinks:
            sink.deliver(camera_id, output)

    def listen_feedback(self, handler: FeedbackHandler) -> None:
        for sink in self.sinks:
            sink.listen_feedback(handler)

    def camera_state(self, camera_id: str, status: CameraStatus) -> None:
        for sink in self.sinks:
            sink.camera_state(camera_id, status)

    def stats(self, stats: Stats) -> None:
        for sink in self.sinks:
            sink.stats(stats)

    def delivery(self) -> Delivery:
        merged: Delivery = {}
        for sink in self.sinks:
            merged.update(sink.delivery())
        return merged

    def emitted(self) -> int:
        """Its own events and those a member emitted by itself (the outbox closing interrupted incidents)."""
        return super().emitted() + sum(sink.emitted() for sink in self.sinks)

    def close(self, flush_timeout_s: float) -> None:
        for sink in self.sinks:
            sink.close(flush_timeout_s)
