"""docs/mqtt.md's bridge, run as written: device -> store broker -> central broker -> subscriber.

Two real mosquitto brokers: the store's (plain, persistent, with the documented bridge block) and a
central one (TLS and a password, as over the internet); the real daemon publishes to the store
broker and the reference subscriber reads from the central one with a persistent session.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from testbed.broker import PASSWORD, USERNAME, Broker, free_port
from tests.test_subscriber import DEVICE, SUBSCRIBER, Proc, run_daemon

ROOT = Path(__file__).resolve().parents[1]


def bridge_block(central: Broker) -> list[str]:
    """The mosquitto.conf lines docs/mqtt.md gives, with the test's host, CA and account."""
    text = (ROOT / "docs" / "mqtt.md").read_text()
    section = text.split("## A fleet: each store's broker bridges to a central one", 1)[1]
    block = re.search(r"```\n(connection .*?)```", section, re.S)
    assert block, "no bridge block in docs/mqtt.md"
    assert central.tls is not None
    swaps = {"address central.example.com:8883": f"address localhost:{central.port}",
             "bridge_cafile /etc/mosquitto/certs/central-ca.crt": f"bridge_cafile {central.tls.ca_file}",
             "remote_username store-12-bridge": f"remote_username {USERNAME}",
             "remote_password BRIDGE_PASSWORD": f"remote_password {PASSWORD}"}
    lines = block.group(1).strip().splitlines()
    assert set(swaps) <= set(lines), lines
    return [swaps.get(line, line) for line in lines]


def events_of(proc: Proc) -> list[dict]:
    return [e for e in map(json.loads, list(proc.out)) if "event_id" in e]


def test_events_cross_the_bridge_and_survive_restarts(broker_factory, tls_files, tmp_path_factory, tmp_path,
                                                      monkeypatch):
    # Persistent, so the subscriber's and the bridge's sessions outlive a restart of the central broker.
    central = broker_factory(username=USERNAME, password=PASSWORD, tls=tls_files, persistence=True)
    store = Broker(workdir=tmp_path_factory.mktemp("store"), port=free_port(), persistence=True,
                   extra=tuple(bridge_block(central)))
    store.start()
    try:
        from edge.synthetic import write_stream

        video = tmp_path / "fight.mp4"
        write_stream(video, [("calm", 6.0), ("fight", 5.0), ("calm", 6.0)], fps=25)
        monkeypatch.setenv("CENTRAL_PASSWORD", PASSWORD)
        sub = Proc([sys.executable, str(SUBSCRIBER), "--broker", central.url, "--ca", str(central.tls.ca_file),
                    "--username", USERNAME, "--password-env", "CENTRAL_PASSWORD", "--client-id", "backend-1",
                    "--topic", f"rclstm/{DEVICE}/+/events", "--json"])
        assert sub.wait_for(lambda: any(line.startswith("subscribed to") for line in sub.err)), sub.err

        # 1. Straight through: device -> store broker -> bridge -> central -> subscriber.
        run_daemon(store, video, tmp_path / "state")
        assert sub.wait_for(lambda: any(e["type"] == "end" for e in events_of(sub))), sub.err
        first = events_of(sub)
        assert first[0]["type"] == "start" and len({e["event_id"] for e in first}) == 1
        # The retained device state crossed too (the broker's Will travels the same way).
        device_state = {"state": "status", "topic": f"rclstm/{DEVICE}/status", "value": "stopped"}
        assert sub.wait_for(lambda: any(device_state.items() <= json.loads(line).items() for line in sub.out)), \
            sub.out

        # 2. The store broker (and with it the bridge) restarts: the next incident still arrives.
        store.stop()
        store.start()
        run_daemon(store, video, tmp_path / "state")
        assert sub.wait_for(lambda: sum(e["type"] == "end" for e in events_of(sub)) == 2, timeout=90), sub.err

        # 3. The central broker is down while the device publishes: the store broker queues, the
        #    bridge delivers when the central one is back.
        central.stop()
        run_daemon(store, video, tmp_path / "state")
        central.start()
        assert sub.wait_for(lambda: sum(e["type"] == "end" for e in events_of(sub)) == 3, timeout=120), sub.err
        assert sub.stop() == 0
        incidents = [e["event_id"] for e in events_of(sub) if e["type"] == "start"]
        assert len(set(incidents)) == 3
    finally:
        store.stop()

