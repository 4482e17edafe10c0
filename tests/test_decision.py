"""Incident lifecycle from scripted window scores: hysteresis, cooldown, updates, statistics."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from edge.core.config import DecisionConfig
from edge.core.values import Prediction, Transition
from edge.stages.decision import Decider

START = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
LABELS = ["calm", "fight", "theft"]


def pred(ts: float, score: float, label: str = "fight") -> Prediction:
    """A prediction with ``score`` on one anomaly label; the rest on 'calm'."""
    probs = np.array([1.0 - score, 0.0, 0.0], np.float32)
    probs[LABELS.index(label)] = score
    return Prediction(
        probs=probs,
        labels=LABELS,
        top_label=LABELS[int(np.argmax(probs))],
        anomaly_score=score,
        ts=ts,
        wall=START + timedelta(seconds=ts),
        anomaly_label=label,
    )


def feed(decider: Decider, scores: list[float], step: float = 1.0, t0: float = 0.0) -> list[Transition]:
    out: list[Transition] = []
    for i, score in enumerate(scores):
        out += decider.update(pred(t0 + i * step, score))
    return out


def settings(**changes: float) -> DecisionConfig:
    base = {"threshold": 0.5, "start_windows": 2, "end_windows": 3, "cooldown_s": 10.0, "update_interval_s": 100.0}
    return DecisionConfig(**{**base, **changes})


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def test_start_needs_consecutive_windows_and_end_needs_consecutive_below() -> None:
    decider = Decider(settings())
    # One isolated high window is noise; two in a row start; dips shorter than end_windows do not end.
    transitions = feed(decider, [0.9, 0.1, 0.6, 0.8, 0.2, 0.3, 0.7, 0.1, 0.2, 0.4, 0.0])
    assert [t.kind for t in transitions] == ["start", "end"]
    start, end = transitions
    assert start.started_at == at(2) and start.emitted_at == at(3) and start.ended_at is None
    assert end.ended_at == at(6)  # the last window at/above threshold, not the confirming ones
    assert end.emitted_at == at(9)
    assert start.incident_id == end.incident_id and uuid.UUID(start.incident_id).version == 4
    assert [start.seq, end.seq] == [0, 1]
    assert (start.end_reason, end.end_reason) == (None, "calm")
    # Windows from the first qualifying one to the last above, dips included; the tail is not.
    assert end.windows == 5
    assert end.mean_score == pytest.approx(np.mean([0.6, 0.8, 0.2, 0.3, 0.7]))
    assert end.peak_score == pytest.approx(0.8) and end.peak_ts == 3.0
    assert decider.incidents == 1 and not decider.open


def test_score_equal_to_threshold_counts_as_above() -> None:
    transitions = feed(Decider(settings(threshold=0.5, start_windows=1)), [0.5])
    assert [t.kind for t in transitions] == ["start"]


def test_cooldown_blocks_a_new_start_then_allows_it() -> None:
    decider = Decider(settings(cooldown_s=10.0, start_windows=1, end_windows=1))
    first = feed(decider, [0.9, 0.1])  # ends at ts=1; cooldown until ts=11
    assert [t.kind for t in first] == ["start", "end"]
    assert feed(decider, [0.9] * 10, t0=1.5) == []  # ts 1.5 .. 10.5: all inside the cooldown
    second = decider.update(pred(11.0, 0.9))
    assert [t.kind for t in second] == ["start"]
    assert second[0].incident_id != first[0].incident_id and second[0].seq == 0


def test_windows_during_cooldown_do_not_count_towards_a_start() -> None:
    decider = Decider(settings(cooldown_s=5.0, start_windows=3, end_windows=1))
    feed(decider, [0.9, 0.9, 0.9, 0.0])  # ends at ts=3; cooldown until 8
    assert feed(decider, [0.9, 0.9, 0.9, 0.9, 0.9], t0=4.0) == []  # ts 4..8: only ts 8 is after cooldown
    assert [t.kind for t in feed(decider, [0.9, 0.9], t0=9.0)] == ["start"]


def test_updates_at_most_every_interval_with_running_statistics() -> None:
    decider = Decider(settings(start_windows=1, update_interval_s=2.5))
    transitions = feed(decider, [0.6, 0.7, 0.8, 0.9, 0.6, 0.7, 0.8], step=1.0)
    kinds = [(t.kind, t.ts) for t in transitions]
    assert kinds == [("start", 0.0), ("update", 3.0), ("update", 6.0)]
    update = transitions[1]
    assert update.seq == 1 and update.windows == 4 and update.score == pytest.approx(0.9)
    assert update.peak_score == pytest.approx(0.9) and update.mean_score == pytest.approx(0.75)
    assert len({t.incident_id for t in transitions}) == 1


def test_top_label_is_the_most_frequent_anomaly_label_ties_to_the_peak() -> None:
    decider = Decider(settings(start_windows=1, end_windows=1, cooldown_s=0.0))
    for i, (score, label) in enumerate([(0.6, "theft"), (0.9, "fight"), (0.7, "theft"), (0.8, "fight")]):
        decider.update(pred(i, score, label))
    end = decider.update(pred(4, 0.0))[0]
    assert end.top_label == "fight"  # 2 vs 2, the peak (0.9) was a fight
    decider.update(pred(5, 0.6, "theft"))
    decider.update(pred(6, 0.7, "theft"))
    assert decider.update(pred(7, 0.0))[0].top_label == "theft"


def test_close_ends_an_open_incident_without_cooldown() -> None:
    decider = Decider(settings(start_windows=1, cooldown_s=60.0))
    feed(decider, [0.8, 0.9, 0.2])
    closed = decider.close(at(2.5), 2.5, "camera_lost")
    assert [t.kind for t in closed] == ["end"] and closed[0].end_reason == "camera_lost"
    assert closed[0].ended_at == at(1) and closed[0].emitted_at == at(2.5) and closed[0].score == pytest.approx(0.2)
    assert decider.close(at(3), 3.0, "stopped") == []  # nothing open any more
    # A stream that comes back after a loss may start a new incident at once.
    assert [t.kind for t in decider.update(pred(3.0, 0.9))] == ["start"]


def test_close_forgets_a_partial_run() -> None:
    decider = Decider(settings(start_windows=2))
    decider.update(pred(0, 0.9))
    assert decider.close(at(0.5), 0.5, "camera_lost") == []
    assert decider.update(pred(1, 0.9)) == []  # the window before the gap does not count


def test_no_anomaly_never_starts() -> None:
    assert feed(Decider(settings()), [0.49] * 50) == []
