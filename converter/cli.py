"""`rclstm-convert`: synth, train, evaluate, convert, inspect.

TensorFlow is imported only inside the subcommands that need it, so `--help`, `synth` and `inspect`
start in a fraction of a second. Bad input is one line on stderr and exit status 2; a conversion
that fails a quality gate is exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from converter.dataset import AUGMENTS, DEFAULT_AUGMENT, DEFAULT_CACHE, DEFAULT_REPRESENTATION, DataError
from edge.adapters.runtime import RuntimeMissing
from edge.bundle import BundleError
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


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 96x72") from None
    return width, height


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Train, evaluate and convert RCLSTM video classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a small generated dataset (calm/ and fight/ clips)")
    synth.add_argument("out_dir", type=Path)
    synth.add_argument("--clips-per-class", type=int, default=10)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=_size, default=(96, 72), help="WIDTHxHEIGHT (default 96x72)")
    synth.add_argument("--frames-per-clip", type=_ints, default=[30, 40], help="MIN,MAX frames per clip")

    train = sub.add_parser("train", help="train on DATA_DIR (one folder of videos per class)")
    train.add_argument("data_dir", type=Path)
    train.add_argument("--arch", choices=["rclstm", "convlstm"], default="rclstm")
    train.add_argument("--out", type=Path, required=True, help="run directory to write")
    train.add_argument("--classes", type=_names, help="comma-separated subset of class folders")
    train.add_argument("--anomaly-classes", type=_names, default=[], help="classes that count as Anomaly")
    train.add_argument("--representation", choices=REPRESENTATIONS, default=DEFAULT_REPRESENTATION,
                       help=f"default {DEFAULT_REPRESENTATION} (rgb is the paper's)")
    train.add_argument("--epochs", type=int, help="default 70 (rclstm) / 50 (convlstm)")
    train.add_argument("--patience", type=int, help="default 15 (rclstm) / 10 (convlstm)")
    train.add_argument("--batch-size", type=int, default=4)
    train.add_argument("--seed", type=int, default=0)
    repeat = train.add_mutually_exclusive_group()
    repeat.add_argument("--seeds", type=int, default=1, help="repeated splits with seeds SEED..SEED+N-1")
    repeat.add_argument("--folds", type=int, default=0, help="group k-fold cross-validation")
    train.add_argument("--split", choices=["group", "random"], default="group")
    train.add_argument("--augment", choices=AUGMENTS, default=DEFAULT_AUGMENT, help=f"default {DEFAULT_AUGMENT}")
    train.add_argument("--frames", type=int, default=20)
    train.add_argument("--size", type=int, default=64)
    train.add_argument("--filters", type=_ints, default=[16, 32, 64, 64])
    train.add_argument("--pools", type=_ints, default=[4, 4, 2, 2])
    train.add_argument("--dropout", type=float, default=0.25)
    train.add_argument("--lstm-units", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                       help=f"decoded-frame cache (default {DEFAULT_CACHE})")

    evaluate = sub.add_parser("evaluate", help="metrics for a .keras model or a bundle directory")
    evaluate.add_argument("model", type=Path)
    evaluate.add_argument("data_dir", type=Path)
    evaluate.add_argument("--run", type=Path, help="run directory whose held-out clips to use")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--cache", type=Path, default=DEFAULT_CACHE)

    convert = sub.add_parser("convert", help="quantize a .keras/.h5 model into a verified TFLite bundle")
    convert.add_argument("model", type=Path)
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--quantize", choices=["float32", "float16", "dynamic", "int8"], default="float32")
    convert.add_argument("--calibration", type=Path, help="DATA_DIR of clips for int8 calibration")
    convert.add_argument("--data", type=Path, help="DATA_DIR for parity windows (default: the run's test clips)")
    convert.add_argument("--anomaly-classes", type=_names)
    convert.add_argument("--representation", choices=REPRESENTATIONS, help="only for models without run.json")
    convert.add_argument("--force", action="store_true", help="keep a bundle that fails a parity gate")
    convert.add_argument("--name")
    convert.add_argument("--version", default="1")
    convert.add_argument("--verify-python", type=Path,
                         help="python with tflite-runtime to verify in (default $RCLSTM_TFLITE_PYTHON)")
    convert.add_argument("--whole-window", action="store_true",
                         help="one 'window' signature even for an RCLSTM (a benchmark baseline; devices stream)")
    convert.add_argument("--every-split", action="store_true",
                         help="also convert every other split's model of the run (train --seeds/--folds) the "
                              "same way and record mean ± std for Keras and the bundle in the manifest")
    convert.add_argument("--cache", type=Path, default=DEFAULT_CACHE)

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
    if args.command == "train":
        from converter.train import TrainOptions, train

        convlstm = args.arch == "convlstm"
        opts = TrainOptions(
            data_dir=args.data_dir, out=args.out, arch=args.arch, classes=args.classes,
            anomaly_classes=args.anomaly_classes, representation=args.representation,
            epochs=args.epochs or (50 if convlstm else 70), patience=args.patience or (10 if convlstm else 15),
            batch_size=args.batch_size, seed=args.seed, seeds=args.seeds, folds=args.folds, split=args.split,
            augment=args.augment, frames=args.frames, size=args.size, filters=args.filters, pools=args.pools,
            dropout=args.dropout, lstm_units=args.lstm_units, learning_rate=args.learning_rate, cache=args.cache,
        )
        train(opts)
        print(f"wrote {args.out}")
        return 0
    if args.command == "evaluate":
        from converter.evaluate import evaluate, to_json
        from converter.metrics import table

        result = evaluate(args.model, args.data_dir, args.run, args.cache)
        print(to_json(result) if args.json else f"{result['model']} on {result['clips']} clips "
              f"({result['clips_used']}):\n{table(result, result['labels'])}")
        return 0
    from converter.convert import ConvertOptions, convert

    report = convert(ConvertOptions(
        model=args.model, out=args.out, quantize=args.quantize, calibration=args.calibration, data=args.data,
        force=args.force, name=args.name, version=args.version, anomaly_classes=args.anomaly_classes,
        representation=args.representation, verify_python=args.verify_python, cache=args.cache,
        whole_window=args.whole_window, every_split=args.every_split,
    ))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {report.bundle}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
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
