"""`rclstm-convert`: synth, train, evaluate, crosseval, rescore, convert, inspect.

TensorFlow is imported only inside the subcommands that need it, so `--help`, `synth` and `inspect`
start in a fraction of a second. Bad input is one line on stderr and exit status 2; a conversion
that fails a quality gate is exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from converter.bootstrap import DEFAULT_RESAMPLES
from converter.dataset import AUGMENTS, DEFAULT_AUGMENT, DEFAULT_CACHE, DEFAULT_REPRESENTATION, DataError
from converter.pretrained import ENCODERS
from converter.pretrained import SIZE as PRETRAINED_SIZE
from converter.sampling import DEFAULT_HOP, DEFAULT_INTERVAL_S, DEFAULT_METHOD, SAMPLING_METHODS
from converter.sources import Source, check_fine_tune, parse_class_map, parse_source, unique_sources
from converter.splits import PROTOCOLS
from edge.adapters.runtime import RuntimeMissing
from edge.bundle import QUANTIZATIONS, BundleError
from edge.preprocess import REPRESENTATIONS

PROG = "rclstm-convert"


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} needs positive integers, e.g. 16,32,64,64")
    return values


def _licence(text: str) -> tuple[str, str]:
    name, sep, terms = text.partition("=")
    if not sep or not name.strip() or not terms.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not SOURCE=TERMS, e.g. fs='MIT'")
    return name.strip(), terms.strip()


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 96x72") from None
    return width, height


def _data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="+", metavar="DATA",
                        help="dataset folder(s), each a source: PATH (named after the folder) or NAME=PATH")
    parser.add_argument("--class-map", metavar="MAP",
                        help="class folders to labels across sources, FOLDER=LABEL,... (e.g. violent=fight,"
                             "noFight=normal) or a file of FOLDER=LABEL lines; a folder named like a label maps to "
                             "itself (default: every folder is its own label)")


def _sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=20, help="model inputs per window (default 20)")
    parser.add_argument("--sampling", choices=SAMPLING_METHODS, default=DEFAULT_METHOD,
                        help=f"how windows take frames: spread (frames+1 over each whole clip, the shipped model's) "
                             f"or interval (frames+1 taken --interval apart, several windows per long clip, as the "
                             f"device samples) (default {DEFAULT_METHOD})")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S,
                        help=f"seconds between sampled frames with --sampling interval (default {DEFAULT_INTERVAL_S})")
    parser.add_argument("--hop", type=int, default=DEFAULT_HOP,
                        help=f"sampled frames between evaluation windows with --sampling interval; the device's "
                             f"classifier.hop (default {DEFAULT_HOP})")


def _model_args(parser: argparse.ArgumentParser) -> None:
    """What data, which model and how to train it: shared by train and crosseval."""
    _data_args(parser)
    parser.add_argument("--arch", choices=["rclstm", "convlstm"], default="rclstm", help="default rclstm")
    parser.add_argument("--encoder", choices=ENCODERS, default="cnn",
                        help=f"rclstm per-frame encoder: cnn (small, trained from scratch) or {ENCODERS[1]} (ImageNet "
                             f"MobileNet v1, frozen; RGB at 128x128, which become the defaults) (default cnn)")
    parser.add_argument("--trainable-blocks", type=int, default=0,
                        help="fine-tune the last N of the pretrained encoder's 13 blocks (default 0: frozen, "
                             "and training runs on its cached features)")
    parser.add_argument("--classes", type=_names, help="comma-separated subset of class folders (default all)")
    parser.add_argument("--anomaly-classes", type=_names, default=[],
                        help="labels (after --class-map) that count as Anomaly (default none)")
    parser.add_argument("--representation", choices=REPRESENTATIONS,
                        help=f"default {DEFAULT_REPRESENTATION}, rgb with a pretrained --encoder (rgb is the paper's)")
    parser.add_argument("--epochs", type=int, help="default 70 (rclstm) / 50 (convlstm)")
    parser.add_argument("--patience", type=int, help="default 15 (rclstm) / 10 (convlstm)")
    parser.add_argument("--batch-size", type=int, default=4, help="default 4")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--augment", choices=AUGMENTS, default=DEFAULT_AUGMENT, help=f"default {DEFAULT_AUGMENT}")
    _sampling_args(parser)
    parser.add_argument("--size", type=int, help="input frame side in pixels (default 64, 128 with a pretrained "
                                                   "--encoder)")
    parser.add_argument("--filters", type=_ints, default=[16, 32, 64, 64],
                        help="rclstm conv filters (default 16,32,64,64)")
    parser.add_argument("--pools", type=_ints, default=[4, 4, 2, 2], help="rclstm max-pool sizes (default 4,4,2,2)")
    parser.add_argument("--dropout", type=float, default=0.25, help="default 0.25")
    parser.add_argument("--lstm-units", type=int, default=32, help="default 32")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="default 0.001")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help=f"decoded-frame cache (default {DEFAULT_CACHE})")


def _sources(texts: list[str]) -> list[Source]:
    return unique_sources([parse_source(t) for t in texts])


def _train_fields(args: argparse.Namespace) -> dict[str, Any]:
    """TrainOptions fields from the flags _model_args defines."""
    convlstm = args.arch == "convlstm"
    pretrained = args.encoder != "cnn"
    return dict(
        sources=_sources(args.data), class_map=parse_class_map(args.class_map), arch=args.arch, classes=args.classes,
        anomaly_classes=args.anomaly_classes, encoder=args.encoder, trainable_blocks=args.trainable_blocks,
        representation=args.representation or ("rgb" if pretrained else DEFAULT_REPRESENTATION),
        epochs=args.epochs or (50 if convlstm else 70), patience=args.patience or (10 if convlstm else 15),
        batch_size=args.batch_size, seed=args.seed, augment=args.augment, frames=args.frames, sampling=args.sampling,
        interval=args.interval, hop=args.hop, size=args.size or (PRETRAINED_SIZE if pretrained else 64),
        filters=args.filters, pools=args.pools,
        dropout=args.dropout, lstm_units=args.lstm_units, learning_rate=args.learning_rate, cache=args.cache,
    )


def _parser() -> argparse.ArgumentParser:
    from edge import __version__

    parser = argparse.ArgumentParser(prog=PROG, description="Train, evaluate and convert RCLSTM video classifiers.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a small generated dataset (calm/ and fight/ clips)")
    synth.add_argument("out_dir", type=Path, help="folder to write calm/ and fight/ into")
    synth.add_argument("--clips-per-class", type=int, default=10, help="default 10")
    synth.add_argument("--seed", type=int, default=0, help="default 0")
    synth.add_argument("--size", type=_size, default=(96, 72), help="WIDTHxHEIGHT (default 96x72)")
    synth.add_argument("--frames-per-clip", type=_ints, default=[30, 40],
                       help="MIN,MAX frames per clip (default 30,40)")

    train = sub.add_parser("train", help="train on one or more datasets (one folder of videos per class each)")
    _model_args(train)
    train.add_argument("--out", type=Path, required=True, help="run directory to write")
    repeat = train.add_mutually_exclusive_group()
    repeat.add_argument("--seeds", type=int, default=1, help="repeated splits with seeds SEED..SEED+N-1 (default 1)")
    repeat.add_argument("--folds", type=int, default=0, help="group k-fold cross-validation (default off)")
    train.add_argument("--split", choices=["group", "random"], default="group",
                       help="group keeps every source group on one side, stratified on source and label "
                            "(default group)")
    train.add_argument("--init-from", type=Path, metavar="RUN_DIR",
                       help="start from this earlier run's model (same labels and shape) instead of random weights")
    train.add_argument("--site", type=_names, default=[], metavar="NAME[,NAME]",
                       help="sources holding a site's exported clips (rclstm-edge export-clips): always trained on, "
                            "never tested, reported apart as 'site' (default none)")

    crosseval = sub.add_parser(
        "crosseval", help="leave-one-source-out (and pooled group split) evaluation, per clip and through the "
                          "daemon's decision rule, with group-bootstrap intervals; see docs/models.md")
    _model_args(crosseval)
    crosseval.add_argument("--out", type=Path, required=True, help="folder for results.json and the plots")
    crosseval.add_argument("--seeds", type=int, default=2, help="seeds SEED..SEED+N-1 per protocol (default 2)")
    crosseval.add_argument("--protocols", type=_names, default=list(PROTOCOLS),
                           help=f"comma-separated, of {', '.join(PROTOCOLS)}: loso trains on every other source and "
                                "tests every clip of the held-out one; group splits all sources' groups together "
                                "(the in-source figure) (default loso,group)")
    crosseval.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES,
                           help=f"group-bootstrap resamples for the 95 %% intervals (default {DEFAULT_RESAMPLES})")
    crosseval.add_argument("--no-plots", action="store_true", help="skip the PNGs (default: write them)")
    rescore = sub.add_parser(
        "rescore", help="re-derive a crosseval results.json's event level and decision sweep from its recorded "
                        "window scores under the current rules (no model is run)")
    rescore.add_argument("results", type=Path, help="the results.json `crosseval --out` wrote")

    evaluate = sub.add_parser("evaluate", help="metrics for a .keras model or a bundle directory")
    evaluate.add_argument("model", type=Path)
    evaluate.add_argument("data", nargs="+", metavar="DATA",
                          help="dataset folder(s), PATH or NAME=PATH as in train (a run's held-out clips are found by "
                               "source name, the folder's name by default)")
    evaluate.add_argument("--run", type=Path, help="run directory whose held-out clips to use")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                          help=f"decoded-frame cache (default {DEFAULT_CACHE})")

    convert = sub.add_parser("convert", help="quantize a .keras/.h5 model into a verified TFLite bundle")
    convert.add_argument("model", type=Path)
    convert.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    convert.add_argument("--quantize", choices=QUANTIZATIONS, default="float32",
                         help="dynamic = int8 weights, float activations, the shipped model's (default float32)")
    convert.add_argument("--calibration", type=Path, help="DATA_DIR of clips for int8 calibration")
    convert.add_argument("--data", type=Path, help="DATA_DIR for parity windows (default: the run's test clips)")
    convert.add_argument("--anomaly-classes", type=_names,
                         help="labels that count as Anomaly (default: the run's, from run.json)")
    convert.add_argument("--representation", choices=REPRESENTATIONS, help="only for models without run.json")
    convert.add_argument("--force", action="store_true", help="keep a bundle that fails a parity gate")
    convert.add_argument("--name", help="bundle name in the manifest (default: derived from --out)")
    convert.add_argument("--version", default="1", help="bundle version in the manifest (default 1)")
    convert.add_argument("--verify-python", type=Path,
                         help="python with tflite-runtime to verify in (default $RCLSTM_TFLITE_PYTHON)")
    convert.add_argument("--whole-window", action="store_true",
                         help="one 'window' signature even for an RCLSTM (a benchmark baseline; devices stream)")
    convert.add_argument("--every-split", action="store_true",
                         help="also convert every other split's model of the run (train --seeds/--folds) the "
                              "same way and record mean ± std for Keras and the bundle in the manifest")
    convert.add_argument("--crosseval", type=Path, metavar="RESULTS_JSON",
                         help="record a `crosseval` results.json (leave-one-source-out and in-source figures with "
                              "intervals) in the manifest (default: none)")
    convert.add_argument("--licence", type=_licence, action="append", default=[], metavar="SOURCE=TERMS",
                         help="the terms a training source's clips are used under, for the manifest's data list "
                              "(repeatable; default: 'not stated')")
    convert.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                         help=f"decoded-frame cache (default {DEFAULT_CACHE})")

    inspect = sub.add_parser("inspect", help="summarize a bundle: manifest, ops, runtimes, metrics")
    inspect.add_argument("bundle", type=Path)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "synth":
        from converter.synth import write_dataset

        lo, hi = (args.frames_per_clip * 2)[:2]
        written = write_dataset(args.out_dir, args.clips_per_class, args.seed, args.size, (lo, hi))
        print(f"wrote {len(written)} clips to {args.out_dir}")
        return 0
    if args.command == "inspect":
        from converter.inspect_bundle import describe

        print(describe(args.bundle))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from converter.train import TrainOptions, train
    if args.command == "train":

        opts = TrainOptions(data_dir=None, out=args.out, seeds=args.seeds, folds=args.folds, split=args.split,
                            init_from=args.init_from, site=args.site, **_train_fields(args))
        train(opts)
        print(f"wrote {args.out}")
        return 0
    if args.command == "evaluate":
        from converter.evaluate import evaluate, to_json
        from converter.metrics import table

        result = evaluate(args.model, _sources(args.data), args.run, args.cache)
        print(to_json(result) if args.json else f"{result['model']} on {result['clips']} clips "
              f"({result['clips_used']}):\n{table(result, result['labels'])}")
        return 0
    if args.command == "crosseval":
        from converter.crosseval import CrossEvalOptions, crosseval, summary_table

        results = crosseval(CrossEvalOptions(
            train=TrainOptions(data_dir=None, out=args.out, **_train_fields(args)), seeds=args.seeds,
            protocols=args.protocols, resamples=args.bootstrap, plots=not args.no_plots, argv=sys.argv[1:],
        ))
        print(summary_table(results))
        if "decision_sweep" in results:
            from converter.decision_sweep import sweep_table

            print(sweep_table(results["decision_sweep"]))
        print(f"wrote {args.out}")
        return 0
    if args.command == "rescore":
        from converter.crosseval import rescore, summary_table
        from converter.decision_sweep import sweep_table

        results = rescore(args.results)
        print(summary_table(results))
        if "decision_sweep" in results:
            print(sweep_table(results["decision_sweep"]))
        print(f"rewrote {args.results}")
        return 0
    from converter.convert import ConvertOptions, convert

    report = convert(ConvertOptions(
        model=args.model, out=args.out, quantize=args.quantize, calibration=args.calibration, data=args.data,
        force=args.force, name=args.name, version=args.version, anomaly_classes=args.anomaly_classes,
        representation=args.representation, verify_python=args.verify_python, cache=args.cache,
        whole_window=args.whole_window, every_split=args.every_split, crosseval=args.crosseval,
        licences=dict(args.licence),
    ))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {report.bundle}")
    return 0


def _check_inputs(args: argparse.Namespace) -> None:
    """Missing files and unusable data folders, found before TensorFlow loads (it takes ~10 s); raises DataError."""
    from converter.dataset import scan

    if args.command in ("train", "crosseval"):
        class_map = parse_class_map(args.class_map)
        for source in _sources(args.data):
            scan(source, args.classes, class_map)
    if args.command == "train":
        check_fine_tune(_sources(args.data), args.site, args.init_from)
    elif args.command == "evaluate":
        _sources(args.data)
    if args.command == "rescore" and not args.results.is_file():
        raise DataError(f"{args.results}: not found; pass the results.json `crosseval --out` wrote")
    if args.command in ("evaluate", "convert") and not args.model.exists():
        raise DataError(f"{args.model}: model file not found; pass a .keras/.h5 file or a bundle directory")
    for flag in ("calibration", "data", "run"):
        path = getattr(args, flag, None) if args.command in ("convert", "evaluate") else None
        if isinstance(path, Path) and not path.exists():
            raise DataError(f"--{flag} {path}: not found")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_inputs(args)
        return _run(args)
    except (DataError, BundleError, RuntimeMissing, ValueError, OSError) as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from converter.convert import ConvertError, ConvertRefused

        if isinstance(exc, ConvertRefused):
            print(f"{PROG} {args.command}: refused: {exc}", file=sys.stderr)
            return 1
        if isinstance(exc, ConvertError):
            print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
            return 2
        raise
