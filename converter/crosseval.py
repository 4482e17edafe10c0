"""`rclstm-convert crosseval`: how well a model detects on cameras it was never trained on.

An installer's cameras are always cameras the model has not seen, and pooled cross-validation
over several datasets overstates that (a model learns each dataset's cameras). So the headline is
**leave-one-source-out** (``loso``): for every source, train on all the others and test on every
clip of the held-out one. For comparison, ``group`` splits every source's groups together (a
quarter held out, stratified on source and label) and scores each source's held-out clips: the
in-source figure, where other scenes of the same cameras were seen in training.

Each protocol runs over ``--seeds`` seeds. Every source is scored twice:

- **per clip**: the clip's class probabilities (the mean over its windows, converter.sampling) and
  the anomaly class being the most probable, as `evaluate` scores;
- **event level**: the clip played through the daemon's sampler and decision rule (converter.events;
  spliced streams of a group's clips for sources whose clips are too short for an incident).

Per protocol, source and level: accuracy, precision, recall, F1 and balanced accuracy (anomaly as
the positive class) on the units of every seed pooled, with 95 % intervals from a bootstrap over
groups (converter.bootstrap), and each seed's point scores. ``results.json`` also records the
options, every seed's train and test clips and every unit's outcome, so two runs can be compared
clip by clip; ``crosseval.png`` draws the bars with intervals for both levels.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from converter import dataset as ds
from converter.bootstrap import DEFAULT_RESAMPLES, METRICS, binary_scores, group_bootstrap
from converter.decision_sweep import sweep_results
from converter.device_rule import classifier_defaults, decision_defaults
from converter.events import Player, clip_stream, needs_splice, score_streams, spliced_streams
from converter.splits import PROTOCOLS, Split, group_split, leave_one_source_out
from converter.train import TEST_FRACTION, TrainOptions, fit, load, strata
from edge.bundle import Figure, RecommendedDecision, SourceResult

RESULTS_NAME = "results.json"
PLOT_NAME = "crosseval.png"
LEVELS = ("clip", "event")


@dataclass
class CrossEvalOptions:
    train: TrainOptions  # sources, model and training settings; ``out`` is where results go
    seeds: int = 2
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    resamples: int = DEFAULT_RESAMPLES
    plots: bool = True
    argv: list[str] = field(default_factory=list)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check(opts: CrossEvalOptions) -> None:
    unknown = [p for p in opts.protocols if p not in PROTOCOLS]
    if unknown or not opts.protocols:
        raise ValueError(f"--protocols {','.join(opts.protocols)}: use one or more of {', '.join(PROTOCOLS)}")
    if opts.seeds < 1 or opts.resamples < 1:
        raise ValueError("--seeds and --bootstrap need at least 1")
    if not opts.train.anomaly_classes:
        raise ValueError("crosseval scores Anomaly vs Normal: pass --anomaly-classes (e.g. fight)")
    if "loso" in opts.protocols and len(opts.train.source_list()) < 2:
        raise ValueError("leave-one-source-out needs two or more sources: pass DATA as NAME=PATH NAME=PATH ...")


def _splits(data: ds.Dataset, protocol: str, seed: int) -> list[tuple[str, Split]]:
    """(label, split) pairs for one protocol and seed: one per held-out source (loso) or one pooled split."""
    sources = [d.clip.source for d in data.clips]
    if protocol == "loso":
        return [(s.name, leave_one_source_out(sources, s.name)) for s in data.sources]
    groups = [d.clip.group for d in data.clips]
    return [("pooled", group_split(strata(data), groups, TEST_FRACTION, seed))]


def _event_interval(data: ds.Dataset, opts: TrainOptions) -> float:
    """The interval the device would sample at: the run's own (interval) or the median spread (spread)."""
    sampling = opts.window_sampling().manifest([(len(d.frames), d.fps) for d in data.clips])
    return float(sampling["frame_interval_s"])


def _score(
    model: Any, data: ds.Dataset, test: np.ndarray, opts: TrainOptions, seed: int, interval: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Clip units, event units (one per clip or spliced span) and each stream's window scores, per source."""
    settings, classifier = decision_defaults(), classifier_defaults(opts.hop)
    anomaly_index = [data.labels.index(a) for a in opts.anomaly_classes]
    predict = ds.keras_predictor(model)
    items = [data.clips[i] for i in test]
    probs = ds.clip_probs(predict, items, opts.window_sampling(), opts.representation)
    clip_units = []
    for item, p in zip(items, probs, strict=True):
        predicted = data.labels[int(np.argmax(p))]
        clip_units.append({"clip": item.clip.name, "group": item.clip.group, "source": item.clip.source,
                           "label": item.clip.label, "anomalous": item.clip.label in opts.anomaly_classes,
                           "predicted": predicted, "alarm": predicted in opts.anomaly_classes,
                           "score": round(float(p[anomaly_index].sum()), 4)})
    player = Player(predict, opts.representation, opts.frames, interval, settings, tuple(anomaly_index), classifier)
    event_units, windows = [], []
    for source in dict.fromkeys(item.clip.source for item in items):
        mine = [item for item in items if item.clip.source == source]
        truth = [item.clip.label in opts.anomaly_classes for item in mine]
        if needs_splice(mine, interval, opts.frames, settings, classifier.hop):
            streams = spliced_streams(mine, truth, seed)
        else:
            streams = [clip_stream(item, t) for item, t in zip(mine, truth, strict=True)]
        found, played = score_streams(player, streams)
        event_units += found
        windows += played
    return clip_units, event_units, windows


def _summaries(units: list[dict[str, Any]], resamples: int) -> list[dict[str, Any]]:
    """Per protocol, level and source: pooled scores with group-bootstrap intervals and per-seed scores."""
    out = []
    keys = dict.fromkeys((u["protocol"], u["level"], u["source"]) for u in units)
    for protocol, level, source in keys:
        mine = [u for u in units if (u["protocol"], u["level"], u["source"]) == (protocol, level, source)]
        truth, alarm = [u["anomalous"] for u in mine], [u["alarm"] for u in mine]
        seeds = sorted({u["seed"] for u in mine})
        per_seed = []
        for seed in seeds:
            part = [u for u in mine if u["seed"] == seed]
            per_seed.append({"seed": seed, "units": len(part),
                             **binary_scores([u["anomalous"] for u in part], [u["alarm"] for u in part])})
        out.append({
            "protocol": protocol, "level": level, "source": source,
            "unit": "span" if any(u.get("spliced") for u in mine) else "clip",
            "units": len(mine), "units_per_seed": len(mine) // len(seeds), "groups": len({u["group"] for u in mine}),
            "anomalous_units": int(sum(truth)), "seeds": seeds,
            "metrics": group_bootstrap(truth, alarm, [u["group"] for u in mine], resamples, seed=0),
            "per_seed": per_seed,
        })
    return out


def crosseval(opts: CrossEvalOptions) -> dict[str, Any]:
    """Train and score every protocol x seed (x held-out source); write results.json and the plot; return them.

    The results are rewritten after every trained model (``complete`` false until the last), so a
    long real-data run that is stopped keeps what it measured.
    """
    _check(opts)
    topts = opts.train
    data = load(topts)
    interval = _event_interval(data, topts)
    out = Path(topts.out)
    out.mkdir(parents=True, exist_ok=True)
    header = _header(opts, data, interval)
    units: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    planned = [(protocol, seed) for protocol in opts.protocols for seed in range(topts.seed, topts.seed + opts.seeds)]
    for step, (protocol, seed) in enumerate(planned, 1):
        splits = _splits(data, protocol, seed)
        for part, (held, (train_idx, test_idx)) in enumerate(splits, 1):
            _log(f"{protocol} seed {seed}, test {held}: {len(train_idx)} train clips, {len(test_idx)} test clips")
            model, _, record = fit(data, train_idx, topts, seed)
            clip_units, event_units, windows = _score(model, data, test_idx, topts, seed, interval)
            streams += [{"protocol": protocol, "seed": seed, **w} for w in windows]
            for level, found in zip(LEVELS, (clip_units, event_units), strict=True):
                units += [{"protocol": protocol, "seed": seed, "level": level, **u} for u in found]
            runs.append({"protocol": protocol, "seed": seed, "test": held, **record,
                         "train_clip_names": [data.clips[i].clip.name for i in train_idx],
                         "test_clip_names": [data.clips[i].clip.name for i in test_idx]})
            complete = step == len(planned) and part == len(splits)
            results = {**header, "complete": complete, "summary": _summaries(units, opts.resamples), "runs": runs,
                       "units": units, "streams": streams}
            if complete:
                results["decision_sweep"] = sweep_results(results)
            (out / RESULTS_NAME).write_text(json.dumps(_finite(results), indent=1) + "\n", encoding="utf-8")
            if opts.plots:
                plot(results, out / PLOT_NAME)
    return results


def _header(opts: CrossEvalOptions, data: ds.Dataset, interval: float) -> dict[str, Any]:
    """What was run on what: everything in results.json but the outcomes."""
    topts = opts.train
    return {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": opts.argv,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(topts).items()
                    if k not in ("sources", "out")},
        "sources": [{"name": s.name, "path": str(s.path.resolve()),
                     "clips": sum(d.clip.source == s.name for d in data.clips),
                     "groups": len({d.clip.group for d in data.clips if d.clip.source == s.name}),
                     "skipped": [f"{n}: {r}" for n, r in data.skipped if n.startswith(f"{s.name}/")]}
                    for s in data.sources],
        "labels": data.labels,
        "anomaly_labels": topts.anomaly_classes,
        "class_map": topts.class_map,
        "grouping": data.grouping,
        "sampling": topts.window_sampling().manifest([(len(d.frames), d.fps) for d in data.clips]),
        "event_interval_s": interval,
        "decision": decision_defaults().model_dump(),
        "classifier": classifier_defaults(topts.hop).model_dump(),
        "seeds": list(range(topts.seed, topts.seed + opts.seeds)),
        "protocols": opts.protocols,
        "bootstrap": {"resamples": opts.resamples, "level": 0.95, "resampled": "groups", "pooled_over": "seeds"},
    }


def _finite(value: Any) -> Any:
    """NaN (an interval no resample defines) as JSON null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


@contextlib.contextmanager
def _results_file(path: Path) -> Iterator[dict[str, Any]]:
    """A results.json's content; any way it is not one (unreadable, not JSON, a key missing) is one line."""
    try:
        yield json.loads(Path(path).read_text(encoding="utf-8"))
    except ds.DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ds.DataError(f"{path}: not a crosseval results.json ({exc}); pass the file `crosseval --out` wrote") \
            from None


def rescore(path: Path) -> dict[str, Any]:
    """Re-derive a finished run's event level from its recorded window scores under today's span rules.

    The model is not run again: every event stream's window scores are in results.json, so when the
    rules that turn incidents into found / false-alarm spans change (see converter.events), a run of
    hours is brought up to date in seconds. Rewrites the file; returns the results.
    """
    from converter.decision_sweep import replay_units

    path = Path(path)
    with _results_file(path) as results:
        if not results.get("streams"):
            raise ds.DataError(f"{path}: no window scores recorded (a run from before they were); run crosseval again")
        replay_units(results)
        results["summary"] = _summaries(results["units"], results["bootstrap"]["resamples"])
        if results.get("complete"):
            results["decision_sweep"] = sweep_results(results)
    path.write_text(json.dumps(_finite(results), indent=1) + "\n", encoding="utf-8")
    return results


def manifest_rows(path: Path) -> tuple[list[SourceResult], bool]:
    """A results.json's summary as the manifest records it, and whether the run had finished.

    Read here, beside the writer, so the bundle and the crosseval file cannot disagree on the layout.
    """
    with _results_file(path) as results:
        rows = [SourceResult(protocol=r["protocol"], level=r["level"], source=r["source"], units=r["units"],
                             seeds=r["seeds"], **{m: Figure(**r["metrics"][m]) for m in METRICS})
                for r in results["summary"]]
    return rows, bool(results.get("complete"))


def manifest_decision(path: Path) -> RecommendedDecision | None:
    """The sweep's chosen decision settings as the manifest records them (None for a run without a sweep)."""
    with _results_file(path) as results:
        sweep = results.get("decision_sweep")
        if not sweep:
            return None
        best, worst_before = sweep["best"], sweep["current"]["worst_balanced_accuracy"]
        return RecommendedDecision(
            threshold=best["threshold"], start_windows=best["start_windows"], hop=results["classifier"]["hop"],
            chosen_by=f"crosseval {sweep['protocol']} sweep: worst held-out source's event balanced accuracy "
                      f"{best['worst_balanced_accuracy']:.3f} (shipped defaults: {worst_before:.3f})"
                      + (f", calm spans alarming at most {best['worst_false_alarm_rate']:.0%} "
                         f"(cap {sweep['false_alarm_cap']:.0%})" if "false_alarm_cap" in sweep else ""))


def summary_table(results: dict[str, Any]) -> str:
    """One row per protocol, level and source: every metric as value [low, high]."""
    lines = [f"{'protocol':<9}{'level':<7}{'source':<16}{'units':>6}  " + "  ".join(f"{m:<21}" for m in METRICS)]
    for row in results["summary"]:
        cells = []
        for metric in METRICS:
            m = row["metrics"][metric]
            low, high = (f"{v:.2f}" if v is not None and not math.isnan(v) else "-" for v in (m["low"], m["high"]))
            cells.append(f"{m['value']:.3f} [{low}, {high}]".ljust(21))
        lines.append(f"{row['protocol']:<9}{row['level']:<7}{row['source']:<16}{row['units']:>6}  " + "  ".join(cells))
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
    """Per source, each metric's bar with its 95 % interval; one panel per level, protocols side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = results["summary"]
    columns = list(dict.fromkeys((r["protocol"], r["source"]) for r in rows))
    fig, axes = plt.subplots(len(LEVELS), 1, figsize=(max(6.0, 2.2 * len(columns)), 3.6 * len(LEVELS)), squeeze=False)
    width = 0.8 / len(METRICS)
    for ax, level in zip(axes[:, 0], LEVELS, strict=True):
        for k, metric in enumerate(METRICS):
            values, errors = [], [[], []]
            for protocol, source in columns:
                row = next((r for r in rows if (r["protocol"], r["source"], r["level"]) == (protocol, source, level)),
                           None)
                m = row["metrics"][metric] if row else {"value": 0.0, "low": None, "high": None}
                values.append(m["value"])
                low = m["low"] if m["low"] is not None and not math.isnan(m["low"]) else m["value"]
                high = m["high"] if m["high"] is not None and not math.isnan(m["high"]) else m["value"]
                errors[0].append(max(m["value"] - low, 0.0))
                errors[1].append(max(high - m["value"], 0.0))
            x = np.arange(len(columns)) + (k - (len(METRICS) - 1) / 2) * width
            ax.bar(x, values, width, yerr=errors, capsize=2, label=metric.replace("_", " "))
        ax.set_xticks(range(len(columns)), [f"{s}\n({p})" for p, s in columns])
        ax.set_ylim(0, 1.3)
        ax.axhline(0.5, color="grey", linewidth=0.5, linestyle=":")
        seeds = {seed for r in rows if r["level"] == level for seed in r["seeds"]}
        partial = "" if results.get("complete", True) else " (run still going)"
        ax.set_title(f"{level} level, {len(seeds)} seed(s) pooled, 95 % group-bootstrap intervals{partial}")
        ax.legend(fontsize="small", ncol=len(METRICS), loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
