"""Accuracy per quantization mode on the run's group-held-out test clips, with size and runtimes.

Every bundle is scored by ``converter.evaluate`` through the device's own code path
(``BundleModel.predict_window``) on the test clips its run recorded, next to the Keras model on the
same clips. "Runtimes" are the ones the converter verified the bundle in (loaded and matched
TensorFlow's own interpreter within tolerance). This is the table the default mode is chosen from.
"""

from __future__ import annotations

from bench.bundles import Models
from bench.common import Settings, Table
from edge.bundle import read_manifest


def _row(name: str, result: dict, view: str) -> dict:
    scores = result[view]
    return {"model": name, "clips": result["clips"], **{k: round(float(scores[k]), 4)
                                                        for k in ("accuracy", "precision", "recall", "f1")}}


def run(settings: Settings, models: Models) -> Table:
    from converter.evaluate import evaluate
    from converter.runs import find_run
    from edge.bundle import QUANTIZATIONS

    assert settings.model is not None
    found = find_run(settings.model)
    if found is None:
        raise ValueError(f"{settings.model}: no run.json beside it; pass a model from `rclstm-convert train`")
    run_record = found[0]
    view = "binary" if run_record.anomaly_labels else "macro"
    data_dir, cache = run_record.data_dir, settings.work / "frames"
    table = Table("accuracy", f"Accuracy per quantization mode on the held-out test clips ({view} view)",
                  ["model", "clips", "accuracy", "precision", "recall", "f1", "size_kb", "runtimes", "gate"])
    keras = evaluate(settings.model, data_dir, cache=cache)
    table.rows.append({**_row("keras (float32)", keras, view), "size_kb": round(settings.model.stat().st_size / 1024),
                       "runtimes": "tensorflow", "gate": None})
    for mode in settings.pick(("float32", "dynamic"), QUANTIZATIONS):
        converted = models.bundle(mode, "stream")
        manifest = read_manifest(converted.path)
        result = evaluate(converted.path, data_dir, cache=cache)
        table.rows.append({
            **_row(f"bundle {mode}", result, view), "size_kb": round(manifest.size_bytes / 1024),
            "runtimes": ", ".join(f"{c.runtime} {c.version}" for c in manifest.verified_runtimes),
            "gate": "refused (kept for measurement)" if converted.refused else "passed",
        })
        if converted.refused:
            table.notes.append(f"{mode}: {converted.refused}")
    table.extra.update(run_dir=str(run_record.run_dir), view=view, labels=run_record.labels,
                       anomaly_labels=run_record.anomaly_labels)
    table.notes.append(f"model {settings.model}; {keras['clips']} held-out clips ({keras['clips_used']}) of "
                       f"{data_dir}; one window per clip")
    return table
