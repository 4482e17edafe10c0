"""Camera faults with real parts: a gst-rtsp-server camera killed or frozen, and a read that blocks for good.

The daemon runs as a subprocess with short camera timeouts, a real mosquitto receives the camera
status topic, and a datagram socket plays systemd's NOTIFY_SOCKET, so the watchdog policy is seen
from outside: pings continue while a camera is lost but handled (reads time out, reopen attempts
back off), and stop while a camera thread makes no progress at all.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from testbed.broker import Subscriber
from testbed.daemon import DEVICE, DaemonProcess, NotifySocket, camera, launch, write_config
from tests.fixtures_rtsp import RtspServer, wait_until

SHORT = {"open_timeout_s": 2.0, "read_timeout_s": 2.0, "stall_timeout_s": 3.0}
STATUS = f"rclstm/{DEVICE}/cam0/status"


def statuses(sub: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in sub.on(STATUS)]


def onlines(sub: Subscriber) -> list[bool]:
    """The camera's online/offline history, repeats of the same state folded."""
    history: list[bool] = []
    for state in statuses(sub):
        if not history or history[-1] != state["online"]:
            history.append(state["online"])
    return history


def last_stats(sub: Subscriber) -> dict[str, Any]:
    return json.loads(sub.on(f"rclstm/{DEVICE}/stats")[-1].payload)["cameras"]["cam0"]


def run_rtsp_daemon(rtsp: RtspServer, broker: Any, tmp_path: Path, notify: NotifySocket) -> DaemonProcess:
    config = write_config(tmp_path, [camera(rtsp.url, **SHORT)], broker)
    return launch(config, tmp_path, env=notify.env(watchdog_s=2.0))


def test_killed_camera_goes_offline_and_comes_back(rtsp_server, mosquitto_broker, subscriber, tmp_path):
    sub = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/#")
    notify = NotifySocket(tmp_path / "notify")
    daemon = run_rtsp_daemon(rtsp_server, mosquitto_broker, tmp_path, notify)
    try:
        assert sub.wait_for(lambda _: onlines(sub) == [True], 60), daemon.stderr
        assert sub.wait_for(lambda _: any(m.topic.endswith("/stats") for m in sub.messages)
                            and last_stats(sub)["frames_in"] > 0, 30), "no frames from the RTSP camera"
        killed = time.monotonic()
        rtsp_server.kill()
        assert sub.wait_for(lambda _: onlines(sub) == [True, False], 30), daemon.stderr
        went_offline = time.monotonic()
        reason = statuses(sub)[-1]["reason"]
        time.sleep(3)  # camera stays dead through at least one refused reopen
        restarted = time.monotonic()
        rtsp_server.start()
        # The back-off doubles from 1 s; a few refused opens later it is at most 8 s.
        assert sub.wait_for(lambda _: onlines(sub) == [True, False, True], 60), daemon.stderr
        back = time.monotonic()
        assert sub.wait_for(lambda _: last_stats(sub)["reconnects"] >= 2 and last_stats(sub)["online"], 10)
        stats = last_stats(sub)
    finally:
        code = daemon.stop()
        notify.close()
    print(f"offline {went_offline - killed:.1f} s after the kill ({reason}); online {back - restarted:.1f} s after "
          f"the restart; reconnects {stats['reconnects']}, frames_in {stats['frames_in']}")
    assert "read failed" in reason or "stalled" in reason
    assert code == 0, daemon.stderr
    assert sub.wait_for(lambda _: statuses(sub)[-1] == {**statuses(sub)[-1], "online": False, "reason": "stopped"}, 10)
    assert notify.count("READY=1") == 1 and notify.count("STOPPING=1") == 1
    assert "level=warning logger=edge.app.daemon" not in daemon.stderr, "the watchdog was starved by a handled outage"


def test_frozen_camera_is_detected_and_reopened(rtsp_server, mosquitto_broker, subscriber, tmp_path):
    """SIGSTOP keeps the TCP connection open with no data: the read timeout catches it, not a 30 s hang."""
    sub = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/#")
    notify = NotifySocket(tmp_path / "notify")
    daemon = run_rtsp_daemon(rtsp_server, mosquitto_broker, tmp_path, notify)
    try:
        assert sub.wait_for(lambda _: onlines(sub) == [True], 60), daemon.stderr
        rtsp_server.freeze()
        frozen = time.monotonic()
        assert sub.wait_for(lambda _: onlines(sub) == [True, False], 30), daemon.stderr
        detected = time.monotonic()
        reason = statuses(sub)[-1]["reason"]
        pings_offline = notify.count("WATCHDOG=1")
        time.sleep(4)  # reopen attempts against the frozen server time out meanwhile
        pings_while_frozen = notify.count("WATCHDOG=1") - pings_offline
        rtsp_server.thaw()
        thawed = time.monotonic()
        assert sub.wait_for(lambda _: onlines(sub) == [True, False, True], 60), daemon.stderr
        back = time.monotonic()
    finally:
        rtsp_server.thaw()
        code = daemon.stop()
        notify.close()
    print(f"frozen camera offline after {detected - frozen:.1f} s ({reason}), online {back - thawed:.1f} s after "
          f"SIGCONT; {pings_while_frozen} watchdog pings in 4 s of failed reopens")
    assert "read failed" in reason or "stalled" in reason
    assert pings_while_frozen > 0, "a camera that is lost but handled must not starve the watchdog"
    assert code == 0, daemon.stderr


def test_a_read_that_never_returns_starves_the_watchdog(tmp_path):
    """A FIFO with no writer blocks the capture's open() in the kernel, where no timeout reaches it.

    That is a pipeline that is really stuck: the supervisor must stop pinging so systemd restarts
    the service, and start again as soon as the camera thread moves.
    """
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    notify = NotifySocket(tmp_path / "notify")
    timeouts = {"open_timeout_s": 0.5, "read_timeout_s": 0.5, "stall_timeout_s": 0.5}  # stuck after 1 s
    config = write_config(tmp_path, [camera(str(fifo), kind="file", realtime=False, **timeouts)])
    daemon = launch(config, tmp_path, env=notify.env(watchdog_s=0.5))
    try:
        assert daemon.wait_log("not feeding the watchdog", 60), daemon.stderr
        starved_at = notify.count("WATCHDOG=1")
        time.sleep(2)
        pings_while_stuck = notify.count("WATCHDOG=1") - starved_at
        # A writer that opens and closes at once: the blocked open() returns, the capture fails, and
        # the source backs off (a heartbeat) before its next open blocks again.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        assert wait_until(lambda: notify.count("WATCHDOG=1") > starved_at, 30), daemon.stderr
        code = daemon.stop()
    finally:
        if daemon.proc.poll() is None:
            daemon.stop(signal.SIGKILL)
        notify.close()
    print(f"{starved_at} pings before the stall, {pings_while_stuck} in 2 s stuck, "
          f"{notify.count('WATCHDOG=1')} in total")
    assert notify.count("READY=1") == 1 and starved_at >= 1
    assert pings_while_stuck == 0, "a stuck camera thread must starve the watchdog"
    assert code == 0, daemon.stderr
    assert "camera thread(s) cam0 made no progress" in daemon.stderr
