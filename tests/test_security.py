"""Security with real parts: secrets never leave the process, a broker ACL pins a device to its prefix,
no shell command is ever built. See docs/security.md for the threat model these tests back.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge.synthetic import write_stream
from testbed.broker import PASSWORD, Broker, Subscriber, free_port
from testbed.daemon import EAGER, launch, received, write_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fight_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "fight.mp4"
    write_stream(path, [("calm", 2.0), ("fight", 3.0), ("calm", 2.0)], fps=25)
    return path


def test_a_debug_run_with_password_and_client_key_leaks_neither(mosquitto_tls_broker, subscriber, fight_video,
                                                                 tmp_path):
    broker = mosquitto_tls_broker
    assert broker.tls is not None
    sub = subscriber(broker, "#")
    key_body = [line for line in broker.tls.client_key.read_text().splitlines() if "-----" not in line]
    config = write_config(
        tmp_path, [{"id": "cam0", "source": str(fight_video), "realtime": False}], broker, decision=EAGER,
        log_level="debug",
        mqtt={"username": broker.username, "password": PASSWORD, "cert_file": str(broker.tls.client_cert),
              "key_file": str(broker.tls.client_key)},
    )
    daemon = launch(config, tmp_path)
    code = daemon.proc.wait(120)
    assert code == 0, daemon.stderr
    assert sub.wait_for(lambda msgs: any(m.payload == b"stopped" for m in msgs), 10)
    assert received(sub), "the run did not log in and publish"
    everything = daemon.stdout + daemon.stderr + "".join(m.topic + m.payload.decode(errors="replace")
                                                         for m in sub.messages)
    assert "level=debug" in daemon.stderr, "the run was not at debug level"
    assert PASSWORD not in everything
    assert key_body and not any(line in everything for line in key_body), "the client key leaked"
    assert "PRIVATE KEY" not in everything


class AclBroker(Broker):
    """mosquitto with one user per device and an ACL pinning each user to ``rclstm/<username>/#``."""

    def _write_config(self) -> Path:
        conf = super()._write_config()
        passwd = self.workdir / "passwd"
        for user in ("devB", "backend"):
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, f"{user}-pw"], check=True,
                           capture_output=True)
        acl = self.workdir / "acl"
        acl.write_text("user backend\ntopic read rclstm/#\ntopic write rclstm/+/feedback\n\n"
                       "pattern write rclstm/%u/#\npattern read rclstm/%u/feedback\n")
        conf.write_text(conf.read_text() + f"acl_file {acl}\n")
        return conf


@pytest.fixture
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = AclBroker(workdir=tmp_path_factory.mktemp("mosquitto-acl"), port=free_port(), username="devA",
                       password="devA-pw")
    broker.start()
    yield broker
    broker.stop()


def publish_as(broker: Broker, user: str, topic: str, payload: bytes = b'{"forged": true}') -> object:
    """Publish QoS 1 as ``user`` over MQTT 5 and return the PUBACK reason code."""
    done = threading.Event()
    outcome: dict[str, object] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{user}", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, f"{user}-pw")
    client.on_publish = lambda c, u, mid, reason, props: (outcome.update(reason=reason), done.set())
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1)
        assert done.wait(10), "no PUBACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return outcome["reason"]


def test_acl_pins_each_device_to_its_own_prefix(acl_broker, fight_video, tmp_path):
    # The backend logs in as its own read-only user.
    backend_broker = Broker(acl_broker.workdir, acl_broker.port, username="backend", password="backend-pw")
    backend = Subscriber(backend_broker, "rclstm/#")
    try:
        forged = publish_as(acl_broker, "devA", "rclstm/devB/cam0/events")
        own = publish_as(acl_broker, "devA", "rclstm/devA/cam0/probe")
        config = write_config(tmp_path, [{"id": "cam0", "source": str(fight_video), "realtime": False}],
                              acl_broker, decision=EAGER, device_id="devA",
                              mqtt={"username": "devA", "password": "devA-pw"})
        daemon = launch(config, tmp_path)
        assert daemon.proc.wait(120) == 0, daemon.stderr
        assert backend.wait_for(lambda msgs: any(m.payload == b"stopped" for m in msgs), 10)
        topics = {m.topic for m in backend.messages}
    finally:
        backend.close()
    print(f"forged publish: {forged}; own prefix: {own}; backend saw {sorted(topics)}")
    assert getattr(forged, "is_failure", False) and "authori" in str(forged).lower()
    assert not getattr(own, "is_failure", True)
    assert not any(t.startswith("rclstm/devB/") for t in topics), "device A wrote into device B's prefix"
    assert received(backend) and all(t.startswith("rclstm/devA/") for t in topics)
    assert "rejected=" not in daemon.stderr and "refused the message" not in daemon.stderr
    assert "as rclstm-edge-devA" in acl_broker.log_path.read_text(), "client id not scoped to the device"


def test_config_readable_by_others_is_warned_about_by_run(fight_video, tmp_path):
    config = write_config(tmp_path, [{"id": "cam0", "source": str(fight_video), "realtime": False}],
                          mqtt={"url": f"mqtt://127.0.0.1:{free_port()}", "password": "hunter2-abc"})
    config.chmod(0o644)
    daemon = launch(config, tmp_path)
    code = daemon.proc.wait(120)
    warnings = [line for line in daemon.stderr.splitlines() if "readable by other users" in line]
    assert code == 0 and len(warnings) == 1 and "level=warning" in warnings[0] and "chmod 600" in warnings[0]
    assert "hunter2-abc" not in daemon.stderr + daemon.stdout


SHELL = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|commands\.getoutput|pty\.spawn")


def test_edge_never_runs_a_shell() -> None:
    """Config values (camera URLs, paths, ids) must never reach a shell; argv lists only."""
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in sorted((ROOT / "edge").rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if SHELL.search(line)]
    assert offenders == []

