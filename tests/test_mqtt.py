"""The MQTT publisher against real mosquitto brokers: ordering, PUBACK-driven deletes, outages, auth, TLS."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest

from edge.adapters.mqtt import Publisher, check_broker
from edge.adapters.outbox import Outbox
from edge.core.config import ConfigError, MqttConfig
from edge.core.messages import UTC_PATTERN
from testbed.broker import PASSWORD, USERNAME, Broker


def wait_until(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def make_publisher(broker: Broker, tmp_path: Path, **mqtt: object) -> tuple[Publisher, Outbox]:
    cfg = MqttConfig(url=broker.url, **mqtt)  # type: ignore[arg-type]
    outbox = Outbox(tmp_path / "outbox.db")
    publisher = Publisher(cfg, "dev1", outbox, password=mqtt.get("password"))  # type: ignore[arg-type]
    return publisher, outbox


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_outbox_drains_in_order_and_rows_go_only_after_puback(mosquitto_broker, subscriber, tmp_path, protocol):
    sub = subscriber(mosquitto_broker, "rclstm/dev1/#")
    publisher, outbox = make_publisher(mosquitto_broker, tmp_path, protocol=protocol)
    topic = publisher.topics.camera("cam0", "events")
    for i in range(50):
        outbox.put(topic, f'{{"n": {i}}}'.encode())
    publisher.set_state(publisher.topics.camera("cam0", "status"), b'{"online": true}')
    publisher.start()
    try:
        assert sub.wait_for(lambda msgs: sum(m.topic == topic for m in msgs) >= 50), "not all events arrived"
        assert [m.payload.decode() for m in sub.on(topic)] == [f'{{"n": {i}}}' for i in range(50)]
        assert wait_until(lambda: outbox.depth() == 0)
        assert publisher.acked == 50 and publisher.rejected == 0
        assert [m.payload for m in sub.on("rclstm/dev1/status")] == [b"online"]
        assert sub.on("rclstm/dev1/cam0/status")[0].payload == b'{"online": true}'
        assert publisher.flush(5)
    finally:
        publisher.stop()
    assert sub.wait_for(lambda msgs: any(m.payload == b"stopped" for m in msgs), 10)


def test_broker_outage_keeps_rows_and_delivers_them_after_restart(broker_factory, subscriber, tmp_path):
    broker = broker_factory(persistence=True)
    sub = subscriber(broker, "rclstm/dev1/+/events", persistent_id="outage-sub")
    publisher, outbox = make_publisher(broker, tmp_path)
    topic = publisher.topics.camera("cam0", "events")
    publisher.start()
    try:
        assert wait_until(publisher.connected.is_set)
        for i in range(5):
            outbox.put(topic, b"before %d" % i)
            publisher.notify()
        assert sub.wait_for(lambda msgs: len(msgs) >= 5)
        broker.stop()
        assert wait_until(lambda: not publisher.connected.is_set())
        for i in range(10):
            outbox.put(topic, b"during %d" % i)
            publisher.notify()
        time.sleep(1.5)  # the publisher is retrying against a closed port meanwhile
        assert outbox.depth() == 10, "rows must stay until a broker acknowledges them"
        broker.start()
        assert wait_until(lambda: outbox.depth() == 0, 90), "outbox was not drained after the broker came back"
        assert sub.wait_for(lambda msgs: len(msgs) >= 15, 30)
    finally:
        publisher.stop()
    payloads = [m.payload.decode() for m in sub.messages]
    assert payloads[:5] == [f"before {i}" for i in range(5)]
    assert [p for p in payloads if p.startswith("during")] == [f"during {i}" for i in range(10)]


def test_state_is_republished_after_a_broker_restart_without_persistence(mosquitto_broker, subscriber, tmp_path):
    publisher, _ = make_publisher(mosquitto_broker, tmp_path)
    publisher.set_state(publisher.topics.camera("cam0", "status"), b'{"online": false}')
    publisher.start()
    try:
        assert wait_until(publisher.connected.is_set)
        mosquitto_broker.stop()  # retained messages are gone with persistence off
        mosquitto_broker.start()
        assert wait_until(lambda: publisher.connects >= 2, 30)
        late = subscriber(mosquitto_broker, "rclstm/dev1/#")  # sees only what is retained now
        assert late.wait_for(lambda msgs: {m.topic for m in msgs} >= {"rclstm/dev1/status", "rclstm/dev1/cam0/status"})
        assert late.on("rclstm/dev1/status")[0].payload == b"online"
    finally:
        publisher.stop()


def test_restarted_publisher_resends_unacknowledged_rows(mosquitto_broker, subscriber, tmp_path):
    outbox = Outbox(tmp_path / "outbox.db")
    for i in range(3):
        outbox.put("rclstm/dev1/cam0/events", b"left over %d" % i)
    outbox.close()  # as if the previous process died before the broker acknowledged them
    sub = subscriber(mosquitto_broker, "rclstm/dev1/cam0/events")
    publisher, outbox = make_publisher(mosquitto_broker, tmp_path)
    publisher.start()
    try:
        assert sub.wait_for(lambda msgs: len(msgs) >= 3)
        assert wait_until(lambda: outbox.depth() == 0)
    finally:
        publisher.stop()
    assert [m.payload for m in sub.messages] == [b"left over 0", b"left over 1", b"left over 2"]


def test_refused_credentials_log_one_clear_line_and_back_off(mosquitto_auth_broker, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="edge.adapters.mqtt")
    publisher, outbox = make_publisher(mosquitto_auth_broker, tmp_path, username=USERNAME, password="wrong-pw-123")
    outbox.put("rclstm/dev1/cam0/events", b"x")
    publisher.start()
    try:
        time.sleep(4)
        assert not publisher.connected.is_set()
    finally:
        publisher.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "refused the connection" in errors[0] and "mqtt.username" in errors[0]
    assert "wrong-pw-123" not in caplog.text
    attempts = mosquitto_auth_broker.log_path.read_text().count("New connection from")
    assert 1 <= attempts <= 4, f"{attempts} connection attempts in 4 s: the back-off is not working"
    assert outbox.depth() == 1


def test_tls_with_password_connects_and_publishes(mosquitto_tls_broker, subscriber, tmp_path):
    sub = subscriber(mosquitto_tls_broker, "rclstm/dev1/#")
    tls = mosquitto_tls_broker.tls
    publisher, outbox = make_publisher(
        mosquitto_tls_broker, tmp_path, username=USERNAME, password=PASSWORD, ca_file=tls.ca_file,
        cert_file=tls.client_cert, key_file=tls.client_key,
    )
    outbox.put(publisher.topics.camera("cam0", "events"), b"over tls")
    publisher.start()
    try:
        assert sub.wait_for(lambda msgs: any(m.payload == b"over tls" for m in msgs))
        assert wait_until(lambda: outbox.depth() == 0)
    finally:
        publisher.stop()


def test_wrong_ca_is_reported_once(mosquitto_tls_broker, tmp_path, caplog):
    publisher, _ = make_publisher(mosquitto_tls_broker, tmp_path, username=USERNAME, password=PASSWORD,
                                  ca_file=mosquitto_tls_broker.tls.other_ca)
    publisher.start()
    try:
        time.sleep(2.5)
        assert not publisher.connected.is_set()
    finally:
        publisher.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "not trusted" in errors[0] and "mqtt.ca_file" in errors[0], errors


def test_tls_to_a_plain_port_and_plain_to_a_tls_port(mosquitto_broker, mosquitto_tls_broker, tmp_path):
    tls_to_plain = MqttConfig(url=f"mqtts://127.0.0.1:{mosquitto_broker.port}")
    ok, reason = check_broker(tls_to_plain, "dev1", None, timeout=5)
    assert not ok and "TLS handshake" in reason and "mqtt://" in reason
    plain_to_tls = MqttConfig(url=f"mqtt://127.0.0.1:{mosquitto_tls_broker.port}", username=USERNAME)
    ok, reason = check_broker(plain_to_tls, "dev1", PASSWORD, timeout=5)
    assert not ok and "closed the connection" in reason


def test_check_broker_passes_and_fails_with_reasons(mosquitto_auth_broker, subscriber, tmp_path):
    sub = subscriber(mosquitto_auth_broker, "rclstm/dev1/check")
    cfg = MqttConfig(url=mosquitto_auth_broker.url, username=USERNAME)
    ok, reason = check_broker(cfg, "dev1", PASSWORD)
    assert ok, reason
    assert sub.wait_for(lambda msgs: len(msgs) == 1)
    message = json.loads(sub.messages[0].payload)
    assert message["device_id"] == "dev1"
    assert re.fullmatch(UTC_PATTERN, message["check_at"]), message  # ISO 8601 like every other time
    ok, reason = check_broker(cfg, "dev1", "nope")
    assert not ok and "refused" in reason
    ok, reason = check_broker(MqttConfig(url=f"mqtt://127.0.0.1:{mosquitto_auth_broker.port + 1}"), "dev1", None)
    assert not ok


def test_missing_tls_file_is_a_config_error(tmp_path):
    cfg = MqttConfig(url="mqtts://localhost:8883", ca_file=tmp_path / "nope.crt")
    with pytest.raises(ConfigError) as err:
        Publisher(cfg, "dev1", None, None)
    expected = f"mqtt.ca_file = '{tmp_path / 'nope.crt'}': no such file; fix the path or remove the key"
    assert err.value.problems == [expected]
