"""`python -m bench [--quick] [--only NAME...] [--model RUN_DIR/model.keras] [--data DATA_DIR]`.

Runs the benchmarks in order, prints each table as it finishes and writes them all, with the
machine they ran on, to one JSON file (bench/results/full.json, or quick.json with --quick).
A benchmark that fails is reported in its table and makes the exit status 1; the others still run.
The 4-camera soak is separate because it takes minutes per run: ``python -m bench.soak``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

from bench import accuracy, floor, latency, memory_startup, model_cost, pipeline_overhead, scaling
from bench.bundles import Models
from bench.common import CACHE, RESULTS, ROOT, Settings, Table, machine, machine_line, write_results
from bench.streams import build_stream, synthetic_stream
from edge.bundle import read_manifest

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fight-surv"
NEEDS_MODEL = ("model_cost", "accuracy")


class Context:
    """What several benchmarks share, built on first use: the device bundle, class names, streams."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models = Models(settings)

    @cached_property
    def device(self) -> tuple[Path, str]:
        return self.models.device_bundle()

    @cached_property
    def labels(self) -> tuple[str, str]:
        """(normal, anomaly) class folders of --data for the bundle's anomaly labels."""
        data = self.settings.data
        assert data is not None
        folders = sorted(p.name for p in data.iterdir() if p.is_dir())
        wanted = read_manifest(self.device[0]).anomaly_labels
        anomaly = next((a for a in wanted if a in folders), None) or next((f for f in folders if "fight" in f), None)
        normal = next((f for f in folders if f != anomaly), None)
        if anomaly is None or normal is None:
            raise ValueError(f"{data}: need a normal and an anomaly class folder, found {folders}")
        return normal, anomaly

    @cached_property
    def stream(self) -> dict:
        return pipeline_overhead.streams(self.settings, *self.labels)[0]

    def latency(self) -> Table:
        bundle, source = self.device
        demo = "demo bundle" in source
        if demo or self.settings.data is None:
            meta = synthetic_stream(latency.segments(self.settings, "calm", "fight"), self.settings.work / "streams")
            return latency.run(self.settings, meta, bundle, source + ", generated calm/fight stream", "fight")
        meta = build_stream(self.settings.data, latency.segments(self.settings, *self.labels),
                            self.settings.work / "streams")
        return latency.run(self.settings, meta, bundle, source, self.labels[1])


BENCHMARKS: dict[str, Callable[[Context], Table]] = {
    "model_cost": lambda c: model_cost.run(c.settings, c.models),
    "pipeline_overhead": lambda c: pipeline_overhead.run(c.settings, *c.device, c.labels),
    "floor": lambda c: floor.run(c.settings, *c.device, c.labels),
    "memory_startup": lambda c: memory_startup.run(c.settings, c.labels, *c.device),
    "latency": Context.latency,
    "accuracy": lambda c: accuracy.run(c.settings, c.models),
    "scaling": lambda c: scaling.run(c.settings, c.stream, *c.device),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                     epilog="also: python -m bench.soak --minutes 10 (4 cameras against a broker)")
    parser.add_argument("--quick", action="store_true", help="short versions of each benchmark (seconds each)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--model", type=Path, help="a trained RUN_DIR/model.keras (model_cost and accuracy need it)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder-per-class clips for the streams")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/full.json or quick.json)")
    parser.add_argument("--work", type=Path, default=CACHE, help="cache for streams and bundles")
    parser.add_argument("--bundle", default="builtin",
                        help="bundle the daemon benchmarks run: a built-in name (fight-rclstm) or a path")
    args = parser.parse_args(argv)
    if args.model is not None and not args.model.is_file():
        parser.error(f"--model {args.model}: no such file; pass a trained RUN_DIR/model.keras")
    data = args.data if args.data.is_dir() else None
    settings = Settings(quick=args.quick, model=args.model, data=data, work=args.work, bundle=args.bundle)
    info = machine()
    print(machine_line(info), flush=True)
    if data is None:
        print(f"note: --data {args.data} not found; streams are generated (no real clips)", flush=True)
    context = Context(settings)
    tables, failed = [], 0
    for name in args.only or list(BENCHMARKS):
        started = time.monotonic()
        if name in NEEDS_MODEL and args.model is None:
            table = Table(name, name, [], notes=["skipped: needs --model RUN_DIR/model.keras"])
        else:
            try:
                table = BENCHMARKS[name](context)
            except Exception as exc:  # one broken benchmark must not hide the others' figures
                failed += 1
                traceback.print_exc()
                table = Table(name, name, [], notes=[f"failed: {type(exc).__name__}: {exc}"])
        table.extra["seconds"] = round(time.monotonic() - started, 1)
        tables.append(table)
        print(f"\n{table.render()}\n({machine_line(info)})", flush=True)
    out = args.out or RESULTS / ("quick.json" if args.quick else "full.json")
    write_results(out, info, tables, {"quick": args.quick, "model": str(args.model) if args.model else None,
                                      "data": str(data) if data else None, "only": args.only,
                                      "bundle": args.bundle})
    print(f"\nwritten to {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
