"""Calibration's inputs: the recordings scored once through the camera's chain, and their labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from edge.adapters.runtime import BundleModel
from edge.bundle import read_manifest
from edge.core.config import Config
from edge.models import resolve_bundle
from edge.tools.calibrate.sweep import Calibration, InputError, Recording, sweep
from edge.tools.scan import VIDEO_SUFFIXES, file_camera, probe, scan, select_camera

Progress = Callable[[str], None]


def labelled_folders(root: Path, labels: Sequence[str], anomaly: Sequence[str]) -> list[tuple[Path, bool]]:
    """(recording, is an incident) from a folder per label; unknown folder names are refused."""
    if not root.is_dir():
        raise InputError(f"--labelled {root}: no such folder; give a folder with one sub-folder per label")
    found: list[tuple[Path, bool]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in labels:
            raise InputError(f"--labelled {folder}: '{folder.name}' is not one of the model's labels "
                              f"({', '.join(labels)}); rename or remove the folder")
        found += [(p, folder.name in anomaly) for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES]
    if not found:
        raise InputError(f"--labelled {root}: no recordings ({', '.join(VIDEO_SUFFIXES)}) in its label folders")
    return found


def read_intervals(path: Path) -> dict[Path, list[tuple[float, float]]]:
    """``path start_s end_s`` per line (# comments, blank lines), paths relative to the file's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--intervals {path}: cannot read it ({exc})") from None
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
            raise InputError(f"--intervals {path}:{number}: expected 'path start_s end_s' with 0 <= start < end, "
                              f"got {raw.strip()!r}")
        recording = Path(parts[0]) if Path(parts[0]).is_absolute() else path.parent / parts[0]
        out.setdefault(recording, []).append((start, end))
    if not out:
        raise InputError(f"--intervals {path}: no intervals in it; add lines 'path start_s end_s'")
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
        raise InputError("no recordings given; pass the camera's recordings without incidents (RECORDING...)")
    if target < 0:
        raise InputError(f"--max-false-alarms-per-day {target:g}: must be 0 or more")
    camera = select_camera(config, camera_id, config_path)
    intervals = read_intervals(intervals_file) if intervals_file is not None else {}
    manifest = read_manifest(resolve_bundle(model_spec or config.model.bundle))
    labelled_paths: list[tuple[Path, bool]] = [(p, True) for p in intervals]
    if labelled_dir is not None:
        labelled_paths = labelled_folders(labelled_dir, manifest.labels, manifest.anomaly_labels)
    for path in [*recordings, *(p for p, _ in labelled_paths)]:
        probe(file_camera(camera, path))  # an unreadable recording fails before any inference
    model = BundleModel.configured(config.model, model_spec)
    decision = config.decision_for(camera, model.recommended_decision())
    classifier = config.classifier_for(camera, model.recommended_classifier())

    def score(path: Path) -> Recording:
        result = scan(file_camera(camera, path), decision, classifier, model, config.device_id, config.site)
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
