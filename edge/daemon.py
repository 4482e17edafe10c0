"""The daemon: one thread per camera (source -> pipeline), events to the outbox and MQTT (or stdout).

The main thread only supervises: it tells systemd READY once models are loaded and sources started,
pings the watchdog only while every camera thread shows progress (so a pipeline stuck in a read or
in the interpreter gets the service restarted), publishes stats, and on SIGTERM/SIGINT or when every
finite source has ended, closes incidents, flushes the outbox for a bounded time and says ``stopped``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from edge import __version__, systemd
from edge.config import CameraConfig, Config, resolve_password
from edge.decision import Transition
from edge.discovery import ANOMALY_OFF, ANOMALY_ON, discovery_configs
from edge.events import Event, event_json, interrupted_end
from edge.messages import CameraStats, CameraStatus, Stats, message_json
from edge.models import resolve_bundle
from edge.mqtt import Publisher, Topics
from edge.outbox import IncidentMark, Outbox
from edge.pipeline import CameraPipeline
from edge.runtime import BundleModel
from edge.sources import CameraSource

log = logging.getLogger(__name__)

OUTBOX_NAME = "outbox.db"
JOIN_TIMEOUT_S = 10.0


def usable_state_dir(wanted: Path) -> Path:
    """The configured state directory, or a per-user one when it cannot be written (a dev machine)."""
    for candidate in (wanted, _user_state_dir()):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            if candidate != wanted:
                log.warning("state_dir %s is not writable; using %s", wanted, candidate)
            return candidate
    raise OSError(f"state_dir {wanted} is not writable and neither is {_user_state_dir()}; set state_dir")


def _user_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "rclstm-edge"


@dataclass
class CameraWorker:
    """One camera's thread: its source, its pipeline and its own interpreter (they are not thread-safe)."""

    camera: CameraConfig
    source: CameraSource
    pipeline: CameraPipeline
    thread: threading.Thread | None = None
    started: float = field(default_factory=time.monotonic)
    error: str | None = None

    def progress(self) -> float:
        """Monotonic time of the last sign of life from the capture/processing loop."""
        return max(self.started, self.source.heartbeat)

    def stale_after(self) -> float:
        """How long the loop may legitimately block: an open or a read waiting for its timeout."""
        c = self.camera
        return 2 * max(c.open_timeout_s, c.read_timeout_s, c.stall_timeout_s)


class Daemon:
    """Runs until stopped (or until every finite source ended); ``run()`` returns the exit code."""

    def __init__(self, config: Config, *, print_events: bool | None = None, out: TextIO | None = None) -> None:
        self.config = config
        self.print_events = config.mqtt.url is None if print_events is None else print_events
        self.out = out or sys.stdout
        self.topics = Topics(config.mqtt.prefix, config.device_id)
        self.stop_requested = threading.Event()
        self.started_at = time.monotonic()
        self.events_emitted = 0
        self.snapshot_errors = 0
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self.workers: list[CameraWorker] = []
        self._out_lock = threading.Lock()

    # -- setup -----------------------------------------------------------------------------------

    def _load_models(self) -> list[BundleModel]:
        """One interpreter per camera; loading (and the sha256 check) happens before anything starts."""
        spec = self.config.model
        bundle_dir = resolve_bundle(spec.bundle)
        return [BundleModel(bundle_dir, spec.num_threads, spec.runtime) for _ in self.config.cameras]

    def _start_mqtt(self) -> None:
        cfg = self.config.mqtt
        if cfg.url is None:
            return
        state_dir = usable_state_dir(self.config.state_dir)
        box = self.config.outbox
        self.outbox = Outbox(state_dir / OUTBOX_NAME, box.max_rows, box.max_bytes)
        self.publisher = Publisher(cfg, self.config.device_id, self.outbox, resolve_password(cfg))
        self.publisher.start()

    def _announce(self, model: str) -> None:
        """Retained state set before the first connect: no open incident, and the opt-in HA discovery."""
        if self.publisher is None:
            return
        cfg = self.config.mqtt
        if cfg.homeassistant:
            cameras = [c.id for c in self.config.cameras]
            for topic, payload in discovery_configs(self.topics, self.config.device_id, self.config.site, cameras,
                                                    cfg.discovery_prefix, model):
                self.publisher.set_state(topic, payload)
        for camera in self.config.cameras:
            self.publisher.set_state(self.topics.camera(camera.id, "anomaly"), ANOMALY_OFF.encode())

    def _make_worker(self, camera: CameraConfig, model: BundleModel) -> CameraWorker:
        decision = self.config.decision_for(camera)
        pipeline = CameraPipeline(camera, decision, model, self.config.device_id, self.config.site,
                                  emit=lambda event, transition: self._emit(camera, event, transition))
        source = CameraSource(camera)
        worker = CameraWorker(camera, source, pipeline)
        source.on_state = lambda online, reason: self._camera_state(worker, online, reason)
        return worker

    # -- run ---------------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> int:
        models = self._load_models()
        manifest = models[0].manifest
        log.info("model %s %s loaded (%s %s, sha256 %s...)", manifest.name, manifest.version,
                 models[0].runtime.name, models[0].runtime.version, manifest.sha256[:12])
        self._start_mqtt()
        self._close_interrupted()
        self._announce(f"{manifest.name} {manifest.version}")
        try:
            pairs = zip(self.config.cameras, models, strict=True)
            self.workers = [self._make_worker(cam, model) for cam, model in pairs]
            for worker in self.workers:
                worker.thread = threading.Thread(target=self._camera_loop, args=(worker,),
                                                 name=f"camera-{worker.camera.id}", daemon=True)
                worker.thread.start()
            systemd.ready()
            systemd.status(f"{len(self.workers)} camera(s), model {manifest.name} {manifest.version}")
            sink = f"{self.config.mqtt.host}:{self.config.mqtt.port}" if self.config.mqtt.url else "stdout"
            log.info("running: device %s, %d camera(s), events to %s", self.config.device_id, len(self.workers), sink)
            self._supervise()
        finally:
            self._shutdown()
        failed = [w for w in self.workers if w.error]
        return 1 if failed else 0

    def _camera_loop(self, worker: CameraWorker) -> None:
        try:
            for frame in worker.source.frames(self.stop_requested):
                worker.pipeline.process(frame)
        except Exception as exc:  # a bug in one camera's chain must not take the others down silently
            worker.error = f"{type(exc).__name__}: {exc}"
            log.exception("camera %s stopped: %s", worker.camera.id, worker.error)
        finally:
            worker.pipeline.finish()

    def _supervise(self) -> None:
        interval = self.config.mqtt.stats_interval_s
        ping = min(1.0, systemd.watchdog_interval() or 1.0)
        next_stats = time.monotonic() + interval
        while not self.stop_requested.wait(ping):
            alive = [w for w in self.workers if w.thread and w.thread.is_alive()]
            if not alive:
                log.info("every source has ended")
                return
            now = time.monotonic()
            stuck = [w.camera.id for w in alive if now - w.progress() > w.stale_after()]
            if stuck:
                log.warning("camera thread(s) %s made no progress; not feeding the watchdog", ",".join(stuck))
            else:
                systemd.watchdog()
            if now >= next_stats:
                next_stats = now + interval
                self._publish_stats()

    def _shutdown(self) -> None:
        systemd.stopping()
        self.stop_requested.set()
        for worker in self.workers:
            if worker.thread:
                worker.thread.join(JOIN_TIMEOUT_S)
                if worker.thread.is_alive():
                    log.warning("camera %s did not stop within %.0f s", worker.camera.id, JOIN_TIMEOUT_S)
        if self.publisher is not None and self.outbox is not None:
            self._publish_stats()
            timeout = self.config.outbox.flush_timeout_s
            if not self.publisher.flush(timeout):
                log.warning("outbox not empty after %.0f s: %d message(s) kept for the next start",
                            timeout, self.outbox.depth())
            self.publisher.stop()
            self.outbox.close()
        log.info("stopped", extra={"fields": {"events": self.events_emitted}})

    # -- callbacks from camera threads ------------------------------------------------------------

    def _emit(self, camera: CameraConfig, event: Event, transition: Transition) -> None:
        self._deliver(self.topics.camera(camera.id, "events"), event)
        if self.publisher is not None:
            if event.type != "update":
                state = ANOMALY_ON if event.type == "start" else ANOMALY_OFF
                self.publisher.set_state(self.topics.camera(camera.id, "anomaly"), state.encode())
            if self.config.mqtt.snapshots and event.type == "end" and transition.peak_frame is not None:
                self._snapshot(camera, transition)

    def _deliver(self, topic: str, event: Event) -> None:
        payload = event_json(event)
        self.events_emitted += 1
        # Stored before it is logged or sent: an event that appears in the log is on disk.
        self._queue(topic, payload, IncidentMark(str(event.event_id), open=event.type != "end"))
        fields = {"camera": event.camera_id, "type": event.type, "event_id": event.event_id, "seq": event.seq,
                  "label": event.label, "score": event.score, "peak": event.peak_score}
        if event.end_reason is not None:
            fields["end_reason"] = event.end_reason
        log.info("event", extra={"fields": fields})
        if self.print_events:
            with self._out_lock:
                self.out.write(payload.decode() + "\n")
                self.out.flush()

    def _queue(self, topic: str, payload: bytes, mark: IncidentMark | None = None) -> None:
        """Through the outbox when there is a broker; straight to paho if SQLite failed (counted there)."""
        if self.publisher is None or self.outbox is None:
            return
        if self.outbox.put(topic, payload, incident=mark) is None:
            self.publisher.publish_direct(topic, payload)
        else:
            self.publisher.notify()

    def _close_interrupted(self) -> None:
        """End the incidents a previous run died with (SIGKILL, power cut, watchdog), before any new one starts."""
        if self.outbox is None:
            return
        for event_id, topic, payload in self.outbox.left_open():
            try:
                last = Event.model_validate_json(payload)
            except ValueError as exc:
                log.error("incident %s left open by the previous run cannot be closed: its last message does not "
                          "parse (%s); dropped", event_id, str(exc).splitlines()[0])
                self.outbox.forget_open(event_id)
                continue
            log.warning("incident %s on camera %s was left open by the previous run; closing it as interrupted",
                        event_id, last.camera_id)
            self._deliver(topic, interrupted_end(last))
            if self.publisher is not None:  # also for a camera no longer configured: its ON must not stay
                self.publisher.set_state(self.topics.camera(last.camera_id, "anomaly"), ANOMALY_OFF.encode())

    def _snapshot(self, camera: CameraConfig, transition: Transition) -> None:
        from edge.snapshot import encode_jpeg

        assert self.publisher is not None
        jpeg = encode_jpeg(transition.peak_frame, self.config.mqtt.snapshot_max_bytes)
        if jpeg is None:
            self.snapshot_errors += 1
            log.warning("snapshot of camera %s does not fit in %d bytes; not sent", camera.id,
                        self.config.mqtt.snapshot_max_bytes)
            return
        # Queued after the incident's end, so it arrives after it; the topic names the incident.
        self._queue(f"{self.topics.camera(camera.id, 'snapshot')}/{transition.incident_id}", jpeg)

    def _camera_state(self, worker: CameraWorker, online: bool, reason: str) -> None:
        camera_id = worker.camera.id
        if not online:
            worker.pipeline.gap(reason)
        if self.publisher is not None:
            status = CameraStatus(online=online, reason=reason, since=datetime.now(timezone.utc))
            self.publisher.set_state(self.topics.camera(camera_id, "status"), message_json(status))

    # -- stats ---------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        cameras = {w.camera.id: CameraStats(**w.pipeline.stats(), **_source_counters(w.source)) for w in self.workers}
        delivery: dict[str, Any] = {}
        if self.outbox is not None and self.publisher is not None:
            delivery = dict(outbox_depth=self.outbox.depth(), outbox_bytes=self.outbox.bytes(),
                            dropped=self.outbox.dropped, outbox_errors=self.outbox.errors,
                            acked=self.publisher.acked, rejected=self.publisher.rejected)
        return Stats(
            device_id=self.config.device_id,
            version=__version__,
            uptime_s=round(time.monotonic() - self.started_at, 1),
            frames_in=sum(c.frames_in for c in cameras.values()),
            frames_sampled=sum(c.frames_sampled for c in cameras.values()),
            inference_ms=max((c.inference_ms for c in cameras.values()), default=0.0),
            events=self.events_emitted,
            cameras=cameras,
            **delivery,
        )

    def _publish_stats(self) -> None:
        stats = self.stats()
        log.debug("stats", extra={"fields": {"frames_in": stats.frames_in, "events": stats.events}})
        systemd.status(f"{stats.frames_in} frames, {stats.events} events, outbox {stats.outbox_depth or 0}")
        if self.publisher is not None:
            self.publisher.publish_json(self.topics.stats, stats.model_dump(mode="json"))


def _source_counters(source: CameraSource) -> dict[str, Any]:
    return {
        "online": source.online,
        "reconnects": source.reconnects,
        "stalls": source.stalls,
        "source_bad_frames": source.bad_frames,
        "stale_frames": source.stale_frames,
    }
