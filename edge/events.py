"""The event message: what the backend receives about an incident, and its JSON Schema.

Every field comes from the frames and the model, never from the moment of sending, so an event
that the outbox publishes again after a crash or a broker outage is byte-identical to the first
copy and a consumer can deduplicate on (``event_id``, ``seq``). ``emitted_at`` is the frame time of
the window that caused the transition, not a send time.

Run ``python -m edge.events > edge/schemas/event.json`` after changing the model; a test keeps the
committed schema equal to it.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from edge.bundle import Manifest
from edge.decision import EndReason, Transition

SCHEMA_ID = "urn:rclstm-edge:schema:event:1"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# pydantic writes UTC as "Z"; the pattern lets a consumer's validator check it without a format plugin.
UTC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
SCORE_DIGITS = 4
SCHEMA_VERSION = 1


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc), Field(json_schema_extra={"pattern": UTC_PATTERN})]
Score = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Strict):
    """The bundle that produced the scores, so an operator can tell which model raised an alert."""

    name: str
    version: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Event(_Strict):
    """One step (start, update or end) of one incident on one camera."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="rclstm-edge event")

    schema_version: Literal[1]
    event_id: uuid.UUID = Field(description="The incident's id: the same for its start, updates and end.")
    type: Literal["start", "update", "end"]
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


def build_event(transition: Transition, device_id: str, site: str, camera_id: str, manifest: Manifest) -> Event:
    """The message for one decision transition."""
    return Event(
        schema_version=SCHEMA_VERSION,
        event_id=uuid.UUID(transition.incident_id),
        type=transition.kind,
        seq=transition.seq,
        device_id=device_id,
        camera_id=camera_id,
        site=site,
        label=transition.top_label,
        score=_score(transition.score),
        peak_score=_score(transition.peak_score),
        mean_score=_score(transition.mean_score),
        windows=transition.windows,
        started_at=transition.started_at,
        ended_at=transition.ended_at,
        emitted_at=transition.emitted_at,
        end_reason=transition.end_reason,
        model=ModelRef(name=manifest.name, version=manifest.version, sha256=manifest.sha256),
    )


def interrupted_end(last: Event) -> Event:
    """The end of an incident whose daemon died after sending ``last`` (its start or an update).

    Nothing is known past ``last``, so the incident ends at its frame time. Built only from ``last``,
    so closing it again after yet another crash gives the same bytes and consumers deduplicate it.
    """
    return last.model_copy(update={"type": "end", "seq": last.seq + 1, "ended_at": last.emitted_at,
                                   "end_reason": "interrupted"})


def _score(value: float) -> float:
    """Scores rounded so messages stay short; probabilities past four digits carry no meaning."""
    return round(min(max(float(value), 0.0), 1.0), SCORE_DIGITS)


def event_json(event: Event) -> bytes:
    """Compact UTF-8 JSON, the MQTT payload (same event in, same bytes out)."""
    return event.model_dump_json().encode("utf-8")


def event_schema() -> dict[str, Any]:
    """The JSON Schema consumers validate against (committed as edge/schemas/event.json)."""
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": SCHEMA_ID, **Event.model_json_schema()}


def schema_text() -> str:
    return json.dumps(event_schema(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
