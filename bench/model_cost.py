"""Model cost per classification: (a) Keras on the last 20 frames, (b) the whole-window TFLite model,
(c) the device's streaming path (encode the one new frame, classify the 20 buffered features).

(a) is what the paper's and the popular tutorial's live loops do: keep the last 20 frames and call
``model.predict`` on them for every classification. (b) is the same network converted to TFLite as
one whole-window signature (``convert --whole-window``): every classification re-runs the CNN on
all 20 frames. (c) encodes each frame once and keeps the features, so a classification costs one
CNN run plus a small LSTM. All three are timed on the same held-out windows, and their decisions
(top-1) are compared on those windows: a faster path that decides differently is not a win.

Keras runs in a child process per thread count, because TensorFlow fixes its thread pools at start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from itertools import cycle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.bundles import Models
from bench.common import ROOT, Settings, Table, seconds_per_call
from edge.adapters.runtime import BundleModel

if TYPE_CHECKING:
    from converter.runs import RunRecord

GOAL_VS_WINDOW = 10.0
GOAL_VS_KERAS = 100.0


def held_out_windows(settings: Settings, count: int) -> tuple[np.ndarray, RunRecord]:
    """Windows of the run's held-out clips (as evaluation builds them) and the run record."""
    from converter import dataset as ds
    from converter.runs import find_run, held_out

    assert settings.model is not None
    found = find_run(settings.model)
    if found is None:
        raise ValueError(f"{settings.model}: no run.json beside it; pass a model from `rclstm-convert train`")
    run, split = found
    data = held_out(run, split, None, settings.work / "frames", run.frames, run.size)
    return ds.windows(data.clips[:count], run.frames, run.representation), run


def keras_child(model: Path, windows: Path, threads: int, calls: int, repeats: int) -> dict:
    """In a fresh process: seconds per ``model.predict`` of one window, and every window's probabilities."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from converter.convert import load_model

    keras_model = load_model(model)
    with np.load(windows) as data:
        x = data["windows"]
    probs = np.stack([keras_model.predict(w[np.newaxis], verbose=0)[0] for w in x])
    batches = cycle(x[:, np.newaxis])
    seconds = seconds_per_call(lambda: keras_model.predict(next(batches), verbose=0), calls, repeats)
    return {"seconds": seconds, "probs": probs.tolist(), "tensorflow": tf.__version__}


def _keras(settings: Settings, windows_file: Path, threads: int, calls: int, repeats: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "bench.model_cost", "--keras", str(settings.model), "--windows", str(windows_file),
         "--threads", str(threads), "--calls", str(calls), "--repeats", str(repeats)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"Keras timing failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _tflite_costs(settings: Settings, stream: Path, window: Path, threads: int, windows: np.ndarray,
                  repeats: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Seconds per classification for (b) and (c), and both paths' probabilities on every window."""
    s_model = BundleModel(stream, threads, "ai-edge-litert")
    w_model = BundleModel(window, threads, "ai-edge-litert")
    b_probs = np.stack([w_model.predict_window(w) for w in windows])
    c_probs = np.stack([s_model.predict_window(w) for w in windows])
    features = [np.stack([s_model.encode(x) for x in w]) for w in windows]
    pairs = cycle(zip(windows, features, strict=True))
    shown = cycle(windows)

    def streaming_step() -> None:
        window_inputs, buffered = next(pairs)
        s_model.encode(window_inputs[-1])  # the one new frame
        s_model.classify(buffered)  # the 20 buffered features

    b_s = seconds_per_call(lambda: w_model.predict_window(next(shown)), settings.pick(5, 30), repeats)
    c_s = seconds_per_call(streaming_step, settings.pick(20, 200), repeats)
    return b_s, c_s, b_probs, c_probs


def run(settings: Settings, models: Models) -> Table:
    from edge.bundle import QUANTIZATIONS

    modes = settings.pick(("float32", "dynamic"), QUANTIZATIONS)
    thread_counts = settings.pick((1,), (1, 2))
    repeats = settings.pick(3, 7)
    windows, run_record = held_out_windows(settings, settings.pick(6, 32))
    table = Table(
        "model_cost",
        "Model cost per classification: (a) Keras predict on 20 frames, (b) whole-window TFLite, (c) streaming",
        ["mode", "threads", "a_keras_ms", "b_window_ms", "c_stream_ms", "a_over_c", "b_over_c",
         "top1_agree_a_b", "top1_agree_a_c", "top1_agree_b_c", "goals_met"],
    )
    table.extra["windows"] = len(windows)
    table.extra["repeats"] = repeats
    with tempfile.TemporaryDirectory(prefix="rclstm-bench-") as tmp:
        windows_file = Path(tmp) / "windows.npz"
        np.savez(windows_file, windows=windows.astype(np.float32))
        keras = {n: _keras(settings, windows_file, n, settings.pick(3, 10), repeats) for n in thread_counts}
    for mode in modes:
        stream, window = models.bundle(mode, "stream"), models.bundle(mode, "window")
        table.notes += [f"{mode} {c.variant}: kept despite the gate: {c.refused}"
                        for c in (stream, window) if c.refused]
        for threads in thread_counts:
            b_s, c_s, b_probs, c_probs = _tflite_costs(settings, stream.path, window.path, threads, windows, repeats)
            a_s = keras[threads]["seconds"]
            probs = {"a": np.asarray(keras[threads]["probs"]), "b": b_probs, "c": c_probs}
            agree = {f"top1_agree_{x}_{y}": float(np.mean(probs[x].argmax(1) == probs[y].argmax(1)))
                     for x, y in (("a", "b"), ("a", "c"), ("b", "c"))}
            met = a_s / c_s >= GOAL_VS_KERAS and b_s / c_s >= GOAL_VS_WINDOW and min(agree.values()) == 1.0
            table.rows.append({"mode": mode, "threads": threads, "a_keras_ms": round(a_s * 1e3, 3),
                               "b_window_ms": round(b_s * 1e3, 3), "c_stream_ms": round(c_s * 1e3, 3),
                               "a_over_c": round(a_s / c_s, 1), "b_over_c": round(b_s / c_s, 1), **agree,
                               "goals_met": "yes" if met else "no"})
    table.notes += [
        f"goals: (c) >= {GOAL_VS_WINDOW:g}x cheaper than (b) and >= {GOAL_VS_KERAS:g}x cheaper than (a), identical "
        "decisions; medians of repeats; Keras is not quantized, so (a) is the same float model in every row",
        f"model {settings.model} ({run_record.representation}, {run_record.frames} frames of "
        f"{run_record.size}x{run_record.size}); {len(windows)} held-out windows; runtime ai-edge-litert",
    ]
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description="child process: time Keras model.predict on windows")
    parser.add_argument("--keras", type=Path, required=True)
    parser.add_argument("--windows", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(keras_child(args.keras, args.windows, args.threads, args.calls, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
