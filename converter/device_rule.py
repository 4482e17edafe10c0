"""The daemon's decision rule, for scoring a model the way a user meets it: as incidents, not windows.

Every import from edge's decision code (the calibration sweep, the flowing values, the config) is in this
one module, so when those modules move only this file follows them. The rule itself is never copied:
window scores go through ``edge.tools.calibrate.sweep.incidents``, which replays ``edge.stages.decision.Decider``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np

from edge.core.config import ClassifierConfig, DecisionConfig
from edge.core.values import Prediction
from edge.tools.calibrate.sweep import incidents

_LABELS = ["normal", "anomaly"]


def decision_defaults() -> DecisionConfig:
    """The device's decision settings as shipped (threshold 0.7, start_windows 3, end_windows 5, ...)."""
    return DecisionConfig()


def classifier_defaults(hop: int | None = None) -> ClassifierConfig:
    """The device's classifier settings as shipped (a window every 4 sampled frames, scene cuts at 0.6).

    ``hop`` replaces the shipped hop: a model sampled at another interval is classified on its own grid
    (the bundle records it, and the device uses it unless a config sets one).
    """
    return ClassifierConfig() if hop is None else ClassifierConfig(hop=hop)


def incident_times(ts: Sequence[float], scores: Sequence[float], settings: DecisionConfig) -> list[tuple[float, float]]:
    """(alert_ts, closed_ts) of every incident the daemon would open over windows ending at ``ts``."""
    predictions = [
        Prediction(probs=np.array([1.0 - s, s], np.float32), labels=_LABELS, top_label=_LABELS[int(s >= 0.5)],
                   anomaly_score=float(s), ts=float(t), wall=datetime.fromtimestamp(float(t), timezone.utc),
                   anomaly_label="anomaly")
        for t, s in zip(ts, scores, strict=True)
    ]
    return incidents(predictions, settings)
