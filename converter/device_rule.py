"""The daemon's decision rule, for scoring a model the way a user meets it: as incidents, not windows.

Every import from edge's decision code (edge.calibrate, edge.classifier, edge.config) is in this one
module, so when those modules move only this file follows them. The rule itself is never copied:
window scores go through ``edge.calibrate.incidents``, which replays ``edge.decision.Decider``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np

from edge.calibrate import incidents
from edge.classifier import Prediction
from edge.config import DecisionConfig

_LABELS = ["normal", "anomaly"]


def decision_defaults() -> DecisionConfig:
    """The device's decision settings as shipped (threshold 0.7, start_windows 3, end_windows 5, hop 4, ...)."""
    return DecisionConfig()


def incident_times(ts: Sequence[float], scores: Sequence[float], settings: DecisionConfig) -> list[tuple[float, float]]:
    """(alert_ts, closed_ts) of every incident the daemon would open over windows ending at ``ts``."""
    predictions = [
        Prediction(probs=np.array([1.0 - s, s], np.float32), labels=_LABELS, top_label=_LABELS[int(s >= 0.5)],
                   anomaly_score=float(s), ts=float(t), wall=datetime.fromtimestamp(float(t), timezone.utc),
                   frame=None, anomaly_label="anomaly")
        for t, s in zip(ts, scores, strict=True)
    ]
    return incidents(predictions, settings)
