"""Binary scores with 95 % intervals from a bootstrap over groups.

Clips of one camera or scene are not independent: a model that gets one wrong tends to get its
neighbours wrong too, so resampling clips would give intervals that are too narrow. The bootstrap
draws whole groups with replacement (as many as there are) and recomputes every score on the clips
(or spans) of the drawn groups; the interval is the 2.5th to 97.5th percentile over the resamples.
Units from several seeds are pooled: a group drawn once brings its units of every seed.

A score undefined in a resample (recall when it drew no anomalous unit, precision when nothing was
predicted anomalous) is left out of that score's percentiles. The point values follow
converter.metrics: 0 when undefined (a model that never alarms must look bad, not blank). Balanced
accuracy is the mean of recall and specificity over the classes present.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("accuracy", "precision", "recall", "f1", "balanced_accuracy")
DEFAULT_RESAMPLES = 1000
LEVEL = 0.95


def _from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric from confusion counts (arrays of equal shape: one entry per resample); NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        return {
            "accuracy": np.where(tp + fp + fn + tn > 0, (tp + tn) / (tp + fp + fn + tn), np.nan),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
            "recall": recall,
            "f1": np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
            "balanced_accuracy": np.nanmean(np.stack([recall, specificity]), axis=0),
        }


def _group_counts(y_true: np.ndarray, y_pred: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """(groups x 4) confusion counts tp, fp, fn, tn per group."""
    names = sorted(set(groups))
    index = np.array([names.index(g) for g in groups], dtype=np.int64)
    cells = np.stack([y_true & y_pred, ~y_true & y_pred, y_true & ~y_pred, ~y_true & ~y_pred], axis=1)
    counts = np.zeros((len(names), 4))
    np.add.at(counts, index, cells.astype(np.float64))
    return counts


def binary_scores(y_true: Sequence[bool], y_pred: Sequence[bool]) -> dict[str, float]:
    """Point scores for one set of units (True = anomaly)."""
    t, p = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    counts = [np.array([float(np.sum(c))]) for c in (t & p, ~t & p, t & ~p, ~t & ~p)]
    return {k: float(np.nan_to_num(v[0])) for k, v in _from_counts(*counts).items()}


def group_bootstrap(
    y_true: Sequence[bool],
    y_pred: Sequence[bool],
    groups: Sequence[str],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Each metric's value on all units and its 95 % interval over group resamples: ``{metric: {value, low, high}}``."""
    t, p = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    if not len(t):
        raise ValueError("no units to score")
    counts = _group_counts(t, p, list(groups))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(resamples, len(counts)))
    weights = np.zeros((resamples, len(counts)))
    np.add.at(weights, (np.repeat(np.arange(resamples), len(counts)), draws.ravel()), 1.0)
    resampled = weights @ counts  # (resamples x 4)
    values = _from_counts(*resampled.T)
    point = binary_scores(t, p)
    tail = (1 - LEVEL) / 2 * 100
    out = {}
    for metric in METRICS:
        defined = values[metric][~np.isnan(values[metric])]
        low, high = np.percentile(defined, [tail, 100 - tail]) if len(defined) else (np.nan, np.nan)
        out[metric] = {"value": point[metric], "low": float(low), "high": float(high)}
    return out
