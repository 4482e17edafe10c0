"""The messages the device sends (incident events, a camera's retained status, the device's stats) and
the one it receives (a backend's verdict on an incident).

They are pydantic models so the JSON Schemas a backend validates against (``rclstm-edge schema
event`` / ``camera-status`` / ``stats``, committed under docs/schemas/ and checked against these
classes by a test) are generated from the very classes the device fills in, and cannot drift from
what is published. Status is a state (retained, one per camera); stats are telemetry (not
retained, superseded by the next one).

Every field of an event comes from the frames and the model, never from the moment of sending, so
an event that the outbox publishes again after a crash or a broker outage is byte-identical to the
first copy and a consumer can deduplicate on (``event_id``, ``seq``). ``emitted_at`` is the frame
time of the window that caused the transition, not a send time.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# pydantic writes UTC as "Z"; the pattern lets a consumer's validator check it without a format plugin.
UTC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
SCHEMA_VERSION = 1

EventType = Literal["start", "update", "end"]
# Why an incident ended: calm windows; the camera was lost; the stream ended or the daemon stopped;
# the daemon died with it open and the next start closed it (the backend weighs each differently:
# only "calm" says the scene is known to be quiet again).
EndReason = Literal["calm", "camera_lost", "stopped", "interrupted"]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc), Field(json_schema_extra={"pattern": UTC_PATTERN})]
Score = Annotated[float, Field(ge=0.0, le=1.0)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Message):
    """The bundle that produced the scores, so an operator can tell which model raised an alert."""

    name: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Event(_Message):
    """One step (start, update or end) of one incident on one camera."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="rclstm-edge event")

    schema_version: Literal[1]
    event_id: uuid.UUID = Field(description="The incident's id: the same for its start, updates and end.")
    type: EventType
    seq: int = Field(ge=0, description="0 for the start, then 1, 2 ... per incident, in emission order.")
    device_id: str
    camera_id: str
    site: str
    label: str = Field(description="The anomaly label seen most often during the incident so far.")
    score: Score = Field(description="Anomaly score of the window that caused this message.")
    peak_score: Score
    mean_score: Score
    windows: int = Field(ge=1, description="Classified windows from the start to the last one at/above threshold.")
    started_at: UtcDatetime = Field(description="Frame time of the first window at/above threshold.")
    ended_at: UtcDatetime | None = Field(
        description="Frame time of the last window at/above threshold (null before the end)."
    )
    emitted_at: UtcDatetime = Field(description="Frame time of the window that caused this message.")
    end_reason: EndReason | None = Field(
        description="Why the incident ended (null before the end): 'calm' windows below the threshold; "
        "'camera_lost'; 'stopped' (the stream ended or the daemon stopped); 'interrupted' (the daemon died "
        "with the incident open and its next start closed it at the last message sent)."
    )
    model: ModelRef


Verdict = Literal["false_alarm", "confirmed"]


class Feedback(_Message):
    """On {prefix}/{device}/feedback, published by a backend: a person's verdict on one incident.

    The device keeps it beside the incident's clip, so `rclstm-edge export-clips` can label the clip.
    ``device_id`` is required although the topic names the device: a backend that routes a verdict
    to the wrong device is told so in the device's log instead of mislabelling a stranger's clip.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, title="rclstm-edge feedback")

    schema_version: Literal[1]
    event_id: uuid.UUID = Field(description="The incident's event_id, as in its events.")
    device_id: str = Field(description="The device that raised the incident; must be the receiving device.")
    verdict: Verdict = Field(description="'false_alarm': nothing happened; 'confirmed': the incident was real.")
    judged_at: UtcDatetime | None = Field(None, description="When the person judged it (UTC).")
    judged_by: str | None = Field(None, max_length=100, description="Who judged it (an operator id, no names needed).")
    note: str | None = Field(None, max_length=500)


class CameraStatus(_Message):
    """Retained on {prefix}/{device}/{camera}/status: whether frames are arriving, and since when."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="rclstm-edge camera status")

    online: bool
    reason: str = Field(description="Why: 'streaming', 'end of file', 'stopped', or the source's error line.")
    since: UtcDatetime = Field(description="Wall time (UTC) of the change.")


class ChainStats(_Message):
    """One camera chain's counters (``CameraPipeline.stats``); its worker adds the source's."""

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


class CameraStats(ChainStats):
    """One camera's counters since the daemon started."""

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
    outbox_oldest_s: float | None = Field(None, ge=0, description="Age of the oldest unacknowledged message.")
    recovered: int | None = Field(None, ge=0, description="Messages salvaged from a corrupt outbox at start.")
    quarantined: int | None = Field(None, ge=0,
                                    description="Stored messages whose checksum failed: kept aside, never published.")
    clips: int | None = Field(None, ge=0, description="Clips kept on the device (null when clips are off).")
    clips_bytes: int | None = Field(None, ge=0)
    clips_errors: int | None = Field(None, ge=0, description="Clips not kept because the disk failed or was full.")
    feedback_accepted: int | None = Field(None, ge=0, description="Verdicts recorded beside a clip.")
    feedback_refused: int | None = Field(None, ge=0,
                                         description="Verdicts refused: not JSON, not the schema, another device's, "
                                                     "or an incident with no clip here.")


def message_json(message: BaseModel) -> bytes:
    """Compact UTF-8 JSON, the MQTT payload."""
    return message.model_dump_json().encode("utf-8")


SCHEMA_MODELS: dict[str, type[BaseModel]] = {"event": Event, "camera-status": CameraStatus, "stats": Stats,
                                             "feedback": Feedback}


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema consumers validate message ``name`` against."""
    model = SCHEMA_MODELS[name]
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"urn:rclstm-edge:schema:{name}:1", **model.model_json_schema()}


def schema_text(name: str) -> str:
    """The JSON Schema ``name`` as the committed file holds it (docs/schemas/{name}.json)."""
    return json.dumps(schema(name), indent=2) + "\n"
