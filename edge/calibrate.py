"""Per-camera threshold from evidence: the lowest one that keeps false alarms at or under a target.

Usage::

    rclstm-edge calibrate --config /etc/rclstm-edge/config.toml --camera door day1.mp4 day2.mp4 \\
        [--max-false-alarms-per-day 1] [--labelled DIR | --intervals FILE] [--write] [--out DIR]

The recordings are that camera's ordinary days, with no incident in them: every incident the
decision logic opens on them is a false alarm, and false alarms per day = incidents / recorded
hours * 24. Each recording goes once through the daemon's own chain (``edge.replay.scan``, with the
camera's settings, hop included); the sweep then replays only the ``Decider`` over the cached window
scores for every threshold and ``start_windows`` in 1..4 (end_windows, cooldown and hop stay as
configured: changing hop would need the model again).

For each ``start_windows`` the threshold chosen is the lowest one from which every higher threshold
also meets the target (a threshold that passes only because a cooldown happened to merge two false
alarms is not a safe setting). Thresholds are searched on a 0.01 grid and then to 4 decimals just
under the lowest passing grid point, at the scores where the count can change. The margin is how
far the chosen threshold is above the highest run of ``start_windows`` no-incident windows that
stays under it: how much the scores of an ordinary day would have to rise to raise an alarm.

Labelled recordings (``--labelled DIR`` with a folder per label, where folders named for one of the
model's anomaly labels hold incidents from start to end and the others none; or ``--intervals FILE``
with lines ``path start_s end_s``, paths relative to the file) give the recall of incidents and the
detection delay (from the labelled start to the start event) at each setting; the ``start_windows``
with the best recall is chosen then, else the smallest. Incidents in labelled recordings outside
the labelled intervals are reported, not counted in the rate: those recordings are not ordinary days.

Writes ``calibration.json`` and ``calibration.png`` (the curve; needs the ``plots`` extra, or pass
``--no-plots``) to ``--out``; ``--write`` sets ``threshold`` and ``start_windows`` in the camera's
``[cameras.decision]`` table with a minimal text edit, so comments and the rest of the file survive,
and refuses to write when the edit would change anything else or the result does not validate.
"""

from __future__ import annotations

import copy
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import read_manifest
from edge.classifier import Prediction
from edge.config import Config, ConfigError, DecisionConfig, validate_config
from edge.decision import Decider
from edge.models import resolve_bundle
from edge.replay import VIDEO_SUFFIXES, ReplayError, file_camera, load_model, probe, scan, select_camera

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

START_WINDOWS = (1, 2, 3, 4)
# A threshold of 1 would mean "never alarm": the search stays below it.
GRID = tuple(round(0.01 * i, 2) for i in range(1, 100))
DIGITS = 4
JSON_NAME = "calibration.json"
PNG_NAME = "calibration.png"

Progress = Callable[[str], None]


class CalibrationError(Exception):
    """No setting meets the target, or the config cannot be edited safely; one line."""


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


def _between(lower: float, upper: float) -> set[float]:
    """Every DIGITS-decimal threshold strictly between two grid points."""
    lo, hi = round(lower * 10**DIGITS), round(upper * 10**DIGITS)
    return {round(n / 10**DIGITS, DIGITS) for n in range(lo + 1, hi)}


def sweep(quiet: list[Recording], labelled: list[Recording], base: DecisionConfig, window_s: float,
          target: float, camera: str) -> Calibration:
    """Every setting's false-alarm rate (and recall), the choice per start_windows, and the overall choice."""
    if not sum(len(r.predictions) for r in quiet):
        raise ReplayError("the recordings are too short for a single window; give longer recordings")
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
            chosen = min(feasible, key=lambda c: c.start_windows)
    return Calibration(camera, target, base, window_s, quiet, labelled, list(search.points.values()), options, chosen)


# -- inputs -------------------------------------------------------------------------------------------


def labelled_folders(root: Path, labels: Sequence[str], anomaly: Sequence[str]) -> list[tuple[Path, bool]]:
    """(recording, is an incident) from a folder per label; unknown folder names are refused."""
    if not root.is_dir():
        raise ReplayError(f"--labelled {root}: no such folder; give a folder with one sub-folder per label")
    found: list[tuple[Path, bool]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in labels:
            raise ReplayError(f"--labelled {folder}: '{folder.name}' is not one of the model's labels "
                              f"({', '.join(labels)}); rename or remove the folder")
        found += [(p, folder.name in anomaly) for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES]
    if not found:
        raise ReplayError(f"--labelled {root}: no recordings ({', '.join(VIDEO_SUFFIXES)}) in its label folders")
    return found


def read_intervals(path: Path) -> dict[Path, list[tuple[float, float]]]:
    """``path start_s end_s`` per line (# comments, blank lines), paths relative to the file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayError(f"--intervals {path}: cannot read it ({exc})") from None
    out: dict[Path, list[tuple[float, float]]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(maxsplit=2)
        try:
            start, end = float(parts[1]), float(parts[2])
            ok = len(parts) == 3 and 0 <= start < end
        except (IndexError, ValueError):
            ok = False
        if not ok:
            raise ReplayError(f"--intervals {path}:{number}: expected 'path start_s end_s' with 0 <= start < end, "
                              f"got {raw.strip()!r}")
        recording = Path(parts[0]) if Path(parts[0]).is_absolute() else path.parent / parts[0]
        out.setdefault(recording, []).append((start, end))
    if not out:
        raise ReplayError(f"--intervals {path}: no intervals in it; add lines 'path start_s end_s'")
    return out


def calibrate(
    config: Config,
    camera_id: str,
    recordings: Sequence[Path],
    *,
    target: float,
    config_path: Path | None = None,
    labelled_dir: Path | None = None,
    intervals_file: Path | None = None,
    model_spec: str | None = None,
    progress: Progress | None = None,
) -> Calibration:
    """Score every recording once with the camera's chain, then sweep the decision settings."""
    if not recordings:
        raise ReplayError("no recordings given; pass the camera's recordings without incidents (RECORDING...)")
    if target < 0:
        raise ReplayError(f"--max-false-alarms-per-day {target:g}: must be 0 or more")
    camera = select_camera(config, camera_id, config_path)
    intervals = read_intervals(intervals_file) if intervals_file is not None else {}
    manifest = read_manifest(resolve_bundle(model_spec or config.model.bundle))
    labelled_paths: list[tuple[Path, bool]] = [(p, True) for p in intervals]
    if labelled_dir is not None:
        labelled_paths = labelled_folders(labelled_dir, manifest.labels, manifest.anomaly_labels)
    for path in [*recordings, *(p for p, _ in labelled_paths)]:
        probe(file_camera(camera, path))  # an unreadable recording fails before any inference
    model = load_model(config, model_spec)
    decision = config.decision_for(camera)

    def score(path: Path) -> Recording:
        result = scan(file_camera(camera, path), decision, model, config.device_id, config.site)
        if progress is not None:
            top = max((w.score for w in result.windows), default=0.0)
            progress(f"scored {path}: {result.duration_s:.1f} s, {len(result.windows)} windows, max score {top:.4g}")
        return Recording(path, result.duration_s, [w.prediction for w in result.windows])

    quiet = [score(p) for p in recordings]
    labelled = []
    for path, incident in labelled_paths:
        recording = score(path)
        if path in intervals:
            recording.intervals = intervals[path]
        elif incident and recording.predictions:
            recording.intervals = [(0.0, recording.duration_s)]
        labelled.append(recording)
    return sweep(quiet, labelled, decision, manifest.sampling.window_s, target, camera.id)


def report(cal: Calibration) -> str:
    """The terminal table: each start_windows' setting, then the choice and what it rests on."""
    hours = cal.hours
    lines = [
        f"calibrate camera {cal.camera}: {len(cal.quiet)} recording(s), {hours:.3f} h without incidents, "
        f"{sum(len(r.predictions) for r in cal.quiet)} windows; target <= {cal.target:g} false alarm(s)/day",
        f"{'start_windows':>13} {'threshold':>9} {'incidents':>9} {'FA/day':>8} {'margin':>8} {'recall':>7} "
        f"{'delay s':>8}",
    ]
    for k, choice in sorted(cal.options.items()):
        if choice is None:
            lines.append(f"{k:>13} {'-':>9}  no threshold meets the target")
            continue
        p = choice.point
        recall = "-" if p.recall is None else f"{p.recall:.2f}"
        delay = "-" if p.delay_s is None else f"{p.delay_s:.2f}"
        margin = "-" if choice.margin is None else f"{choice.margin:.2g}"
        lines.append(f"{k:>13} {p.threshold:>9g} {p.incidents:>9d} {p.false_alarms_per_day:>8.2f} {margin:>8} "
                     f"{recall:>7} {delay:>8}")
    one = 24.0 / hours if hours else math.inf
    if one > cal.target:
        lines.append(f"note: one false alarm in {hours:.3f} h is {one:.0f}/day, over the target: the target needs "
                     f"no alarm at all here; record at least {24.0 / cal.target if cal.target else math.inf:.0f} h "
                     "to measure the rate itself")
    chosen = cal.chosen
    if chosen is None:
        return "\n".join(lines)
    quiet = "-" if chosen.highest_quiet_run is None else f"{chosen.highest_quiet_run:.6g}"
    lines.append(f"chosen: threshold {chosen.threshold:g}, start_windows {chosen.start_windows} "
                 f"({chosen.point.false_alarms_per_day:.2f} false alarms/day; highest no-incident run {quiet}, "
                 f"margin {'-' if chosen.margin is None else f'{chosen.margin:.2g}'})")
    if cal.labelled:
        p = chosen.point
        lines.append(f"labelled: {cal.labelled_count} incident(s), recall {p.recall:.2f}, "
                     f"mean delay {'-' if p.delay_s is None else f'{p.delay_s:.2f} s'}, "
                     f"max delay {'-' if chosen.delay_max_s is None else f'{chosen.delay_max_s:.2f} s'}, "
                     f"{p.labelled_false_alarms} incident(s) outside the labelled intervals")
    return "\n".join(lines)


def write_outputs(cal: Calibration, out_dir: Path, plots: bool) -> list[Path]:
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / JSON_NAME
    path.write_text(json.dumps(cal.to_json(), indent=2) + "\n", encoding="utf-8")
    written = [path]
    if plots:
        from edge.plots import calibration_png

        written.append(calibration_png(out_dir / PNG_NAME, cal))
    return written


# -- writing the choice into the config ---------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(?:#.*)?$")


def _headers(lines: list[str]) -> list[tuple[int, str, str]]:
    """(line index, '[' or '[[', dotted name without spaces) of every table header."""
    out = []
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m:
            out.append((i, m.group(1), re.sub(r"\s*\.\s*", ".", m.group(2))))
    return out


def _set_keys(lines: list[str], first: int, stop: int, values: dict[str, str], prefix: str = "") -> None:
    """Replace ``prefix+key = ...`` lines in [first, stop), keeping comments; append missing keys after the last one."""
    last = first - 1
    for key, value in values.items():
        pattern = re.compile(rf"^(\s*{re.escape(prefix + key)}\s*=\s*)([^#\n]*?)(\s*(?:#.*)?)(\r?\n)?$")
        for i in range(first, stop):
            m = pattern.match(lines[i])
            if m:
                lines[i] = f"{m.group(1)}{value}{m.group(3)}{m.group(4) or ''}"
                break
        else:
            for i in range(first, stop):
                if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                    last = i
            insert_at = max(last + 1, first)
            lines.insert(insert_at, f"{prefix}{key} = {value}\n")
            stop += 1


def edit_decision(text: str, camera_id: str, threshold: float, start_windows: int) -> str:
    """The config text with the camera's decision threshold and start_windows set, nothing else changed."""
    data = tomllib.loads(text)
    cameras = data.get("cameras")
    ids = [c.get("id") for c in cameras] if isinstance(cameras, list) else []
    if camera_id not in ids:
        raise CalibrationError(f"camera {camera_id} is not in the config file; add its [[cameras]] table first")
    index = ids.index(camera_id)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    headers = _headers(lines)
    starts = [i for i, kind, name in headers if kind == "[[" and name == "cameras"]
    if len(starts) != len(ids):
        raise CalibrationError("the cameras are not all written as [[cameras]] tables")
    start = starts[index]
    later = [(i, kind, name) for i, kind, name in headers if i > start]
    end = next((i for i, kind, name in later if not name.startswith("cameras.")), len(lines))
    body_end = later[0][0] if later else len(lines)
    values = {"threshold": repr(round(threshold, DIGITS)), "start_windows": str(start_windows)}
    decision = next((i for i, kind, name in later if i < end and kind == "[" and name == "cameras.decision"), None)
    inline = "decision" in cameras[index]
    if decision is not None:
        stop = next((i for i, _, _ in later if i > decision), len(lines))
        _set_keys(lines, decision + 1, stop, values)
    elif inline:
        _set_keys(lines, start + 1, body_end, values, prefix="decision.")
    else:
        content = end
        while content > start + 1 and not lines[content - 1].strip():
            content -= 1
        block = ["\n", "[cameras.decision]\n", *(f"{k} = {v}\n" for k, v in values.items())]
        lines[content:content] = block
    edited = "".join(lines)
    expected = copy.deepcopy(data)
    expected["cameras"][index].setdefault("decision", {}).update(threshold=round(threshold, DIGITS),
                                                                 start_windows=start_windows)
    try:
        same = tomllib.loads(edited) == expected
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        raise CalibrationError(
            f"cannot edit the config safely (an unusual layout); set threshold = {values['threshold']} and "
            f"start_windows = {start_windows} under [cameras.decision] of camera {camera_id} by hand"
        )
    return edited


def write_decision(path: Path, camera_id: str, threshold: float, start_windows: int) -> None:
    """Edit the file in place (atomically, mode kept); the edited text is validated before it is written."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc})"]) from None
    edited = edit_decision(text, camera_id, threshold, start_windows)
    validate_config(tomllib.loads(edited))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(edited)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
