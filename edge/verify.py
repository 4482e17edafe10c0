"""`python -m edge.verify BUNDLE INPUTS.npz OUT.npz`: run a bundle on saved windows in this interpreter.

The converter runs this in a second Python environment (tflite-runtime 2.14, numpy 1.x) to prove a
bundle loads and gives the same answers on the other device runtime, through the same BundleModel
code path the daemon uses. Prints ``{"runtime": ..., "version": ...}`` as JSON on success (with
``--time N`` also ``encode_ms`` and ``classify_ms``, for the device budget); a bundle or input
problem is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import get_args

import numpy as np

from edge.adapters.runtime import BundleModel, RuntimeMissing
from edge.bundle import BundleError
from edge.core.config import RuntimeName
from edge.core.errors import EXIT_OK, EXIT_USAGE


def time_model(model: BundleModel, window: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms of one encode and one classify of ``window`` (a whole window for a window bundle), one thread.

    The median of single calls, after one warm-up call, is what a camera pays per frame; a mean would
    carry the odd scheduler hiccup of a busy machine.
    """

    def median_ms(call: object, x: np.ndarray) -> float:
        call(x)  # type: ignore[operator]
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call(x)  # type: ignore[operator]
            times.append(time.perf_counter() - started)
        return float(np.median(times)) * 1000.0

    if not model.streaming:
        return {"encode_ms": 0.0, "classify_ms": median_ms(model.predict_window, window)}
    features = np.stack([model.encode(x) for x in window])
    return {"encode_ms": median_ms(model.encode, window[-1]), "classify_ms": median_ms(model.classify, features)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.verify", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("inputs", type=Path, help="npz with 'windows' (N x T x H x W x C float32)")
    parser.add_argument("out", type=Path, help="npz to write with 'probs' (N x K)")
    parser.add_argument("--runtime", default="auto", choices=get_args(RuntimeName))
    parser.add_argument("--time", type=int, default=0, metavar="N",
                        help="also time N calls of encode and classify on the first window (default 0: no timing)")
    args = parser.parse_args(argv)
    try:
        model = BundleModel(args.bundle, runtime=args.runtime)
        with np.load(args.inputs) as data:
            windows = data["windows"]
        probs = np.stack([model.predict_window(w) for w in windows])
    except (BundleError, RuntimeMissing, OSError, KeyError, ValueError) as exc:
        print(f"edge.verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    np.savez(args.out, probs=probs)
    info: dict[str, object] = {"runtime": model.runtime.name, "version": model.runtime.version}
    if args.time > 0:
        info.update(time_model(model, windows[0], args.time))
    print(json.dumps(info))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
