"""`rclstm-convert evaluate`: the same metrics for a Keras model or a bundle, on the same held-out clips.

A bundle is scored through ``edge.runtime.BundleModel.predict_window``, the device's own code path,
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
from converter.runs import find_run, held_out, test_clips
from edge.bundle import read_manifest


def evaluate(
    model: Path, data_dir: Path, run_dir: Path | None = None, cache: Path | None = ds.DEFAULT_CACHE
) -> dict[str, Any]:
    """Scores (see converter.metrics.scores) plus which clips were used and what was evaluated."""
    model = Path(model)
    is_bundle = model.is_dir()
    if run_dir is not None:
        found = find_run(Path(run_dir) / "model.keras")
        if found is None:
            raise ds.DataError(f"{run_dir}: no run.json; pass the folder `train --out` wrote")
    else:
        found = None if is_bundle else find_run(model)
    run, split = found if found else (None, 0)
    recorded = None
    if is_bundle:
        manifest = read_manifest(model)
        frames, size, representation = manifest.input.frames, manifest.input.height, manifest.input.representation
        labels, anomaly = manifest.labels, manifest.anomaly_labels
        recorded = manifest.training.get("test_clips") if run is None else None
    elif run is not None:
        frames, size, representation = run["frames"], run["size"], run["representation"]
        labels, anomaly = run["labels"], run["anomaly_labels"]
    else:
        raise ds.DataError(f"{model}: no run.json beside the model; pass --run RUN_DIR (the folder `train` wrote)")
    if run is not None:
        data = held_out(run, split, data_dir, cache, frames, size)
    else:
        only = set(recorded) if isinstance(recorded, list) else None
        data = ds.load_dataset(data_dir, labels, frames, size, cache, only=only)
    predict = _bundle_predictor(model) if is_bundle else _keras_predictor(model)
    windows = ds.windows(data.clips, frames, representation)
    probs = predict(windows)
    y = np.array([labels.index(item.clip.label) for item in data.clips])
    result = scores(y, probs.argmax(1), labels, anomaly)
    result.update(
        model=str(model),
        kind="bundle" if is_bundle else "keras",
        labels=labels,
        clips_used="held-out test clips of the run" if run or recorded else "every clip in the data folder",
        missing_test_clips=sorted(set(test_clips(run, split)) - {c.clip.name for c in data.clips}) if run else [],
    )
    return result


def _keras_predictor(path: Path) -> Any:
    from converter.convert import load_model

    model = load_model(path)
    return lambda windows: model.predict(windows, batch_size=8, verbose=0)


def _bundle_predictor(path: Path) -> Any:
    from edge.adapters.runtime import BundleModel

    bundle = BundleModel(path)
    return lambda windows: np.stack([bundle.predict_window(w) for w in windows])


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)
