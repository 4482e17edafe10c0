"""Pictures for ``replay`` and ``calibrate``: the replay timeline and the calibration curve.

matplotlib is the optional ``plots`` extra (``pip install 'rclstm-edge[plots]'``): a workstation or
an installer's laptop draws these, the device never does, so it is imported only here and only
when a picture is asked for.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.tools.calibrate.sweep import Calibration
    from edge.tools.scan import Scan

PHASE_COLOURS = {"pending": "#f5b700", "open": "#e53935", "cooldown": "#64b5f6"}
DPI = 100


class PlotsMissing(Exception):
    """matplotlib is not installed; the message says how to get it or do without."""


def require_matplotlib() -> Any:
    """pyplot on the file-only backend, or PlotsMissing with the install hint."""
    try:
        import matplotlib
    except ImportError:
        raise PlotsMissing(
            "matplotlib is not installed: pip install 'rclstm-edge[plots]' (or pass --no-plots)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def timeline_png(path: Path, scan: Scan, title: str) -> Path:
    """Score over stream time with the threshold, the hysteresis phase as shading and each incident."""
    plt = require_matplotlib()
    from matplotlib.patches import Patch

    threshold = scan.decision.threshold
    fig, ax = plt.subplots(figsize=(11, 3.6), dpi=DPI)
    try:
        ts = [w.ts for w in scan.windows]
        ax.plot(ts, [w.score for w in scan.windows], color="#212121", linewidth=1.2, label="anomaly score")
        ax.axhline(threshold, color="#6a1b9a", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        for start, end, phase in _phase_spans(scan):
            if phase in PHASE_COLOURS:
                ax.axvspan(start, end, color=PHASE_COLOURS[phase], alpha=0.22, linewidth=0)
        for n, ts in enumerate(scan.scene_cuts):
            ax.axvline(ts, color="#757575", linestyle=":", linewidth=1, label="scene cut" if n == 0 else None)
        for n, incident in enumerate(scan.incidents, 1):
            first = n == 1
            ax.plot([incident.start_ts, incident.end_ts], [1.06, 1.06], color=PHASE_COLOURS["open"], linewidth=5,
                    solid_capstyle="butt", label="incident (started_at..ended_at)" if first else None)
            ax.plot([incident.alert_ts], [1.06], marker="v", color="black", markersize=6, linestyle="none",
                    label="start event sent" if first else None)
            ax.annotate(f"#{n} {incident.label} peak {incident.peak:.2f}", (incident.start_ts, 1.1), fontsize=8)
        handles, _ = ax.get_legend_handles_labels()
        handles += [Patch(color=c, alpha=0.4, label=p) for p, c in PHASE_COLOURS.items()]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
        origin = ""
        if scan.first is not None:
            zero = scan.first.wall - timedelta(seconds=scan.first.ts)
            origin = f" (0 s = {zero.strftime('%Y-%m-%d %H:%M:%S')} UTC)"
        ax.set_xlabel(f"stream time, s{origin}")
        ax.set_ylabel("anomaly score")
        ax.set_ylim(-0.02, 1.18)
        ax.set_xlim(scan.first.ts if scan.first else 0.0, max(scan.last_ts, 1e-3))
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _phase_spans(scan: Scan) -> list[tuple[float, float, str]]:
    """(start, end, phase) runs: a window's phase lasts until the next window (hours of windows, few spans)."""
    spans: list[tuple[float, float, str]] = []
    for window, end in zip(scan.windows, [*(w.ts for w in scan.windows[1:]), scan.last_ts], strict=True):
        if spans and spans[-1][2] == window.phase:
            spans[-1] = (spans[-1][0], end, window.phase)
        else:
            spans.append((window.ts, end, window.phase))
    return spans


def calibration_png(path: Path, calibration: Calibration) -> Path:
    """False alarms per day against the threshold for each start_windows, and recall when it is known."""
    plt = require_matplotlib()

    has_recall = calibration.labelled_count > 0
    rows = 2 if has_recall else 1
    fig, axes = plt.subplots(rows, 1, figsize=(8, 3.4 * rows), dpi=DPI, sharex=True, squeeze=False)
    try:
        fa_ax = axes[0][0]
        for k, curve in sorted(calibration.curves().items()):
            points = [p for p in curve if p.threshold < 1.0]  # the logit axis ends short of 1
            xs = [p.threshold for p in points]
            fa_ax.plot(xs, [p.false_alarms_per_day for p in points], marker=".", markersize=3,
                       label=f"start_windows {k}")
            if has_recall:
                axes[1][0].plot(xs, [p.recall for p in points], marker=".", markersize=3, label=f"start_windows {k}")
        fa_ax.axhline(calibration.target, color="#6a1b9a", linestyle="--", linewidth=1,
                      label=f"target {calibration.target:g}/day")
        chosen = calibration.chosen
        if chosen is not None:
            for ax in (row[0] for row in axes):
                ax.axvline(chosen.threshold, color="#e53935", linewidth=1,
                           label=f"chosen {chosen.threshold:g} (start_windows {chosen.start_windows})")
        fa_ax.set_yscale("symlog", linthresh=1.0)
        fa_ax.set_ylim(bottom=0.0)
        fa_ax.set_ylabel("false alarms per day")
        fa_ax.legend(fontsize=8)
        fa_ax.set_title(f"camera {calibration.camera}: {calibration.hours:.2f} h without incidents", fontsize=10)
        if has_recall:
            axes[1][0].set_ylabel("recall of labelled incidents")
            axes[1][0].set_ylim(-0.02, 1.02)
        # Probabilities crowd near 0 and 1, where thresholds matter most: a logit axis spreads them out.
        axes[-1][0].set_xscale("logit")
        lowest = min((p.threshold for p in calibration.points if p.threshold > 0), default=0.01)
        axes[-1][0].set_xlim(min(lowest, 0.01) / 2, 0.995)
        axes[-1][0].set_xlabel("threshold (logit scale)")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
