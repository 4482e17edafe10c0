"""`python -m edge.verify BUNDLE INPUTS.npz OUT.npz`: run a bundle on saved windows in this interpreter.

The converter runs this in a second Python environment (tflite-runtime 2.14, numpy 1.x) to prove a
bundle loads and gives the same answers on the other device runtime, through the same BundleModel
code path the daemon uses. Prints ``{"runtime": ..., "version": ...}`` as JSON on success; a bundle
or input problem is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import get_args

import numpy as np

from edge.adapters.runtime import BundleModel, RuntimeMissing
from edge.bundle import BundleError
from edge.core.config import RuntimeName
from edge.core.errors import EXIT_OK, EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.verify", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("inputs", type=Path, help="npz with 'windows' (N x T x H x W x C float32)")
    parser.add_argument("out", type=Path, help="npz to write with 'probs' (N x K)")
    parser.add_argument("--runtime", default="auto", choices=get_args(RuntimeName))
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
    print(json.dumps({"runtime": model.runtime.name, "version": model.runtime.version}))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
