"""The daemon: supervision of one worker thread per camera, everything they produce going to one sink.

The main thread only supervises: it tells systemd READY once models are loaded and the cameras
started, pings the watchdog only while every camera thread shows progress (so a pipeline stuck in a
read or in the interpreter gets the service restarted), reports stats every interval, and on
SIGTERM/SIGINT or when every finite source has ended, stops the cameras (which closes their
incidents) and closes the sink for a bounded time. Where events go is the sink's business alone.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from edge import __version__
from edge.adapters import systemd
from edge.adapters.clips import ClipStore
from edge.adapters.outbox import usable_state_dir
from edge.adapters.runtime import BundleModel
from edge.adapters.sources import set_v4l2_select_timeout
from edge.app.worker import CameraWorker
from edge.core.config import Config
from edge.core.messages import Stats
from edge.sinks.base import Sink

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0


class Daemon:
    """Runs until stopped (or until every finite source ended); ``run()`` returns the exit code."""

    def __init__(self, config: Config, sink: Sink) -> None:
        self.config = config
        self.sink = sink
        self.stop_requested = threading.Event()
        self.started_at = time.monotonic()
        self.workers: list[CameraWorker] = []
        self.clips: ClipStore | None = None

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> int:
        # One interpreter per camera; loading (and the sha256 check) happens before anything starts.
        models = [BundleModel.configured(self.config.model) for _ in self.config.cameras]
        manifest, runtime = models[0].manifest, models[0].runtime
        log.info("model %s %s loaded (%s %s, sha256 %s...)", manifest.name, manifest.version, runtime.name,
                 runtime.version, manifest.sha256[:12])
        if warning := manifest.chance_warning():
            log.warning(warning)
        model = f"{manifest.name} {manifest.version}"
        if self.config.clips.enabled:
            self.clips = ClipStore(usable_state_dir(self.config.state_dir), self.config.clips,
                                   self.config.device_id)
            self.sink.listen_feedback(self.clips.receive_feedback)
        self.sink.open([c.id for c in self.config.cameras], model)
        try:
            set_v4l2_select_timeout(self.config.cameras)
            pairs = zip(self.config.cameras, models, strict=True)
            self.workers = [CameraWorker(camera, self.config, m, self.sink, self.clips) for camera, m in pairs]
            for worker in self.workers:
                worker.start(self.stop_requested)
            systemd.ready()
            systemd.status(f"{len(self.workers)} camera(s), model {model}")
            log.info("running: device %s, %d camera(s), events to %s", self.config.device_id, len(self.workers),
                     self.sink.description)
            self._supervise()
        finally:
            self._shutdown()
        return 1 if any(w.error for w in self.workers) else 0

    def stats(self) -> Stats:
        cameras = {w.camera.id: w.stats() for w in self.workers}
        return Stats(
            device_id=self.config.device_id,
            version=__version__,
            uptime_s=round(time.monotonic() - self.started_at, 1),
            frames_in=sum(c.frames_in for c in cameras.values()),
            frames_sampled=sum(c.frames_sampled for c in cameras.values()),
            inference_ms=max((c.inference_ms for c in cameras.values()), default=0.0),
            events=self.sink.emitted(),
            cameras=cameras,
            **self.sink.delivery(),
            **(self.clips.stats() if self.clips is not None else {}),
        )

    def _supervise(self) -> None:
        interval = self.config.mqtt.stats_interval_s
        ping = min(1.0, systemd.watchdog_interval() or 1.0)
        next_stats = time.monotonic() + interval
        while not self.stop_requested.wait(ping):
            alive = [w for w in self.workers if w.alive()]
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
                self._report_stats()

    def _shutdown(self) -> None:
        systemd.stopping()
        self.stop_requested.set()
        for worker in self.workers:
            if worker.thread:
                worker.thread.join(JOIN_TIMEOUT_S)
                if worker.thread.is_alive():
                    log.warning("camera %s did not stop within %.0f s", worker.camera.id, JOIN_TIMEOUT_S)
        self._report_stats()
        self.sink.close(self.config.outbox.flush_timeout_s)
        log.info("stopped", extra={"fields": {"events": self.sink.emitted()}})

    def _report_stats(self) -> None:
        stats = self.stats()
        log.debug("stats", extra={"fields": {"frames_in": stats.frames_in, "events": stats.events}})
        systemd.status(f"{stats.frames_in} frames, {stats.events} events, outbox {stats.outbox_depth or 0}")
        self.sink.stats(stats)

