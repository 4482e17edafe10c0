"""`rclstm-convert evaluate`: the same metrics for a Keras model or a bundle, on the same held-out clips.

A bundle is scored through ``edge.adapters.runtime.BundleModel.predict_window``, the device's own code path,
so the cost of quantization is one comparison away: evaluate ``model.keras``, then the bundle.
Held-out clips come from ``--run RUN_DIR``, the run.json beside a model, or the test clips a bundle's
manifest records; without any of them every clip in DATA_DIR is scored (and the output says so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from converter import dataset as ds
from converter.metrics import scores
from converter.runs import find_run, held_out, match_sources
from converter.sampling import DEFAULT_HOP, WindowSampling
from converter.sources import Source
from edge.bundle import read_manifest


def _sources(data: Path | list[Source]) -> list[Source]:
    return [Source("", Path(data))] if isinstance(data, (str, Path)) else list(data)


def evaluate(
    model: Path, data: Path | list[Source], run_dir: Path | None = None, cache: Path | None = ds.DEFAULT_CACHE
) -> dict[str, Any]:
    """Scores (see converter.metrics.scores) plus which clips were used and what was evaluated.

    Each clip is scored as training's sampling says (one spread window, or the mean over its
    interval windows); a bundle samples as its manifest says.
    """
    model = Path(model)
    is_bundle = model.is_dir()
    if run_dir is not None:
        found = find_run(Path(run_dir) / "model.keras")
        if found is None:
            raise ds.DataError(f"{run_dir}: no run.json; pass the folder `train --out` wrote")
    else:
        found = None if is_bundle else find_run(model)
    run, split = found if found else (None, 0)
    sources = _sources(data)
    if is_bundle:
        manifest = read_manifest(model)
        frames, size, representation = manifest.input.frames, manifest.input.height, manifest.input.representation
        labels, anomaly = manifest.labels, manifest.anomaly_labels
        sampling = WindowSampling(manifest.sampling.method, frames, manifest.sampling.frame_interval_s,
                                  int(manifest.training.get("hop") or DEFAULT_HOP))
    elif run is not None:
        frames, size, representation = run.frames, run.size, run.representation
        labels, anomaly, sampling = run.labels, run.anomaly_labels, run.window_sampling()
    else:
        raise ds.DataError(f"{model}: no run.json beside the model; pass --run RUN_DIR (the folder `train` wrote)")
    recorded: list[str] | None = None
    if run is not None:
        data_set = held_out(run, split, sources, cache)
        expected = run.split_test_clips(split)
    else:
        recorded = _recorded_test_clips(manifest.training)
        recorded_sources = manifest.training.get("sources")
        names = [str(s).split("=", 1)[0] for s in recorded_sources] if isinstance(recorded_sources, list) else []
        only = set(recorded) if recorded else None
        data_set = ds.load_dataset(match_sources(names or [""], sources), None, frames, size, cache, only=only,
                                   class_map=_class_map(manifest.training), sampling=sampling,
                                   version=manifest.input.preprocess_version, representation=representation)
        expected = recorded or []
    predict = _bundle_predictor(model) if is_bundle else _keras_predictor(model)
    probs = ds.clip_probs(predict, data_set.clips, sampling, representation)
    y = np.array([labels.index(item.clip.label) for item in data_set.clips])
    result = scores(y, probs.argmax(1), labels, anomaly)
    result.update(
        model=str(model),
        kind="bundle" if is_bundle else "keras",
        labels=labels,
        sampling=sampling.method,
        clips_used="held-out test clips of the run" if run or recorded else "every clip in the data folder(s)",
        missing_test_clips=sorted(set(expected) - {c.clip.name for c in data_set.clips}),
    )
    return result


def _recorded_test_clips(training: dict[str, Any]) -> list[str] | None:
    clips = training.get("test_clips")
    return list(clips) if isinstance(clips, list) else None


def _class_map(training: dict[str, Any]) -> dict[str, str]:
    """The class map a bundle's training recorded (``FOLDER=LABEL`` strings)."""
    entries = training.get("class_map") or []
    return dict(entry.split("=", 1) for entry in entries) if isinstance(entries, list) else {}


def _keras_predictor(path: Path) -> Any:
    from converter.convert import load_model

    return ds.keras_predictor(load_model(path))


def _bundle_predictor(path: Path) -> Any:
    from edge.adapters.runtime import BundleModel

    bundle = BundleModel(path)
    return lambda windows: np.stack([bundle.predict_window(w) for w in windows])


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)
