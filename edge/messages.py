"""The structured messages besides events: a camera's retained status and the device's stats.

They are pydantic models so the JSON Schemas a backend validates against (``rclstm-edge schema
camera-status`` / ``stats``, committed under docs/schemas/) are generated from the very classes the
daemon fills in, and cannot drift from what is published. Status is a state (retained, one per
camera); stats are telemetry (not retained, superseded by the next one).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge.events import JSON_SCHEMA_DIALECT, UtcDatetime, event_schema


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraStatus(_Message):
    """Retained on {prefix}/{device}/{camera}/status: whether frames are arriving, and since when."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="rclstm-edge camera status")

    online: bool
    reason: str = Field(description="Why: 'streaming', 'end of file', 'stopped', or the source's error line.")
    since: UtcDatetime = Field(description="Wall time (UTC) of the change.")


class CameraStats(_Message):
    """One camera's counters since the daemon started."""

    frames_in: int = Field(ge=0, description="Frames delivered by the source.")
    frames_sampled: int = Field(ge=0, description="Frames kept by the sampler and given to the model.")
    bad_frames: int = Field(ge=0, description="Sampled frames the preprocessing refused.")
    windows: int = Field(ge=0, description="Windows classified.")
    scene_cuts: int = Field(ge=0, description="Sampled frames that changed nearly the whole picture (lights, "
                            "day/night switch, camera moved); each counted as no movement.")
    inference_ms: float = Field(ge=0, description="Mean model time per window, every encode counted.")
    inference_ms_last: float = Field(ge=0)
    score: float | None = Field(ge=0, le=1, description="Anomaly score of the newest window (null before the first).")
    incidents: int = Field(ge=0)
    incident_open: bool
    events: int = Field(ge=0, description="Event messages emitted (start, update and end).")
    online: bool
    reconnects: int = Field(ge=0)
    stalls: int = Field(ge=0)
    source_bad_frames: int = Field(ge=0, description="Frames the source delivered but could not decode.")
    stale_frames: int = Field(ge=0)


class Stats(_Message):
    """On {prefix}/{device}/stats, not retained: every mqtt.stats_interval_s and once at shutdown.

    The outbox and delivery counters are null only when no broker is configured, i.e. never on MQTT.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, title="rclstm-edge stats")

    device_id: str
    version: str
    uptime_s: float = Field(ge=0)
    frames_in: int = Field(ge=0)
    frames_sampled: int = Field(ge=0)
    inference_ms: float = Field(ge=0, description="The slowest camera's mean model time per window.")
    events: int = Field(ge=0)
    cameras: dict[str, CameraStats]
    outbox_depth: int | None = Field(None, ge=0, description="Events stored and not yet acknowledged.")
    outbox_bytes: int | None = Field(None, ge=0)
    dropped: int | None = Field(None, ge=0, description="Oldest events dropped because the outbox was full.")
    outbox_errors: int | None = Field(None, ge=0)
    acked: int | None = Field(None, ge=0, description="Outbox messages the broker acknowledged.")
    rejected: int | None = Field(None, ge=0, description="Messages the broker refused (e.g. its ACL).")


def message_json(message: BaseModel) -> bytes:
    """Compact UTF-8 JSON, the MQTT payload."""
    return message.model_dump_json().encode("utf-8")


def _schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"urn:rclstm-edge:schema:{name}:1", **model.model_json_schema()}


SCHEMAS = {
    "event": event_schema,
    "camera-status": lambda: _schema(CameraStatus, "camera-status"),
    "stats": lambda: _schema(Stats, "stats"),
}


def schema_text(name: str) -> str:
    """The JSON Schema ``name`` as the committed file holds it (docs/schemas/{name}.json)."""
    return json.dumps(SCHEMAS[name](), indent=2) + "\n"
