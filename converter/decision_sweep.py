"""Re-choose the daemon's decision settings from leave-one-source-out window scores.

The decision rule (threshold, windows in a row to open an incident) turns a model's window scores
into what a user sees. A setting tuned on the cameras a model was trained on flatters it, so the
sweep replays the window scores that ``crosseval`` recorded for each *held-out* source through the
daemon's rule (``converter.device_rule``) at every setting of a small grid, with the same span rules
as the event-level figures (``converter.events.span_alarms``), and picks the setting whose worst
source is best: an installer's camera may be like either source. The model is not run again.

Balanced accuracy alone weighs a calm clip's false alarm the same as a missed fight, and at the
low thresholds that buy the last few fights a store would see an incident open on half its calm
footage (measured on version 1 of the shipped flow model: the uncapped best, 0.35 / 3 windows, alarmed on 50 %
of fight-surv's calm clips for 0.013 more worst-source balanced accuracy than 0.5 / 3, which
alarms on 19 %; on the benchmark's 74 s stream 0.35 held one incident open through the calm
and 0.5 found all three fights with one false start). So a setting qualifies only if no source's
calm spans alarm more often than ``FALSE_ALARM_CAP``; the cap is the user's side of the trade.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from converter.bootstrap import binary_scores
from converter.device_rule import incident_times
from converter.events import Span, incident_tail_s, span_alarms
from edge.core.config import DecisionConfig

THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(13))  # 0.30 .. 0.90
START_WINDOWS = (1, 2, 3, 4)
FALSE_ALARM_CAP = 0.2  # the share of a source's calm spans that may raise an alarm
OBJECTIVE = (f"the highest balanced accuracy of the worst held-out source (ties: the higher mean over sources) "
             f"among settings under which at most {FALSE_ALARM_CAP:.0%} of each source's calm spans raise an alarm "
             f"(if none does: the fewest false alarms on the worst source)")


def _streams(results: dict[str, Any], protocol: str | None = None
             ) -> list[tuple[dict[str, Any], list[dict[str, Any]], list[Span]]]:
    """(window scores, event units, their spans) of every recorded stream (of one protocol, if named)."""
    units: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for unit in results["units"]:
        if unit["level"] == "event":
            units.setdefault((unit["protocol"], unit["seed"], unit["stream"]), []).append(unit)
    out = []
    for windows in results.get("streams", []):
        mine = units.get((windows["protocol"], windows["seed"], windows["stream"]), [])
        if mine and protocol in (None, windows["protocol"]):
            out.append((windows, mine, [Span(u["clip"], u["start_s"], u["end_s"], u["anomalous"]) for u in mine]))
    return out


def _alarms(results: dict[str, Any], settings: DecisionConfig, spans: list[Span], windows: dict[str, Any]
            ) -> tuple[list[bool], list[tuple[float, float]]]:
    """The spans' alarms and the incidents had the daemon used ``settings`` on one recorded stream."""
    interval = results["event_interval_s"]
    window_s = results["options"]["frames"] * interval
    tail_s = incident_tail_s(window_s, settings.end_windows, results["classifier"]["hop"], interval)
    found = incident_times(windows["ts"], windows["scores"], settings)
    return span_alarms(spans, found, window_s, tail_s), found


def replay(results: dict[str, Any], settings: DecisionConfig, protocol: str = "loso") -> dict[str, dict[str, Any]]:
    """Per source: binary scores of its spans (pooled over seeds) had the daemon used ``settings``."""
    truth: dict[str, list[bool]] = {}
    alarms: dict[str, list[bool]] = {}
    for windows, _, spans in _streams(results, protocol):
        truth.setdefault(windows["source"], []).extend(span.anomalous for span in spans)
        alarms.setdefault(windows["source"], []).extend(_alarms(results, settings, spans, windows)[0])
    return {source: {"units": len(truth[source]), **binary_scores(truth[source], alarms[source]),
                     "false_alarm_rate": _false_alarm_rate(truth[source], alarms[source])} for source in truth}


def _false_alarm_rate(truth: Sequence[bool], alarms: Sequence[bool]) -> float:
    """The share of calm spans that raised an alarm (0 when a source has none)."""
    calm = [alarm for anomalous, alarm in zip(truth, alarms, strict=True) if not anomalous]
    return sum(calm) / len(calm) if calm else 0.0


def replay_units(results: dict[str, Any]) -> None:
    """Recompute every event unit's alarm and incidents in place at the run's own decision settings."""
    settings = DecisionConfig(**results["decision"])
    for windows, units, spans in _streams(results):
        alarms, found = _alarms(results, settings, spans, windows)
        for unit, alarm in zip(units, alarms, strict=True):
            unit["alarm"] = alarm
            unit["incidents"] = [[round(a, 3), round(c, 3)] for a, c in found]


def _row(results: dict[str, Any], settings: DecisionConfig, protocol: str) -> dict[str, Any]:
    per_source = replay(results, settings, protocol)
    balanced = [s["balanced_accuracy"] for s in per_source.values()]
    return {"threshold": settings.threshold, "start_windows": settings.start_windows, "per_source": per_source,
            "worst_balanced_accuracy": min(balanced, default=0.0),
            "worst_false_alarm_rate": max((s["false_alarm_rate"] for s in per_source.values()), default=0.0),
            "mean_balanced_accuracy": sum(balanced) / len(balanced) if balanced else 0.0}


def sweep_results(
    results: dict[str, Any],
    protocol: str = "loso",
    thresholds: Sequence[float] = THRESHOLDS,
    start_windows: Sequence[int] = START_WINDOWS,
) -> dict[str, Any]:
    """Every grid setting's per-source event scores, the current defaults' and the best by ``OBJECTIVE``."""
    base = DecisionConfig(**results["decision"])
    rows = [_row(results, base.model_copy(update={"threshold": t, "start_windows": k}), protocol)
            for t in thresholds for k in start_windows]
    allowed = [r for r in rows if r["worst_false_alarm_rate"] <= FALSE_ALARM_CAP]
    if allowed:
        best = max(allowed, key=lambda r: (r["worst_balanced_accuracy"], r["mean_balanced_accuracy"]))
    else:
        best = min(rows, key=lambda r: (r["worst_false_alarm_rate"], -r["worst_balanced_accuracy"]))
    return {"protocol": protocol, "objective": OBJECTIVE, "false_alarm_cap": FALSE_ALARM_CAP,
            "current": _row(results, base, protocol), "best": best, "rows": rows}


def sweep_table(sweep: dict[str, Any]) -> str:
    """The current defaults and the chosen setting, per source."""
    lines = [f"decision sweep over {sweep['protocol']} window scores; objective: {sweep['objective']}"]
    for name in ("current", "best"):
        row = sweep[name]
        parts = ", ".join(f"{src} BA {s['balanced_accuracy']:.3f} recall {s['recall']:.3f} "
                          f"false alarms {s['false_alarm_rate']:.3f}" for src, s in row["per_source"].items())
        lines.append(f"{name:8s} threshold {row['threshold']:.2f} start_windows {row['start_windows']}: {parts}")
    return "\n".join(lines)
