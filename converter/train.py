"""`rclstm-convert train`: train on a folder-per-class dataset over one or more splits and record everything.

One split of ~75 test clips has a 95% interval of about +/-0.11 on accuracy, so ``--seeds N``
(repeated splits) and ``--folds K`` (group k-fold) train one model per split and report the mean and
spread; claims are made on those. Early stopping watches a validation split carved from the TRAIN
groups, never the test clips. The run directory holds everything `evaluate` and `convert` need:

    RUN_DIR/model.keras        the first split's model (its test clips are run.json's ``test_clips``)
    RUN_DIR/runs/NN/model.keras  every split's model, when there are several
    RUN_DIR/history.json, metrics.json, run.json, curves.png, confusion.png

Learning from a site's own cameras (``rclstm-edge export-clips``): ``--init-from RUN_DIR`` starts
from an earlier run's weights instead of random ones (same labels and shape, checked), and ``--site
NAME`` names the sources that hold a site's exported clips. A site has few cameras, often one, so a
group split could only put the whole site on one side: its clips are always trained on, never in a
split's test side, and every split reports them on their own as ``site`` (how well the model now
agrees with the site's verdicts: seen in training, not a held-out measure; hold out a camera with a
second site source for that). The held-out figures stay those of the base sources' test clips.
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
from converter import pretrained
from converter.metrics import scores, summarize, table
from converter.models import build_convlstm, build_flowlstm, build_mobilenet_lstm, build_rclstm, frozen_parts
from converter.runs import RunRecord, SourceRecord, SplitRecord
from converter.sampling import DEFAULT_HOP, DEFAULT_INTERVAL_S, DEFAULT_METHOD, SamplingMethod, WindowSampling
from converter.sources import Source, SourceError, check_fine_tune, unique_sources
from converter.splits import Split, group_kfold, group_split, random_split
from edge.preprocess import MOTION_REPRESENTATIONS, PREPROCESS_VERSION, Representation, channels_for

TEST_FRACTION = 0.25
VAL_FRACTION = 0.2


@dataclass
class TrainOptions:
    data_dir: Path | None  # one folder (named after itself); or None with ``sources``
    out: Path
    sources: list[Source] = field(default_factory=list)
    class_map: dict[str, str] = field(default_factory=dict)
    sampling: SamplingMethod = DEFAULT_METHOD
    interval: float = DEFAULT_INTERVAL_S
    hop: int = DEFAULT_HOP
    arch: str = "rclstm"
    encoder: str = "cnn"
    trainable_blocks: int = 0  # with a pretrained encoder: its last N blocks are fine-tuned, the rest frozen
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
    init_from: Path | None = None  # a run directory whose model.keras gives the starting weights
    site: list[str] = field(default_factory=list)  # sources always trained on, reported apart

    def source_list(self) -> list[Source]:
        if self.sources:
            return unique_sources(self.sources)
        if self.data_dir is None:
            raise ds.DataError("no data: pass one or more DATA_DIR (or NAME=PATH)")
        return [Source(Path(self.data_dir).resolve().name, Path(self.data_dir))]

    def window_sampling(self) -> WindowSampling:
        return WindowSampling(self.sampling, self.frames, self.interval, self.hop)

    @property
    def frozen_encoder(self) -> bool:
        """A pretrained encoder with nothing of it trained: training runs on its cached features."""
        return self.encoder != "cnn" and self.trainable_blocks == 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class FrameFeatures:
    """A frozen encoder's features of every (clip, frame, flip) a window draws, computed once.

    Windows overlap and augmentation redraws them every epoch, but a frozen encoder gives a frame
    the same features every time, so each distinct frame (and its mirror image) is encoded once and
    every later window is assembled from the cache. Only for representation ``rgb``, where a
    window's input i is its sampled frame i + 1 alone (``edge.preprocess.window_inputs``).
    """

    def __init__(self, encoder: keras.Model) -> None:
        self.encoder = encoder
        self.cache: dict[tuple[str, int, bool], np.ndarray] = {}

    def window(self, item: ds.Decoded, idx: np.ndarray, flip: bool) -> np.ndarray:
        """Features (T x F) of the window of ``item`` at sampled frames ``idx`` (T + 1 of them)."""
        keys = [(item.clip.name, int(i), flip) for i in idx[1:]]
        missing = [n for n, key in enumerate(keys) if key not in self.cache]
        if missing:
            frames = ds.window_at(item, idx, "rgb", flip)[missing]
            for n, features in zip(missing, keras.ops.convert_to_numpy(self.encoder(frames, training=False)),
                                   strict=True):
                self.cache[keys[n]] = features
        return np.stack([self.cache[key] for key in keys])


class _Augmented(keras.utils.PyDataset):
    """Training windows rebuilt every epoch with fresh draws (window starts, jitter, flip)."""

    def __init__(
        self, items: list[ds.Decoded], y: np.ndarray, opts: TrainOptions, seed: int, make: ds.WindowMaker | None
    ) -> None:
        super().__init__()
        self.items, self.y, self.opts, self.make = items, y, opts, make
        self.sampling = opts.window_sampling()
        self.rng = np.random.default_rng(seed)
        # One entry per (clip, window): a long clip gives several windows per epoch under interval sampling.
        self.entries = [(i, k) for i, item in enumerate(items)
                        for k in range(len(self.sampling.train_indices(len(item.frames), item.fps)))]
        self.order = self.rng.permutation(len(self.entries))

    def __len__(self) -> int:
        return int(np.ceil(len(self.entries) / self.opts.batch_size))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picks = [self.entries[j] for j in self.order[index * self.opts.batch_size : (index + 1) * self.opts.batch_size]]
        x = np.stack([
            ds.train_windows(self.items[i], self.sampling, self.opts.representation, self.rng, self.opts.augment,
                             self.make)[k]
            for i, k in picks
        ])
        return x, self.y[[i for i, _ in picks]]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.entries))


def balanced_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """Loss weight per class, inversely proportional to its training clips (1.0 each when balanced).

    A second source rarely has the first's class mix (VioPeru: 62 fights, 123 calm); unweighted, a
    small model settles on "always calm" and scores chance on balanced accuracy, the figure that counts.
    """
    counts = np.bincount(y, minlength=num_classes)
    return {c: len(y) / (num_classes * int(n)) for c, n in enumerate(counts) if n}


def fixed_windows(
    items: list[ds.Decoded], y: np.ndarray, opts: TrainOptions, make: ds.WindowMaker | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every clip's training windows without randomness, and their labels (validation; training without augment)."""
    per_clip = [ds.train_windows(item, opts.window_sampling(), opts.representation, make=make) for item in items]
    return np.stack([w for ws in per_clip for w in ws]), np.repeat(y, [len(ws) for ws in per_clip])


def strata(data: ds.Dataset, idx: np.ndarray | None = None) -> list[str]:
    """What splits stratify on: source and label, so each source keeps its class mix on both sides."""
    picked = data.clips if idx is None else [data.clips[i] for i in idx]
    return [f"{d.clip.source}|{d.clip.label}" for d in picked]


def make_splits(data: ds.Dataset, opts: TrainOptions) -> list[Split]:
    """Splits of the base sources' clips; every split trains on all ``--site`` clips as well."""
    site = site_indices(data, opts)
    base = np.setdiff1d(np.arange(len(data.clips)), site)
    labels = strata(data, base)
    groups = [data.clips[i].clip.group if opts.split == "group" else data.clips[i].clip.name for i in base]
    if opts.folds:
        splits = group_kfold(labels, groups, opts.folds, opts.seed)
    elif opts.split == "group":
        splits = [group_split(labels, groups, TEST_FRACTION, opts.seed + i) for i in range(opts.seeds)]
    else:
        splits = [random_split(labels, TEST_FRACTION, opts.seed + i) for i in range(opts.seeds)]
    return [(np.concatenate([base[train], site]), base[test]) for train, test in splits]


def site_indices(data: ds.Dataset, opts: TrainOptions) -> np.ndarray:
    return np.array([i for i, d in enumerate(data.clips) if d.clip.source in opts.site], dtype=np.int64)


def _validation(data: ds.Dataset, train_idx: np.ndarray, opts: TrainOptions, seed: int) -> Split:
    """Carve a validation split out of the training clips (whole groups for a group split; never site clips)."""
    site = np.intersect1d(train_idx, site_indices(data, opts))
    base = np.setdiff1d(train_idx, site)
    labels = strata(data, base)
    try:
        if opts.split == "group":
            inner = group_split(labels, [data.clips[i].clip.group for i in base], VAL_FRACTION, seed)
        else:
            inner = random_split(labels, VAL_FRACTION, seed)
    except ValueError:
        return train_idx, np.array([], dtype=np.int64)
    return np.concatenate([base[inner[0]], site]), base[inner[1]]


def build_model(opts: TrainOptions, num_classes: int) -> keras.Model:
    channels = channels_for(opts.representation)
    if opts.encoder == pretrained.NAME:
        return build_mobilenet_lstm(num_classes, opts.frames, opts.dropout, opts.lstm_units, opts.learning_rate,
                                    opts.trainable_blocks)
    if opts.arch == "convlstm":
        return build_convlstm(num_classes, opts.frames, opts.size, channels, learning_rate=opts.learning_rate)
    if opts.representation in MOTION_REPRESENTATIONS:
        return build_flowlstm(num_classes, opts.frames, channels, dropout=opts.dropout, lstm_units=opts.lstm_units,
                              learning_rate=opts.learning_rate)
    return build_rclstm(num_classes, opts.frames, opts.size, channels, opts.filters, opts.pools, opts.dropout,
                        opts.lstm_units, opts.learning_rate)


def fit(data: ds.Dataset, train_idx: np.ndarray, opts: TrainOptions, seed: int) -> tuple[keras.Model, dict, dict]:
    """Train one model on ``train_idx`` (early stopping on a validation split of its groups); model, history, record.

    With a frozen pretrained encoder only the head is fitted, on windows of cached frame features
    (``FrameFeatures``); the same draws and class weights as for a whole model. Fine-tuning
    (``trainable_blocks`` > 0) changes the features every step, so it runs the whole model on every
    window of every epoch.
    """
    keras.utils.set_random_seed(seed)
    train_idx, val_idx = _validation(data, train_idx, opts, seed + 1000)
    y = data.y
    items = data.clips
    model = build_model(opts, len(data.labels))
    if opts.init_from is not None:
        start_from(model, opts.init_from, data.labels)
    fitted, make = model, None
    if opts.frozen_encoder:
        encoder, fitted = frozen_parts(model, opts.learning_rate)
        make = FrameFeatures(encoder).window
    monitor = "val_loss" if len(val_idx) else "loss"
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=opts.patience, restore_best_weights=True)
    val = fixed_windows([items[i] for i in val_idx], y[val_idx], opts, make) if len(val_idx) else None
    weights = balanced_weights(y[train_idx], len(data.labels))
    if opts.augment == "none":
        train_x, train_y = fixed_windows([items[i] for i in train_idx], y[train_idx], opts, make)
        history = fitted.fit(train_x, train_y, batch_size=opts.batch_size, epochs=opts.epochs, class_weight=weights,
                             validation_data=val, callbacks=[stop], verbose=2, shuffle=True)
    else:
        train_data = _Augmented([items[i] for i in train_idx], y[train_idx], opts, seed, make)
        history = fitted.fit(train_data, epochs=opts.epochs, validation_data=val, callbacks=[stop], verbose=2,
                             class_weight=weights)
    losses = history.history.get(monitor, [])
    record = {
        "seed": seed,
        "epochs_trained": len(losses),
        "best_epoch": int(np.argmin(losses)) + 1 if losses else 0,
        "monitor": monitor,
        "train_clips": len(train_idx),
        "validation_clips": len(val_idx),
    }
    return model, {k: [float(v) for v in vs] for k, vs in history.history.items()}, record


def start_from(model: keras.Model, run_dir: Path, labels: list[str]) -> None:
    """Copy an earlier run's weights into ``model``; a run with other labels or another shape is refused."""
    run = RunRecord.read(run_dir)
    if run.labels != labels:
        raise ds.DataError(f"--init-from {run_dir}: its labels are {', '.join(run.labels)}, this data's are "
                           f"{', '.join(labels)}; map the classes to the same labels in the same order (--class-map, "
                           "base source first)")
    earlier = keras.models.load_model(Path(run_dir) / "model.keras", compile=False)
    shapes = [w.shape for w in earlier.get_weights()], [w.shape for w in model.get_weights()]
    if shapes[0] != shapes[1]:
        raise ds.DataError(f"--init-from {run_dir}: its model has another shape; train with its --arch, --filters, "
                           f"--pools, --lstm-units, --size, --frames and --representation (run.json options)")
    model.set_weights(earlier.get_weights())
    _log(f"starting from the weights of {run_dir}")


def _scores_on(model: keras.Model, data: ds.Dataset, idx: np.ndarray, opts: TrainOptions) -> dict:
    items = [data.clips[i] for i in idx]
    probs = ds.clip_probs(ds.keras_predictor(model), items, opts.window_sampling(), opts.representation)
    return scores(data.y[idx], probs.argmax(1), data.labels, opts.anomaly_classes)


def _fit_one(data: ds.Dataset, split: Split, opts: TrainOptions, run: int) -> tuple[keras.Model, dict, dict]:
    _log(f"split {run + 1}: {len(split[0])} train (validation carved from them), {len(split[1])} test clips")
    model, history, record = fit(data, split[0], opts, opts.seed + run)
    result = _scores_on(model, data, split[1], opts)
    site = site_indices(data, opts)
    if len(site):
        result["site"] = _scores_on(model, data, site, opts)
        _log(f"site clips ({', '.join(opts.site)}; trained on, not held out):\n"
             + table(result["site"], data.labels))
    return model, history, {**result, **record, "test_clips": [data.clips[i].clip.name for i in split[1]]}


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
    data = load(opts)
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
    if opts.site:
        summary["site"] = summarize([r["site"] for r in runs])
        _log("site clips over the splits (trained on, not held out):\n" + table(summary["site"], data.labels))
    _log(f"over {len(runs)} split(s):\n" + table(summary, data.labels))
    (out / "history.json").write_text(json.dumps(histories, indent=1) + "\n")
    (out / "metrics.json").write_text(json.dumps({"summary": summary, "runs": runs}, indent=1) + "\n")
    record_run(opts, data, [SplitRecord(**{k: v for k, v in r.items() if k not in ("per_class", "confusion")})
                            for r in runs]).write(out)
    _plot(out, histories, runs, data.labels)
    if (out / "runs").exists() and len(splits) == 1:
        shutil.rmtree(out / "runs")  # a stale multi-split layout from an earlier run would mislead
    return summary


def load(opts: TrainOptions) -> ds.Dataset:
    """Check the options and load every source; DataError / ValueError name the flag and the fix."""
    if opts.arch not in ("rclstm", "convlstm"):
        raise ValueError(f"--arch {opts.arch!r} is not rclstm or convlstm")
    if opts.encoder not in pretrained.ENCODERS:
        raise ValueError(f"--encoder {opts.encoder!r} is not one of {', '.join(pretrained.ENCODERS)}")
    if opts.encoder == pretrained.NAME and (opts.arch, opts.representation, opts.size) != ("rclstm", "rgb",
                                                                                          pretrained.SIZE):
        raise ValueError(f"--encoder {opts.encoder} takes RGB frames of {pretrained.SIZE}x{pretrained.SIZE} into an "
                         f"LSTM: use --arch rclstm --representation rgb --size {pretrained.SIZE} (got --arch "
                         f"{opts.arch} --representation {opts.representation} --size {opts.size})")
    if not 0 <= opts.trainable_blocks <= (0 if opts.encoder == "cnn" else pretrained.BLOCKS):
        raise ValueError(f"--trainable-blocks {opts.trainable_blocks}: fine-tunes the last N of a pretrained "
                         f"encoder's {pretrained.BLOCKS} blocks; pass --encoder {pretrained.NAME} and "
                         f"0..{pretrained.BLOCKS}")
    if opts.arch == "convlstm" and opts.representation in MOTION_REPRESENTATIONS:
        raise ValueError(f"--representation {opts.representation} is a feature vector per frame, not an image; "
                         "use --arch rclstm")
    if opts.augment not in ds.AUGMENTS:
        raise ValueError(f"--augment {opts.augment!r} is not one of {', '.join(ds.AUGMENTS)}")
    if not opts.interval > 0 or opts.hop < 1:
        raise ValueError(f"--interval {opts.interval} / --hop {opts.hop}: need a positive interval and hop")
    data = ds.load_dataset(opts.source_list(), opts.classes, opts.frames, opts.size, opts.cache,
                           class_map=opts.class_map, sampling=opts.window_sampling(),
                           representation=opts.representation)
    try:
        check_fine_tune(data.sources, opts.site, opts.init_from)
    except SourceError as exc:
        raise ds.DataError(str(exc)) from None
    unknown = [c for c in opts.anomaly_classes if c not in data.labels]
    if unknown:
        raise ds.DataError(f"--anomaly-classes {', '.join(unknown)} not among the classes {', '.join(data.labels)}")
    return data


def record_run(opts: TrainOptions, data: ds.Dataset, splits: list[SplitRecord]) -> RunRecord:
    """The run record for a training run over ``data`` (see converter.runs)."""
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()
               if k not in ("sources", "class_map")}
    return RunRecord(
        options=options,
        data_dir=str(data.sources[0].path.resolve()),
        sources=[SourceRecord(name=s.name, path=str(s.path.resolve())) for s in data.sources],
        class_map=opts.class_map,
        labels=data.labels,
        anomaly_labels=opts.anomaly_classes,
        representation=opts.representation,
        frames=opts.frames,
        size=opts.size,
        preprocess_version=PREPROCESS_VERSION,
        grouping=data.grouping,
        sampling=opts.window_sampling().manifest([(len(d.frames), d.fps) for d in data.clips]),
        hop=opts.hop,
        skipped=[f"{name}: {reason}" for name, reason in data.skipped],
        test_clips=splits[0].test_clips if splits else [],
        splits=splits,
    )
