"""`rclstm-convert train`: train on a folder-per-class dataset over one or more splits and record everything.

One split of ~75 test clips has a 95% interval of about +/-0.11 on accuracy, so ``--seeds N``
(repeated splits) and ``--folds K`` (group k-fold) train one model per split and report the mean and
spread; claims are made on those. Early stopping watches a validation split carved from the TRAIN
groups, never the test clips. The run directory holds everything `evaluate` and `convert` need:

    RUN_DIR/model.keras        the first split's model (its test clips are run.json's ``test_clips``)
    RUN_DIR/runs/NN/model.keras  every split's model, when there are several
    RUN_DIR/history.json, metrics.json, run.json, curves.png, confusion.png
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from converter import dataset as ds
from converter.metrics import scores, summarize, table
from converter.models import build_convlstm, build_rclstm
from converter.splits import Split, group_kfold, group_split, random_split
from edge.preprocess import Representation, channels_for

TEST_FRACTION = 0.25
VAL_FRACTION = 0.2


@dataclass
class TrainOptions:
    data_dir: Path
    out: Path
    arch: str = "rclstm"
    classes: list[str] | None = None
    anomaly_classes: list[str] = field(default_factory=list)
    representation: Representation = ds.DEFAULT_REPRESENTATION
    epochs: int = 70
    patience: int = 15
    batch_size: int = 4
    seed: int = 0
    seeds: int = 1
    folds: int = 0
    split: str = "group"
    augment: str = ds.DEFAULT_AUGMENT
    frames: int = 20
    size: int = 64
    filters: list[int] = field(default_factory=lambda: [16, 32, 64, 64])
    pools: list[int] = field(default_factory=lambda: [4, 4, 2, 2])
    dropout: float = 0.25
    lstm_units: int = 32
    learning_rate: float = 1e-3
    cache: Path | None = ds.DEFAULT_CACHE


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Augmented(keras.utils.PyDataset):
    """Training windows rebuilt every epoch with fresh jitter/flip draws."""

    def __init__(self, items: list[ds.Decoded], y: np.ndarray, opts: TrainOptions, seed: int) -> None:
        super().__init__()
        self.items, self.y, self.opts = items, y, opts
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(items))

    def __len__(self) -> int:
        return int(np.ceil(len(self.items) / self.opts.batch_size))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picks = self.order[index * self.opts.batch_size : (index + 1) * self.opts.batch_size]
        x = np.stack([
            ds.window(self.items[i], self.opts.frames, self.opts.representation, self.rng, self.opts.augment)
            for i in picks
        ])
        return x, self.y[picks]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.items))


def make_splits(data: ds.Dataset, opts: TrainOptions) -> list[Split]:
    labels = [d.clip.label for d in data.clips]
    groups = [d.clip.group if opts.split == "group" else d.clip.name for d in data.clips]
    if opts.folds:
        return group_kfold(labels, groups, opts.folds, opts.seed)
    if opts.split == "group":
        return [group_split(labels, groups, TEST_FRACTION, opts.seed + i) for i in range(opts.seeds)]
    return [random_split(labels, TEST_FRACTION, opts.seed + i) for i in range(opts.seeds)]


def _validation(data: ds.Dataset, train_idx: np.ndarray, opts: TrainOptions, seed: int) -> Split:
    """Carve a validation split out of the training clips (whole groups for a group split)."""
    labels = [data.clips[i].clip.label for i in train_idx]
    try:
        if opts.split == "group":
            inner = group_split(labels, [data.clips[i].clip.group for i in train_idx], VAL_FRACTION, seed)
        else:
            inner = random_split(labels, VAL_FRACTION, seed)
    except ValueError:
        return train_idx, np.array([], dtype=np.int64)
    return train_idx[inner[0]], train_idx[inner[1]]


def build_model(opts: TrainOptions, num_classes: int) -> keras.Model:
    channels = channels_for(opts.representation)
    if opts.arch == "convlstm":
        return build_convlstm(num_classes, opts.frames, opts.size, channels, learning_rate=opts.learning_rate)
    return build_rclstm(num_classes, opts.frames, opts.size, channels, opts.filters, opts.pools, opts.dropout,
                        opts.lstm_units, opts.learning_rate)


def _fit_one(data: ds.Dataset, split: Split, opts: TrainOptions, run: int) -> tuple[keras.Model, dict, dict]:
    seed = opts.seed + run
    keras.utils.set_random_seed(seed)
    train_idx, val_idx = _validation(data, split[0], opts, seed + 1000)
    y = data.y
    items = data.clips
    model = build_model(opts, len(data.labels))
    monitor = "val_loss" if len(val_idx) else "loss"
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=opts.patience, restore_best_weights=True)
    val = None
    if len(val_idx):
        val = (ds.windows([items[i] for i in val_idx], opts.frames, opts.representation), y[val_idx])
    _log(f"split {run + 1}: {len(train_idx)} train, {len(val_idx)} validation, {len(split[1])} test clips")
    if opts.augment == "none":
        train_x = ds.windows([items[i] for i in train_idx], opts.frames, opts.representation)
        history = model.fit(train_x, y[train_idx], batch_size=opts.batch_size, epochs=opts.epochs,
                            validation_data=val, callbacks=[stop], verbose=2, shuffle=True)
    else:
        train_data = _Augmented([items[i] for i in train_idx], y[train_idx], opts, seed)
        history = model.fit(train_data, epochs=opts.epochs, validation_data=val, callbacks=[stop], verbose=2)
    test_x = ds.windows([items[i] for i in split[1]], opts.frames, opts.representation)
    predicted = np.argmax(model.predict(test_x, batch_size=8, verbose=0), axis=1)
    result = scores(y[split[1]], predicted, data.labels, opts.anomaly_classes)
    losses = history.history.get(monitor, [])
    record = {
        "seed": seed,
        "epochs_trained": len(losses),
        "best_epoch": int(np.argmin(losses)) + 1 if losses else 0,
        "monitor": monitor,
        "train_clips": len(train_idx),
        "validation_clips": len(val_idx),
        "test_clips": [items[i].clip.name for i in split[1]],
    }
    return model, {k: [float(v) for v in vs] for k, vs in history.history.items()}, {**result, **record}


def _plot(out: Path, histories: list[dict], runs: list[dict], labels: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, hist in enumerate(histories):
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            (line,) = ax.plot(hist.get(key, []), label=f"train {i + 1}")
            if f"val_{key}" in hist:
                ax.plot(hist[f"val_{key}"], linestyle="--", color=line.get_color(), label=f"validation {i + 1}")
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)

    matrix = np.sum([np.array(r["confusion"]) for r in runs], axis=0)
    fig, ax = plt.subplots(figsize=(1.5 + len(labels), 1.2 + len(labels)))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, str(value), ha="center", va="center")
    ax.set_xticks(range(len(labels)), labels, rotation=45)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test clips, {len(runs)} split(s)")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=100)
    plt.close(fig)


def train(opts: TrainOptions) -> dict:
    """Train one model per split; write the run directory; return the metrics summary."""
    if opts.arch not in ("rclstm", "convlstm"):
        raise ValueError(f"--arch {opts.arch!r} is not rclstm or convlstm")
    if opts.augment not in ds.AUGMENTS:
        raise ValueError(f"--augment {opts.augment!r} is not one of {', '.join(ds.AUGMENTS)}")
    data = ds.load_dataset(opts.data_dir, opts.classes, opts.frames, opts.size, opts.cache)
    unknown = [c for c in opts.anomaly_classes if c not in data.labels]
    if unknown:
        raise ds.DataError(f"--anomaly-classes {', '.join(unknown)} not among the classes {', '.join(data.labels)}")
    splits = make_splits(data, opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    histories, runs = [], []
    for run, split in enumerate(splits):
        model, history, record = _fit_one(data, split, opts, run)
        histories.append(history)
        runs.append(record)
        if len(splits) > 1:
            (out / "runs" / f"{run:02d}").mkdir(parents=True, exist_ok=True)
            model.save(out / "runs" / f"{run:02d}" / "model.keras")
        if run == 0:
            model.save(out / "model.keras")
        _log(table(record, data.labels))
    summary = summarize(runs)
    _log(f"over {len(runs)} split(s):\n" + table(summary, data.labels))
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}
    (out / "history.json").write_text(json.dumps(histories, indent=1) + "\n")
    (out / "metrics.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1) + "\n")
    run_record = {
        "options": options,
        "data_dir": str(Path(opts.data_dir).resolve()),
        "labels": data.labels,
        "anomaly_labels": opts.anomaly_classes,
        "representation": opts.representation,
        "frames": opts.frames,
        "size": opts.size,
        "grouping": data.grouping,
        "sampling": ds.sampling_stats(data.clips, opts.frames),
        "skipped": [f"{name}: {reason}" for name, reason in data.skipped],
        "test_clips": runs[0]["test_clips"],
        "splits": [{k: v for k, v in r.items() if k not in ("per_class", "confusion")} for r in runs],
    }
    (out / "run.json").write_text(json.dumps(run_record, indent=1) + "\n")
    _plot(out, histories, runs, data.labels)
    if (out / "runs").exists() and len(splits) == 1:
        shutil.rmtree(out / "runs")  # a stale multi-split layout from an earlier run would mislead
    return summary
