"""The durable sink: every event into the on-disk outbox, then to the broker; retained state and stats.

Events are stored before they are logged or sent, so an event that appears in the log is on disk;
when SQLite fails the event still goes out through paho's memory (counted by the outbox), up to
``MAX_UNSAVED_BYTES``; past that it waits in a bounded queue of its own (``MAX_HELD_BYTES``) and is
stored, oldest first, as soon as the outbox takes writes again, so a long outage of both disk and
broker costs bounded memory and loses only what overflows that queue, counted and said. Opening
the sink closes the incidents a previous run died with (SIGKILL, power cut, watchdog) before any
new one starts, and sets the retained state a consumer sees first: no open incident, and the
opt-in Home Assistant discovery.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from edge.adapters.discovery import ANOMALY_OFF, ANOMALY_ON, discovery_configs
from edge.adapters.mqtt import Publisher, Topics
from edge.adapters.outbox import OUTBOX_NAME, IncidentMark, Outbox, usable_state_dir
from edge.core.config import Config, resolve_password
from edge.core.messages import CameraStatus, Event, Stats, message_json
from edge.core.values import Output
from edge.sinks.base import Delivery, FeedbackHandler, Sink
from edge.stages.events import interrupted_end

log = logging.getLogger(__name__)

MAX_HELD_BYTES = 4_000_000  # messages neither the outbox nor paho's bounded memory could take


class MqttSink(Sink):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.topics = Topics(config.mqtt.prefix, config.device_id)
        self.description = f"{config.mqtt.host}:{config.mqtt.port}"
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.max_held_bytes = MAX_HELD_BYTES
        self._held: deque[tuple[str, bytes, IncidentMark | None]] = deque()
        self._held_bytes = 0
        self.lost = 0  # held messages dropped because the queue overflowed
        self._held_lock = threading.Lock()  # every camera thread queues messages
        self._feedback: FeedbackHandler | None = None

    def listen_feedback(self, handler: FeedbackHandler) -> None:
        self._feedback = handler

    def open(self, camera_ids: list[str], model: str) -> None:
        cfg, box = self.config.mqtt, self.config.outbox
        self.outbox = Outbox(usable_state_dir(self.config.state_dir) / OUTBOX_NAME, box.max_rows, box.max_bytes,
                             box.open_retry_s)
        self.publisher = Publisher(cfg, self.config.device_id, self.outbox, resolve_password(cfg))
        if self._feedback is not None:
            self.publisher.subscribe(self.topics.feedback, self._feedback)
        self.publisher.start()
        self._close_interrupted(self.outbox, self.publisher)
        if cfg.homeassistant:
            for topic, payload in discovery_configs(self.topics, self.config.device_id, self.config.site, camera_ids,
                                                    cfg.discovery_prefix, model):
                self.publisher.set_state(topic, payload)
        for camera_id in camera_ids:
            self.publisher.set_state(self.topics.camera(camera_id, "anomaly"), ANOMALY_OFF.encode())

    def deliver(self, camera_id: str, output: Output) -> None:
        event = output.event
        self._queue(self.topics.camera(camera_id, "events"), message_json(event), _mark(event))
        if event.type != "update":
            self._anomaly(camera_id, ANOMALY_ON if event.type == "start" else ANOMALY_OFF)
        if self.config.mqtt.snapshots and event.type == "end" and output.peak_frame is not None:
            self._snapshot(camera_id, output)

    def camera_state(self, camera_id: str, status: CameraStatus) -> None:
        self._publisher().set_state(self.topics.camera(camera_id, "status"), message_json(status))

    def stats(self, stats: Stats) -> None:
        self._publisher().publish_json(self.topics.stats, stats.model_dump(mode="json"))

    def delivery(self) -> Delivery:
        self._store_held()  # no new event may come for a while; the stats tick stores what waits
        box, publisher = self._outbox(), self._publisher()
        return Delivery(outbox_depth=box.depth(), outbox_bytes=box.size(), dropped=box.dropped,
                        outbox_errors=box.errors, acked=publisher.acked, rejected=publisher.rejected,
                        outbox_oldest_s=box.oldest_age_s(), recovered=box.recovered, quarantined=box.quarantined)

    def close(self, flush_timeout_s: float) -> None:
        box, publisher = self._outbox(), self._publisher()
        self._store_held()
        if not publisher.flush(flush_timeout_s):
            kept, lost = box.depth(), publisher.unsaved() + len(self._held) + self.lost
            if lost:
                log.error("outbox not empty after %.0f s: %d message(s) kept on disk for the next start; %d message(s) "
                          "that could not be written to disk (see the outbox errors above) were not acknowledged "
                          "by the broker and are lost", flush_timeout_s, kept, lost)
            else:
                log.warning("outbox not empty after %.0f s: %d message(s) kept for the next start",
                            flush_timeout_s, kept)
        publisher.stop()
        box.close()

    def _outbox(self) -> Outbox:
        assert self.outbox is not None, "the sink is not open"
        return self.outbox

    def _publisher(self) -> Publisher:
        assert self.publisher is not None, "the sink is not open"
        return self.publisher

    def _queue(self, topic: str, payload: bytes, mark: IncidentMark | None = None) -> None:
        """Through the outbox; straight to paho if SQLite failed (counted there); held if paho's share of
        memory is full too."""
        with self._held_lock:
            self._store_held_locked()
            if self._held or self._outbox().put(topic, payload, incident=mark) is None:
                if self._held or not self._publisher().publish_direct(topic, payload):
                    self._hold(topic, payload, mark)
                return
        self._publisher().notify()

    def held(self) -> int:
        """Messages waiting in memory for the outbox to take writes again."""
        with self._held_lock:
            return len(self._held)

    def _hold(self, topic: str, payload: bytes, mark: IncidentMark | None) -> None:
        if not self._held:
            log.error("outbox and MQTT memory both full: holding messages in memory (up to %d bytes) until the "
                      "outbox can store them", self.max_held_bytes)
        self._held.append((topic, payload, mark))
        self._held_bytes += len(payload)
        while self._held_bytes > self.max_held_bytes and len(self._held) > 1:
            _, dropped, _ = self._held.popleft()
            self._held_bytes -= len(dropped)
            self.lost += 1
            log.log(logging.ERROR if self.lost == 1 else logging.DEBUG,
                    "outbox: memory queue full; the oldest held message is lost (%d lost so far)", self.lost)

    def _store_held(self) -> None:
        with self._held_lock:
            self._store_held_locked()

    def _store_held_locked(self) -> None:
        """Held messages into the outbox, oldest first, while it takes them."""
        stored = 0
        while self._held:
            topic, payload, mark = self._held[0]
            if self._outbox().put(topic, payload, incident=mark) is None:
                break
            self._held.popleft()
            self._held_bytes -= len(payload)
            stored += 1
        if stored:
            log.warning("outbox: stored %d held message(s); %d still held", stored, len(self._held))
            self._publisher().notify()

    def _anomaly(self, camera_id: str, state: str) -> None:
        self._publisher().set_state(self.topics.camera(camera_id, "anomaly"), state.encode())

    def _close_interrupted(self, outbox: Outbox, publisher: Publisher) -> None:
        for event_id, topic, payload in outbox.left_open():
            try:
                last = Event.model_validate_json(payload)
            except ValueError as exc:
                log.error("incident %s left open by the previous run cannot be closed: its last message does not "
                          "parse (%s); dropped", event_id, str(exc).splitlines()[0])
                outbox.forget_open(event_id)
                continue
            log.warning("incident %s on camera %s was left open by the previous run; closing it as interrupted",
                        event_id, last.camera_id)
            end = interrupted_end(last)
            self._queue(topic, message_json(end), _mark(end))  # the topic it was sent on, whatever the config now
            self._record(end)
            self._anomaly(last.camera_id, ANOMALY_OFF)  # also for a camera no longer configured

    def _snapshot(self, camera_id: str, output: Output) -> None:
        from edge.adapters.snapshot import encode_jpeg

        limit = self.config.mqtt.snapshot_max_bytes
        assert output.peak_frame is not None
        jpeg = encode_jpeg(output.peak_frame, limit)
        if jpeg is None:
            log.warning("snapshot of camera %s does not fit in %d bytes; not sent", camera_id, limit)
            return
        # Queued after the incident's end, so it arrives after it; the topic names the incident.
        self._queue(f"{self.topics.camera(camera_id, 'snapshot')}/{output.transition.incident_id}", jpeg)


def _mark(event: Event) -> IncidentMark:
    return IncidentMark(str(event.event_id), open=event.type != "end")
