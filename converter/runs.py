"""The run record (``run.json``): the one contract from training to evaluation and conversion.

`evaluate` and `convert` must score a model on the clips its training never saw, sample frames as
training did and know what its classes mean; the run record beside the model says all of it, so
nobody has to remember a seed or a flag. `train` writes it with :meth:`RunRecord.write` and every
reader goes through :func:`find_run`. Fields added later have defaults, so a run.json written before
them still loads (a run without ``sources`` is one unnamed source at ``data_dir``, whose clips are
named ``class/file``; one without a sampling method was trained with ``spread``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from converter import dataset as ds
from converter.sampling import DEFAULT_HOP, DEFAULT_INTERVAL_S, WindowSampling
from converter.sources import Source
from edge.preprocess import Representation

RUN_NAME = "run.json"


class SourceRecord(BaseModel):
    name: str
    path: str


class SplitRecord(BaseModel):
    """One split's outcome; its scores (``clips``, ``macro``, ``binary``) ride along as extra fields."""

    model_config = ConfigDict(extra="allow")

    seed: int = 0
    epochs_trained: int = 0
    best_epoch: int = 0
    monitor: str = ""
    train_clips: int = 0
    validation_clips: int = 0
    test_clips: list[str] = Field(default_factory=list)


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    options: dict[str, Any] = Field(default_factory=dict)  # every train flag, as given
    data_dir: str  # the first source's folder
    sources: list[SourceRecord] = Field(default_factory=list)
    class_map: dict[str, str] = Field(default_factory=dict)
    labels: list[str]
    anomaly_labels: list[str] = Field(default_factory=list)
    representation: str = "rgb"
    frames: int = 20
    size: int = 64
    # edge.preprocess's version the frames were prepared with (runs from before it was recorded used 2):
    # evaluating and converting the model prepare frames the same way, and its bundle records it.
    preprocess_version: int = 2
    grouping: str = ""
    sampling: dict[str, Any]  # the manifest's ``sampling`` (edge.bundle.Sampling)
    hop: int = DEFAULT_HOP  # sampled frames between evaluation windows (interval sampling)
    skipped: list[str] = Field(default_factory=list)
    test_clips: list[str] = Field(default_factory=list)  # the first split's
    splits: list[SplitRecord] = Field(default_factory=list)
    run_dir: Path | None = Field(default=None, exclude=True)  # where it was read from (not written)

    def source_list(self) -> list[Source]:
        if not self.sources:
            return [Source("", Path(self.data_dir))]
        return [Source(s.name, Path(s.path)) for s in self.sources]

    def window_sampling(self) -> WindowSampling:
        method = self.sampling.get("method", "spread")
        interval = float(self.sampling.get("frame_interval_s", DEFAULT_INTERVAL_S))
        return WindowSampling(method, self.frames, interval if method == "interval" else DEFAULT_INTERVAL_S,
                              self.hop)

    def split_test_clips(self, split: int) -> list[str]:
        if split < len(self.splits):
            return list(self.splits[split].test_clips)
        return list(self.test_clips)

    def write(self, folder: Path) -> Path:
        path = Path(folder) / RUN_NAME
        path.write_text(self.model_dump_json(indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        path = Path(folder) / RUN_NAME
        try:
            record = cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "run.json"
            raise ds.DataError(f"{path}: {where}: {problem['msg']}; train again or pass --data") from None
        return record.model_copy(update={"run_dir": Path(folder)})


def find_run(model_path: Path) -> tuple[RunRecord, int] | None:
    """The run record for a model and which split it belongs to (``runs/NN/model.keras`` is split NN)."""
    model_path = Path(model_path)
    candidates: list[tuple[Path, int]] = [(model_path.parent, 0)]
    if model_path.parent.parent.name == "runs" and model_path.parent.name.isdigit():
        candidates.insert(0, (model_path.parent.parent.parent, int(model_path.parent.name)))
    for folder, index in candidates:
        if (folder / RUN_NAME).is_file():
            return RunRecord.read(folder), index
    return None


def test_clips(run: RunRecord, split: int) -> list[str]:
    return run.split_test_clips(split)


def match_sources(recorded: list[str], given: list[Source]) -> list[Source]:
    """Given folders in place of a run's sources (names ``recorded``): one folder for a one-source run takes its name.

    So `evaluate MODEL DATA_DIR` finds a one-source run's held-out clips wherever the folder now lives
    and whatever it is called (a legacy run's source is unnamed, its clips ``class/file``).
    """
    if len(given) == 1 and len(recorded) == 1:
        return [Source(recorded[0], given[0].path)]
    return given


def held_out(
    run: RunRecord | None,
    split: int,
    data_dir: Path | list[Source] | None,
    cache: Path | None,
    frames: int = 20,
    size: int = 64,
    representation: Representation = ds.DEFAULT_REPRESENTATION,
) -> ds.Dataset:
    """The run's test clips (from ``data_dir`` when given, else the run's sources), or all of ``data_dir``."""
    if run is None:
        if data_dir is None:
            raise ds.DataError("no run.json beside the model and no data folder; pass DATA_DIR / --data")
        return ds.load_dataset(data_dir, None, frames, size, cache, representation=representation)
    given = [Source("", Path(data_dir))] if isinstance(data_dir, (str, Path)) else data_dir
    names = set(run.split_test_clips(split))
    sources = match_sources([s.name for s in run.source_list()], given) if given else run.source_list()
    return ds.load_dataset(sources, run.options.get("classes"), run.frames, run.size, cache,
                           only=names, class_map=run.class_map, sampling=run.window_sampling(),
                           version=run.preprocess_version, representation=run.representation)
