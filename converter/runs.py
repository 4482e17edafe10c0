"""Reading a training run back: which data, which held-out clips, how frames were prepared.

`evaluate` and `convert` must score a model on the clips its training never saw; the run record
beside the model (``run.json``, written by `train`) names them, so nobody has to remember a seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from converter import dataset as ds


def find_run(model_path: Path) -> tuple[dict[str, Any], int] | None:
    """The run record for a model and which split it belongs to (``runs/NN/model.keras`` is split NN)."""
    model_path = Path(model_path)
    candidates: list[tuple[Path, int]] = [(model_path.parent, 0)]
    if model_path.parent.parent.name == "runs" and model_path.parent.name.isdigit():
        candidates.insert(0, (model_path.parent.parent.parent, int(model_path.parent.name)))
    for folder, index in candidates:
        record = folder / "run.json"
        if record.is_file():
            try:
                run = json.loads(record.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ds.DataError(f"{record}: not valid JSON ({exc}); train again or pass --data") from None
            run["run_dir"] = str(folder)  # where metrics.json and the other splits' models live
            return run, index
    return None


def test_clips(run: dict[str, Any], split: int) -> list[str]:
    splits = run.get("splits") or []
    if split < len(splits):
        return list(splits[split]["test_clips"])
    return list(run.get("test_clips", []))


def held_out(
    run: dict[str, Any] | None,
    split: int,
    data_dir: Path | None,
    cache: Path | None,
    frames: int = 20,
    size: int = 64,
) -> ds.Dataset:
    """The run's test clips (from ``data_dir`` when given, else the run's data folder), or all of ``data_dir``."""
    if run is None:
        if data_dir is None:
            raise ds.DataError("no run.json beside the model and no data folder; pass DATA_DIR / --data")
        return ds.load_dataset(data_dir, None, frames, size, cache)
    folder = Path(data_dir) if data_dir else Path(run["data_dir"])
    names = set(test_clips(run, split))
    return ds.load_dataset(folder, run["labels"], run["frames"], run["size"], cache, only=names)
