"""The sweep: every threshold and start_windows over cached window scores, and the choice among them.

It replays only the ``Decider`` over the scores each recording gave once (end_windows, cooldown and
classifier.hop stay as configured: changing hop would need the model again); see ``edge.tools.calibrate``
for what is chosen and why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.config import DecisionConfig
from edge.core.errors import UsageError
from edge.core.values import Prediction
from edge.stages.decision import Decider

START_WINDOWS = (1, 2, 3, 4)
# A threshold of 1 would mean "never alarm": the search stays below it.
GRID = tuple(round(0.01 * i, 2) for i in range(1, 100))
DIGITS = 4


class InputError(UsageError):
    """Recordings, labels or options calibration cannot use; one line naming the input and the fix."""


@dataclass
class Recording:
    """One recording's window scores (frames dropped) and its labelled incidents in stream seconds."""

    path: Path
    duration_s: float
    predictions: list[Prediction]
    intervals: list[tuple[float, float]] = field(default_factory=list)

    @property
    def scores(self) -> np.ndarray:
        return np.array([p.anomaly_score for p in self.predictions], dtype=np.float64)


@dataclass(frozen=True)
class Point:
    """The outcome of one setting over all recordings."""

    start_windows: int
    threshold: float
    incidents: int
    false_alarms_per_day: float
    recall: float | None = None
    delay_s: float | None = None  # mean, over detected labelled incidents
    labelled_false_alarms: int | None = None


@dataclass(frozen=True)
class Choice:
    """The chosen setting for one start_windows, with its margin."""

    point: Point
    highest_quiet_run: float | None  # highest run of start_windows no-incident windows below the threshold
    margin: float | None
    delay_max_s: float | None

    @property
    def threshold(self) -> float:
        return self.point.threshold

    @property
    def start_windows(self) -> int:
        return self.point.start_windows


@dataclass
class Calibration:
    camera: str
    target: float
    base: DecisionConfig
    window_s: float
    quiet: list[Recording]
    labelled: list[Recording]
    points: list[Point]
    options: dict[int, Choice | None]
    chosen: Choice | None

    @property
    def hours(self) -> float:
        return sum(r.duration_s for r in self.quiet) / 3600.0

    @property
    def labelled_count(self) -> int:
        return sum(len(r.intervals) for r in self.labelled)

    def curves(self) -> dict[int, list[Point]]:
        """Each start_windows' points by threshold (grid and refined ones together)."""
        out: dict[int, list[Point]] = {}
        for point in sorted(self.points, key=lambda p: (p.start_windows, p.threshold)):
            out.setdefault(point.start_windows, []).append(point)
        return out

    def to_json(self) -> dict[str, Any]:
        def choice(c: Choice | None) -> dict[str, Any] | None:
            if c is None:
                return None
            return {**asdict(c.point), "highest_quiet_run": c.highest_quiet_run, "margin": c.margin,
                    "delay_max_s": c.delay_max_s}

        return {
            "camera": self.camera,
            "target_false_alarms_per_day": self.target,
            "recorded_hours": self.hours,
            "decision": self.base.model_dump(),
            "window_s": self.window_s,
            "recordings": [{"path": str(r.path), "hours": r.duration_s / 3600, "windows": len(r.predictions),
                            "max_score": float(r.scores.max()) if r.predictions else None} for r in self.quiet],
            "labelled": [{"path": str(r.path), "intervals": r.intervals, "windows": len(r.predictions)}
                         for r in self.labelled],
            "chosen": choice(self.chosen),
            "options": {str(k): choice(c) for k, c in sorted(self.options.items())},
            "curve": [asdict(p) for p in sorted(self.points, key=lambda p: (p.start_windows, p.threshold))],
        }


def run_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """The lowest score of every k consecutive windows: the highest threshold at which that run qualifies."""
    if len(scores) < k:
        return np.empty(0)
    return np.lib.stride_tricks.sliding_window_view(scores, k).min(axis=1)


def incidents(predictions: Sequence[Prediction], settings: DecisionConfig) -> list[tuple[float, float]]:
    """(alert_ts, closed_ts) of every incident the decision logic opens over cached windows."""
    decider = Decider(settings)
    alerts: dict[str, float] = {}
    out: list[tuple[float, float]] = []
    transitions = [t for p in predictions for t in decider.update(p)]
    if predictions:
        transitions += decider.close(predictions[-1].wall, predictions[-1].ts, "stopped")
    for t in transitions:
        if t.kind == "start":
            alerts[t.incident_id] = t.ts
        elif t.kind == "end":
            out.append((alerts[t.incident_id], t.ts))
    return out


def just_above(score: float) -> float:
    """The smallest threshold with DIGITS decimals that a run scoring ``score`` does not reach."""
    n = math.floor(score * 10**DIGITS) + 1
    while round(n / 10**DIGITS, DIGITS) <= score:  # float rounding put the product just under an integer
        n += 1
    return round(n / 10**DIGITS, DIGITS)


class _Sweep:
    """Evaluates settings over the cached scores, each at most once."""

    def __init__(self, quiet: list[Recording], labelled: list[Recording], base: DecisionConfig, window_s: float):
        self.quiet = quiet
        self.labelled = labelled
        self.base = base
        self.window_s = window_s
        self.hours = sum(r.duration_s for r in quiet) / 3600.0
        self.runs = {k: np.concatenate([run_scores(r.scores, k) for r in quiet]) for k in START_WINDOWS}
        self.points: dict[tuple[int, float], Point] = {}
        self._delays: dict[tuple[int, float], list[float]] = {}  # per evaluated point, for the chosen one

    def point(self, k: int, threshold: float) -> Point:
        key = (k, threshold)
        if key not in self.points:
            self.points[key] = self._evaluate(k, threshold)
        return self.points[key]

    def _evaluate(self, k: int, threshold: float) -> Point:
        settings = self.base.model_copy(update={"threshold": threshold, "start_windows": k})
        runs = self.runs[k]
        # No run of k windows reaches the threshold: no incident can start, no need to replay.
        count = 0 if not runs.size or runs.max() < threshold else sum(
            len(incidents(r.predictions, settings)) for r in self.quiet)
        recall = delay = extra = None
        if self.labelled:
            recall, delays, extra = self._recall(settings)
            delay = float(np.mean(delays)) if delays else None
            self._delays[k, threshold] = delays
        return Point(k, threshold, count, count / self.hours * 24.0, recall, delay, extra)

    def _recall(self, settings: DecisionConfig) -> tuple[float, list[float], int]:
        """Recall of labelled incidents, their detection delays, and incidents matching no label."""
        total, delays, unmatched = 0, [], 0
        for recording in self.labelled:
            found = incidents(recording.predictions, settings)
            used: set[int] = set()
            for start, end in recording.intervals:
                total += 1
                # A window sees window_s back, so an alert that soon after the end still saw the incident.
                hits = [i for i, (alert, closed) in enumerate(found)
                        if alert <= end + self.window_s and closed >= start]
                if hits:
                    used.update(hits)
                    delays.append(max(0.0, found[hits[0]][0] - start))
            unmatched += len(found) - len(used)
        return (len(delays) / total if total else 0.0), delays, unmatched

    def choose(self, k: int, target: float) -> Choice | None:
        """The lowest threshold from which every higher one meets the target, or None."""
        meets = [self.point(k, t).false_alarms_per_day <= target for t in GRID]
        i = len(GRID)
        while i > 0 and meets[i - 1]:
            i -= 1
        # GRID[i:] all pass, so the answer lies in (GRID[i - 1], GRID[i]], or in (0.99, 1) when none does;
        # counts change only where a threshold passes a run's score, so only those places are tried.
        lower = GRID[i - 1] if i else 0.0
        best = GRID[i] if i < len(GRID) else None
        runs = self.runs[k]
        near = runs[(runs >= lower - 2 * 10**-DIGITS) & (runs < (best or 1.0))]
        refined = sorted({just_above(r) for r in near} & _between(lower, best or 1.0), reverse=True)
        for threshold in refined:
            if self.point(k, threshold).false_alarms_per_day > target:
                break
            best = threshold
        if best is None:
            return None
        below = runs[runs < best]
        highest = float(below.max()) if below.size else None
        if highest is not None and highest >= 10**-DIGITS:
            # The setting just under the quiet scores, for the curve: the cliff the margin measures.
            self.point(k, round(math.floor(highest * 10**DIGITS) / 10**DIGITS, DIGITS))
        chosen = self.point(k, best)
        delays = self._delays.get((k, best), [])
        return Choice(chosen, highest, None if highest is None else best - highest,
                      max(delays) if delays else None)


def unlabelled_choice(options: dict[int, Choice | None], configured: int) -> Choice | None:
    """Without labels: the camera's ``start_windows``, or fewer where they reach the same threshold.

    Recordings without incidents say which thresholds stay quiet, not what each setting would catch.
    The configured ``start_windows`` (the model's recommended one, chosen on labelled clips, unless
    the installer set one) is the evidence there is; fewer windows at the same threshold are as quiet
    here and quicker. Taking the fewest windows regardless puts the threshold above the calm
    recordings' highest single window: on the benchmark stream that found none of its three fights,
    where 2 windows at the 3-window threshold found all three (README, "Decision settings"). When
    the configured count has no threshold meeting the target, the nearest larger count stands in.
    """
    feasible = {k: c for k, c in options.items() if c is not None}
    if not feasible:
        return None
    anchor = feasible[min(feasible, key=lambda k: (k < configured, abs(k - configured)))]
    return min((c for c in feasible.values() if c.threshold <= anchor.threshold), key=lambda c: c.start_windows)


def _between(lower: float, upper: float) -> set[float]:
    """Every DIGITS-decimal threshold strictly between two grid points."""
    lo, hi = round(lower * 10**DIGITS), round(upper * 10**DIGITS)
    return {round(n / 10**DIGITS, DIGITS) for n in range(lo + 1, hi)}


def sweep(quiet: list[Recording], labelled: list[Recording], base: DecisionConfig, window_s: float,
          target: float, camera: str) -> Calibration:
    """Every setting's false-alarm rate (and recall), the choice per start_windows, and the overall choice."""
    if not sum(len(r.predictions) for r in quiet):
        raise InputError("the recordings are too short for a single window; give longer recordings")
    search = _Sweep(quiet, labelled, base, window_s)
    options = {k: search.choose(k, target) for k in START_WINDOWS}
    if labelled:
        for k in START_WINDOWS:  # the recall curve over the whole grid
            for t in GRID:
                search.point(k, t)
    feasible = [c for c in options.values() if c is not None]
    chosen = None
    if feasible:
        if labelled:
            def rank(c: Choice) -> tuple[float, float, int]:
                delay = c.point.delay_s if c.point.delay_s is not None else math.inf
                return (-(c.point.recall or 0.0), delay, c.start_windows)

            chosen = min(feasible, key=rank)
        else:
            chosen = unlabelled_choice(options, base.start_windows)
    return Calibration(camera, target, base, window_s, quiet, labelled, list(search.points.values()), options, chosen)
