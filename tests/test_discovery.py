"""Home Assistant discovery: payloads checked against Home Assistant's own schemas, received from a broker.

The allowed keys below are transcribed from home-assistant/core, homeassistant/components/mqtt/:
schemas.py (MQTT_AVAILABILITY_SCHEMA, MQTT_ENTITY_DEVICE_INFO_SCHEMA, MQTT_ORIGIN_INFO_SCHEMA,
MQTT_ENTITY_COMMON_SCHEMA), config.py (MQTT_BASE_SCHEMA, MQTT_RO_SCHEMA), binary_sensor.py and
sensor.py (the platform schemas), discovery.py (TOPIC_MATCHER). ``default_entity_id`` replaced
``object_id`` in Home Assistant 2025.10; versions before it drop ``default_entity_id`` silently, so
``object_id`` (the same id without the platform) is sent beside it, read up to 2026.3. Templates are
rendered with Jinja2 the way Home Assistant renders them (``value`` is the payload, ``value_json`` the
parsed JSON).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
import pytest

from edge.core.config import MqttConfig
from edge.synthetic import write_stream

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "dev.ha-1"  # a dot: not allowed in discovery topics, so it must be replaced there
PREFIX = "homeassistant"

TOPIC_MATCHER = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config")
AVAILABILITY = {"availability_topic", "availability_template", "payload_available", "payload_not_available",
                "availability_mode", "availability"}
AVAILABILITY_ITEM = {"topic", "payload_available", "payload_not_available", "value_template"}
COMMON = AVAILABILITY | {"device", "origin", "enabled_by_default", "entity_category", "entity_picture", "icon",
                         "json_attributes_topic", "json_attributes_template", "default_entity_id", "object_id",
                         "unique_id"}
RO = {"qos", "encoding", "state_topic", "value_template"}
PLATFORM_KEYS = {
    "binary_sensor": COMMON | RO | {"device_class", "expire_after", "force_update", "name", "off_delay",
                                    "payload_off", "payload_on"},
    "sensor": COMMON | RO | {"device_class", "expire_after", "force_update", "last_reset_value_template", "name",
                             "options", "suggested_display_precision", "state_class", "unit_of_measurement"},
}
DEVICE_KEYS = {"identifiers", "connections", "manufacturer", "model", "model_id", "name", "hw_version",
               "serial_number", "sw_version", "via_device", "suggested_area", "configuration_url"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
BINARY_SENSOR_DEVICE_CLASSES = {"safety", "problem", "motion", "occupancy", "tamper", "sound", "vibration"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}


def render(template: str, payload: bytes) -> str:
    """What Home Assistant's async_render_with_possible_json_value gives for this payload."""
    text = payload.decode()
    try:
        value_json = json.loads(text)
    except ValueError:
        value_json = None
    return jinja2.Environment().from_string(template).render(value=text, value_json=value_json)


def run_daemon(broker_url: str, video: Path, tmp_path: Path, homeassistant: bool) -> None:
    config = tmp_path / "config.toml"
    config.write_text("\n".join([
        f'device_id = "{DEVICE}"', 'site = "store 7"', f'state_dir = "{tmp_path / "state"}"',
        "[model]", 'bundle = "demo"',
        "[mqtt]", f'url = "{broker_url}"', "stats_interval_s = 1.0", f"homeassistant = {str(homeassistant).lower()}",
        "[[cameras]]", 'id = "door"', f'source = "{video}"', 'kind = "file"', "realtime = false",
    ]) + "\n")
    done = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "stream.mp4"
    write_stream(path, [("calm", 6.0), ("fight", 5.0), ("calm", 6.0)], fps=25)
    return path


def test_discovery_is_off_by_default() -> None:
    assert MqttConfig().homeassistant is False and MqttConfig().discovery_prefix == PREFIX


def test_daemon_announces_cameras_to_home_assistant(mosquitto_broker, subscriber, video, tmp_path):
    live = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/door/anomaly")
    run_daemon(mosquitto_broker.url, video, tmp_path, homeassistant=True)
    # After the run, a new client (as Home Assistant starting later would) gets everything retained.
    later = subscriber(mosquitto_broker, "#")
    assert later.wait_for(lambda msgs: sum(m.topic.startswith(PREFIX) for m in msgs) == 2
                          and any(m.topic.endswith("/door/status") for m in msgs), 20)
    retained = {m.topic: m.payload for m in later.messages if m.retain}
    status_schema = json.loads((ROOT / "docs" / "schemas" / "camera-status.json").read_text())
    jsonschema.validate(json.loads(retained[f"rclstm/{DEVICE}/door/status"]), status_schema)
    configs = {topic: json.loads(payload) for topic, payload in retained.items() if topic.startswith(PREFIX + "/")}
    assert len(configs) == 2

    by_platform: dict[str, dict[str, Any]] = {}
    for topic, config in configs.items():
        match = TOPIC_MATCHER.fullmatch(topic.removeprefix(PREFIX + "/"))
        assert match, f"{topic} does not match Home Assistant's discovery topic pattern"
        platform = match["component"]
        by_platform[platform] = config
        unknown = set(config) - PLATFORM_KEYS[platform]
        assert not unknown, f"{platform}: keys Home Assistant does not know: {unknown}"
        assert config["object_id"] == config["default_entity_id"].split(".", 1)[1]  # same id, every version
        assert config["default_entity_id"].startswith(f"{platform}.")
        assert re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", config["default_entity_id"])
        assert set(config["device"]) <= DEVICE_KEYS and config["device"]["identifiers"]
        assert set(config["origin"]) <= ORIGIN_KEYS and config["origin"]["name"] == "rclstm-edge"
        assert not ("availability_topic" in config and "availability" in config), "exclusive in Home Assistant"
        assert config["availability_mode"] in ("all", "any", "latest")
        for item in config["availability"]:
            assert "topic" in item and set(item) <= AVAILABILITY_ITEM
            assert item["topic"] in retained, f"availability topic {item['topic']} has no retained state"
        assert config["state_topic"].startswith(f"rclstm/{DEVICE}/")
        assert config["device"] == next(iter(configs.values()))["device"], "both entities belong to one device"
    assert set(by_platform) == {"binary_sensor", "sensor"}
    anomaly, score = by_platform["binary_sensor"], by_platform["sensor"]
    assert anomaly["unique_id"] != score["unique_id"]
    assert anomaly["device_class"] in BINARY_SENSOR_DEVICE_CLASSES
    assert score["state_class"] in STATE_CLASSES and "unit_of_measurement" not in score

    # States: the anomaly went ON for the fight and back OFF, and is retained OFF now.
    assert live.wait_for(lambda msgs: [m.payload for m in msgs][-3:] == [b"OFF", b"ON", b"OFF"], 20), \
        [m.payload for m in live.messages]
    assert retained[anomaly["state_topic"]] == anomaly["payload_off"].encode()
    # Availability as Home Assistant evaluates it: the stopped daemon and the ended file are "offline".
    for item in anomaly["availability"]:
        assert render(item["value_template"], retained[item["topic"]]) == item["payload_not_available"]
        assert render(item["value_template"], b"online" if item["topic"].endswith(f"{DEVICE}/status")
                      else b'{"online":true,"reason":"streaming","since":"2026-01-01T00:00:00Z"}') == "online"
    assert render(anomaly["availability"][0]["value_template"], b"offline") == "offline"  # the Will
    assert score["state_topic"] == f"rclstm/{DEVICE}/stats"


def test_score_template_renders_the_stats_of_a_real_run(mosquitto_broker, subscriber, video, tmp_path):
    stats = subscriber(mosquitto_broker, f"rclstm/{DEVICE}/stats")
    configs = subscriber(mosquitto_broker, f"{PREFIX}/sensor/#")
    run_daemon(mosquitto_broker.url, video, tmp_path, homeassistant=True)
    assert configs.wait_for(lambda msgs: len(msgs) == 1, 20) and stats.wait_for(lambda msgs: len(msgs) >= 1, 20)
    template = json.loads(configs.messages[0].payload)["value_template"]
    stats_schema = json.loads((ROOT / "docs" / "schemas" / "stats.json").read_text())
    for message in stats.messages:
        jsonschema.validate(json.loads(message.payload), stats_schema)  # the real payload, the documented schema
        published = json.loads(message.payload)["cameras"]["door"]["score"]
        assert float(render(template, message.payload)) == pytest.approx(published)
        assert 0.0 <= published <= 1.0
    # Before any window is classified the score is null; Home Assistant reads "None" as unknown.
    first = json.loads(stats.messages[0].payload)
    first["cameras"]["door"]["score"] = None
    assert render(template, json.dumps(first).encode()) == "None"


def test_without_the_option_nothing_is_announced(mosquitto_broker, subscriber, video, tmp_path):
    run_daemon(mosquitto_broker.url, video, tmp_path, homeassistant=False)
    later = subscriber(mosquitto_broker, "#")
    # Retained messages arrive in no particular order: wait for both the device's and the camera's.
    retained = {f"rclstm/{DEVICE}/status", f"rclstm/{DEVICE}/door/anomaly"}
    assert later.wait_for(lambda msgs: retained <= {m.topic for m in msgs}, 20)
    assert not [m.topic for m in later.messages if m.topic.startswith(PREFIX)]
    assert any(m.topic == f"rclstm/{DEVICE}/door/anomaly" and m.payload == b"OFF" for m in later.messages)
