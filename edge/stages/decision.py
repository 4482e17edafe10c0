"""Window scores in, incidents out: threshold, hysteresis and cooldown.

One anomalous window is not an incident: a model at 90% accuracy is wrong about one window in ten,
and an alert per window would flap. An incident therefore starts after ``start_windows``
consecutive windows at or above the threshold and ends after ``end_windows`` consecutive windows
below it; after an end, ``cooldown_s`` of stream time must pass before another incident can start,
so a fight that calms for a moment is not reported as two.

Times: ``started_at`` is the wall time of the first qualifying window (the newest frame it saw, i.e.
the moment the model first saw enough), and ``ended_at`` the wall time of the last window at or above
the threshold; the trailing windows below it only confirm the end and are not part of the incident.
Stream time (``ts``) drives the cooldown and the update interval so a replayed file behaves the same
at any speed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from edge.core.config import DecisionConfig
from edge.core.messages import EndReason, EventType
from edge.core.values import Phase, Prediction, Transition


@dataclass
class _Incident:
    """Running statistics of an open incident over its windows from start to the last one at threshold."""

    id: str
    started_at: datetime
    last_above: Prediction
    peak: Prediction
    scores: list[float] = field(default_factory=list)
    labels: Counter[str] = field(default_factory=Counter)
    seq: int = 0
    last_score: float = 0.0  # the newest window's score, whatever it was
    last_emit_ts: float = 0.0
    below: list[float] = field(default_factory=list)  # trailing scores under the threshold, not yet folded in

    def add(self, pred: Prediction) -> None:
        """Fold a window at or above the threshold (and the dips before it) into the incident."""
        self.scores.extend(self.below)
        self.below.clear()
        self.scores.append(pred.anomaly_score)
        self.labels[pred.anomaly_label or pred.top_label] += 1
        self.last_above = pred
        if pred.anomaly_score > self.peak.anomaly_score:
            self.peak = pred

    @property
    def top_label(self) -> str:
        """The anomaly label seen most often; ties go to the label at the peak."""
        counts = self.labels.most_common()
        best = counts[0][1]
        tied = [label for label, n in counts if n == best]
        peak_label = self.peak.anomaly_label or self.peak.top_label
        return peak_label if peak_label in tied else tied[0]


class Decider:
    """Incident state for one camera."""

    def __init__(self, settings: DecisionConfig) -> None:
        self.settings = settings
        self.incidents = 0
        self._run: list[Prediction] = []  # consecutive qualifying windows while idle
        self._open: _Incident | None = None
        self._cooldown_until: float | None = None
        self._last_ts: float | None = None

    @property
    def open(self) -> bool:
        return self._open is not None

    @property
    def peak_ts(self) -> float | None:
        """Stream time of the open incident's peak window (the pipeline keeps that window's frame)."""
        return self._open.peak.ts if self._open is not None else None

    @property
    def phase(self) -> Phase:
        """The state the newest window left behind (replay draws it; the daemon does not need it)."""
        if self._open is not None:
            return "open"
        if self._run:
            return "pending"
        until, last = self._cooldown_until, self._last_ts
        return "cooldown" if until is not None and last is not None and last < until else "idle"

    def update(self, pred: Prediction) -> list[Transition]:
        """Feed one window's prediction; returns the transitions it caused (usually none)."""
        self._last_ts = pred.ts
        above = pred.anomaly_score >= self.settings.threshold
        incident = self._open
        if incident is None:
            return self._idle(pred, above)
        incident.last_score = pred.anomaly_score
        if above:
            incident.add(pred)
        else:
            incident.below.append(pred.anomaly_score)
            if len(incident.below) >= self.settings.end_windows:
                self._cooldown_until = pred.ts + self.settings.cooldown_s
                return [self._end(pred.wall, pred.ts, pred.anomaly_score, "calm")]
        if pred.ts - incident.last_emit_ts >= self.settings.update_interval_s:
            return [self._transition(incident, "update", pred.wall, pred.ts, pred.anomaly_score)]
        return []

    def close(self, wall: datetime, ts: float, reason: EndReason) -> list[Transition]:
        """End an open incident because the stream ended or was lost (no cooldown: the scene did not calm)."""
        self._run.clear()
        if self._open is None:
            return []
        return [self._end(wall, ts, self._open.last_score, reason)]

    def _idle(self, pred: Prediction, above: bool) -> list[Transition]:
        if self._cooldown_until is not None and pred.ts < self._cooldown_until:
            self._run.clear()
            return []
        if not above:
            self._run.clear()
            return []
        self._run.append(pred)
        if len(self._run) < self.settings.start_windows:
            return []
        first = self._run[0]
        incident = _Incident(id=str(uuid.uuid4()), started_at=first.wall, last_above=first, peak=first)
        for qualifying in self._run:
            incident.add(qualifying)
        incident.last_score = pred.anomaly_score
        self._run.clear()
        self._open = incident
        self.incidents += 1
        return [self._transition(incident, "start", pred.wall, pred.ts, pred.anomaly_score)]

    def _end(self, wall: datetime, ts: float, score: float, reason: EndReason) -> Transition:
        incident = self._open
        assert incident is not None
        self._open = None
        return self._transition(incident, "end", wall, ts, score, ended_at=incident.last_above.wall, end_reason=reason)

    def _transition(
        self,
        incident: _Incident,
        kind: EventType,
        wall: datetime,
        ts: float,
        score: float,
        ended_at: datetime | None = None,
        end_reason: EndReason | None = None,
    ) -> Transition:
        transition = Transition(
            kind=kind,
            incident_id=incident.id,
            seq=incident.seq,
            started_at=incident.started_at,
            ended_at=ended_at,
            peak_score=incident.peak.anomaly_score,
            mean_score=float(np.mean(incident.scores)),
            top_label=incident.top_label,
            windows=len(incident.scores),
            score=score,
            peak_ts=incident.peak.ts,
            emitted_at=wall,
            ts=ts,
            end_reason=end_reason,
        )
        incident.seq += 1
        incident.last_emit_ts = ts
        return transition
