"""Transitions in, event messages out: what the backend receives about each step of an incident."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from edge.core.messages import SCHEMA_VERSION, Event, ModelRef
from edge.core.values import Transition

if TYPE_CHECKING:  # the bundle contract needs OpenCV (through preprocess); events need only its fields
    from edge.bundle import Manifest

SCORE_DIGITS = 4


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
