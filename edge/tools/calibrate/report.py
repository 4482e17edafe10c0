"""What calibration tells its user: the terminal table, calibration.json and the curve."""

from __future__ import annotations

import json
import math
from pathlib import Path

from edge.tools.calibrate.sweep import Calibration

JSON_NAME = "calibration.json"
PNG_NAME = "calibration.png"


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
    if not cal.labelled:
        lines.append(f"why: no labelled incidents, so the camera's start_windows ({cal.base.start_windows}) stays, or "
                     "fewer where they reach its threshold; --labelled DIR chooses by recall instead")
    if cal.labelled:
        p = chosen.point
        lines.append(f"labelled: {cal.labelled_count} incident(s), recall {p.recall:.2f}, "
                     f"mean delay {'-' if p.delay_s is None else f'{p.delay_s:.2f} s'}, "
                     f"max delay {'-' if chosen.delay_max_s is None else f'{chosen.delay_max_s:.2f} s'}, "
                     f"{p.labelled_false_alarms} incident(s) outside the labelled intervals")
    return "\n".join(lines)


def write_outputs(cal: Calibration, out_dir: Path, plots: bool) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / JSON_NAME
    path.write_text(json.dumps(cal.to_json(), indent=2) + "\n", encoding="utf-8")
    written = [path]
    if plots:
        from edge.tools.plots import calibration_png

        written.append(calibration_png(out_dir / PNG_NAME, cal))
    return written
