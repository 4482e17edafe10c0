"""The paper's Table 3 columns (accuracy, precision, recall, F1) per class, macro and Normal/Anomaly.

numpy only, so the same numbers come out for a Keras model and a bundle. A class never predicted
has precision 0 (not NaN): a collapsed model must look bad in the table, not blank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COLUMNS = ("accuracy", "precision", "recall", "f1")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def _prf(tp: float, fp: float, fn: float) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def scores(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], anomaly_labels: Sequence[str] = ()
) -> dict[str, object]:
    """Per-class, macro and (when anomaly labels are named) binary scores plus the confusion matrix."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    matrix = confusion(y_true, y_pred, len(labels))
    accuracy = float(np.trace(matrix) / matrix.sum()) if matrix.sum() else 0.0
    per_class = {}
    for k, label in enumerate(labels):
        tp = matrix[k, k]
        per_class[label] = {**_prf(tp, matrix[:, k].sum() - tp, matrix[k].sum() - tp), "support": int(matrix[k].sum())}
    macro = {"accuracy": accuracy}
    for column in COLUMNS[1:]:
        macro[column] = float(np.mean([per_class[label][column] for label in labels]))
    result: dict[str, object] = {
        "clips": len(y_true),
        "macro": macro,
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }
    if anomaly_labels:
        anomalous = np.array([label in anomaly_labels for label in labels])
        t, p = anomalous[y_true], anomalous[y_pred]
        tp, fp, fn = float(np.sum(t & p)), float(np.sum(~t & p)), float(np.sum(t & ~p))
        result["binary"] = {"accuracy": float(np.mean(t == p)), **_prf(tp, fp, fn)}
    return result


def summarize(runs: Sequence[dict[str, object]]) -> dict[str, object]:
    """Mean and standard deviation of each view's columns over seeds or folds."""
    summary: dict[str, object] = {"runs": len(runs), "clips": int(sum(int(r["clips"]) for r in runs))}  # type: ignore[call-overload]
    for view in ("macro", "binary"):
        if not all(view in r for r in runs):
            continue
        summary[view] = {
            column: {
                "mean": float(np.mean([r[view][column] for r in runs])),  # type: ignore[index]
                "std": float(np.std([r[view][column] for r in runs])),  # type: ignore[index]
            }
            for column in COLUMNS
        }
    return summary


def table(result: dict[str, object], labels: Sequence[str]) -> str:
    """A terminal table: one row per class, then macro and binary (mean +/- std when summarized)."""
    lines = [f"{'':<15}" + "".join(f"{c:>14}" for c in COLUMNS) + f"{'clips':>7}"]
    per_class = result.get("per_class", {})
    for label in labels:
        if label in per_class:  # type: ignore[operator]
            row = per_class[label]  # type: ignore[index]
            lines.append(f"{label:<15}{'':>14}{row['precision']:>14.3f}{row['recall']:>14.3f}{row['f1']:>14.3f}"
                         f"{row['support']:>7}")
    for view in ("macro", "binary"):
        if view not in result:
            continue
        row = result[view]  # type: ignore[index]
        cells = []
        for column in COLUMNS:
            value = row[column]
            text = f"{value['mean']:.3f} ± {value['std']:.3f}" if isinstance(value, dict) else f"{value:.3f}"
            cells.append(f"{text:>14}")
        name = "Normal/Anomaly" if view == "binary" else "macro"
        lines.append(f"{name:<15}{''.join(cells)}{result.get('clips', ''):>7}")
    return "\n".join(lines)
