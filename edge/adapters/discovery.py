"""Home Assistant MQTT discovery: each camera appears as an anomaly binary_sensor and a score sensor.

Opt-in (``mqtt.homeassistant = true``). The configs are retained under ``mqtt.discovery_prefix`` so
Home Assistant finds them whenever it (re)starts, without YAML. Field names follow Home Assistant's
MQTT platform schemas (components/mqtt/schemas.py, binary_sensor.py, sensor.py); tests/test_discovery.py
checks every key against them.

Availability needs a template: the device status topic carries ``online``, ``offline`` (the Will)
or ``stopped`` (a clean stop), and Home Assistant ignores any payload that is neither
payload_available nor payload_not_available, so ``stopped`` alone would leave the entities shown as
available. The camera's own retained status is a second availability topic (mode ``all``), so a
camera whose stream is down is shown unavailable rather than "no anomaly".
"""

from __future__ import annotations

import json
import re

from edge import __version__
from edge.adapters.mqtt import Topics

ONLINE, OFFLINE = "online", "offline"
ANOMALY_ON, ANOMALY_OFF = "ON", "OFF"
# Home Assistant's discovery topic matcher allows only these characters in node_id and object_id.
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def _slug(text: str) -> str:
    return _UNSAFE.sub("_", text)


def _entity_slug(text: str) -> str:
    """Entity ids are lower-case snake case in Home Assistant."""
    return _slug(text).replace("-", "_").lower()


def discovery_configs(
    topics: Topics,
    device_id: str,
    site: str,
    camera_ids: list[str],
    discovery_prefix: str,
    model: str,
) -> list[tuple[str, bytes]]:
    """(config topic, retained JSON payload) for every entity of this device."""
    node = _slug(f"rclstm-edge-{device_id}")
    device = {
        "identifiers": [f"rclstm-edge-{device_id}"],
        "name": f"{site} {device_id}",
        "manufacturer": "rclstm-edge",
        "model": model,
        "sw_version": __version__,
    }
    origin = {"name": "rclstm-edge", "sw_version": __version__}
    out: list[tuple[str, bytes]] = []
    for camera in camera_ids:
        availability = [
            {
                "topic": topics.status,
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
                "value_template": f"{{{{ '{ONLINE}' if value == '{ONLINE}' else '{OFFLINE}' }}}}",
            },
            {
                "topic": topics.camera(camera, "status"),
                "payload_available": ONLINE,
                "payload_not_available": OFFLINE,
                "value_template": f"{{{{ '{ONLINE}' if value_json.online else '{OFFLINE}' }}}}",
            },
        ]
        common = {"availability": availability, "availability_mode": "all", "device": device, "origin": origin,
                  "qos": 1}
        entity = _entity_slug(f"rclstm_{device_id}_{camera}")
        anomaly = {
            "name": f"{camera} anomaly",
            "unique_id": f"rclstm-edge_{device_id}_{camera}_anomaly",
            "default_entity_id": f"binary_sensor.{entity}_anomaly",
            "object_id": f"{entity}_anomaly",  # the same id for Home Assistant before 2025.10
            "device_class": "safety",
            "state_topic": topics.camera(camera, "anomaly"),
            "payload_on": ANOMALY_ON,
            "payload_off": ANOMALY_OFF,
            # The latest event's fields (label, scores, event_id) become the entity's attributes.
            "json_attributes_topic": topics.camera(camera, "events"),
            **common,
        }
        score = {
            "name": f"{camera} anomaly score",
            "unique_id": f"rclstm-edge_{device_id}_{camera}_score",
            "default_entity_id": f"sensor.{entity}_score",
            "object_id": f"{entity}_score",
            "state_topic": topics.stats,
            # A null score renders as "None", which Home Assistant's MQTT sensor reads as unknown.
            "value_template": f"{{{{ value_json.cameras['{camera}'].score }}}}",
            "state_class": "measurement",
            "suggested_display_precision": 2,
            "icon": "mdi:cctv",
            **common,
        }
        obj = _slug(camera)
        out.append((f"{discovery_prefix}/binary_sensor/{node}/{obj}_anomaly/config", _compact(anomaly)))
        out.append((f"{discovery_prefix}/sensor/{node}/{obj}_score/config", _compact(score)))
    return out


def _compact(data: dict[str, object]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()
