"""Several datasets in one run: named sources and one label set across them.

A model meets cameras it was never trained on, so training mixes datasets and evaluation holds one
out. Each dataset folder is a *source* (``NAME=PATH``, or the folder's name); its class folders are
mapped to one label set by a class map (``violent=fight,noFight=normal``; identical names map to
themselves). Group ids are prefixed with the source name, so two datasets that both call a scene
``g01`` never count as one group, and a split can never put one source's scene on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class SourceError(ValueError):
    """A source or class-map argument that cannot be used; one line naming the flag or file and the fix."""


@dataclass(frozen=True)
class Source:
    """A named dataset folder; the name prefixes its clips' names and groups (empty for legacy single-source runs)."""

    name: str
    path: Path


def parse_source(text: str) -> Source:
    """``NAME=PATH`` or ``PATH`` (named after the folder); the folder must exist."""
    name, eq, path = text.partition("=")
    if not eq or "/" in name or not name:
        name, path = "", text
    folder = Path(path)
    name = name or folder.resolve().name
    if not _NAME.match(name):
        raise SourceError(f"source {text!r}: name {name!r} must be letters, digits, '.', '_' or '-'; "
                          "write NAME=PATH with such a NAME")
    if not folder.is_dir():
        raise SourceError(f"{folder}: data folder not found; pass a folder with one sub-folder of videos per class "
                          "(as NAME=PATH or PATH)")
    return Source(name, folder)


def unique_sources(sources: Sequence[Source]) -> list[Source]:
    names = [s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SourceError(f"source name(s) {', '.join(twice)} given twice; name each source with NAME=PATH")
    return list(sources)


def parse_class_map(text: str | None) -> dict[str, str]:
    """``--class-map`` as ``a=x,b=y`` or a file of ``a=x`` lines (``#`` comments); empty means identity."""
    if not text:
        return {}
    where = "--class-map"
    path = Path(text)
    if "=" not in text and path.suffix and not path.is_file():
        raise SourceError(f"--class-map {text}: file not found; pass FOLDER=LABEL,... or an existing file")
    if path.is_file():
        where = str(path)
        entries = [(n, line.split("#", 1)[0].strip()) for n, line in
                   enumerate(path.read_text(encoding="utf-8").splitlines(), 1)]
    else:
        entries = list(enumerate(text.split(","), 1))
    mapping: dict[str, str] = {}
    for number, entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        folder, eq, label = (part.strip() for part in entry.partition("="))
        place = f"{where}:{number}" if where != "--class-map" else where
        if not eq or not folder or not label:
            raise SourceError(f"{place}: {entry!r} is not FOLDER=LABEL; write e.g. violent=fight,noFight=normal")
        if folder in mapping and mapping[folder] != label:
            raise SourceError(f"{place}: {folder!r} mapped to both {mapping[folder]!r} and {label!r}; keep one")
        mapping[folder] = label
    return mapping


def map_class(folder: str, class_map: Mapping[str, str], source: Source) -> str:
    """The label a class folder stands for; a folder the map does not know is an error unless the map is empty."""
    if not class_map:
        return folder
    if folder in class_map:
        return class_map[folder]
    if folder in class_map.values():
        return folder  # a folder already named like a target label maps to itself
    raise SourceError(f"{source.path / folder}: class folder {folder!r} of source {source.name or source.path} is "
                      f"not in --class-map; add {folder}=LABEL")


def check_fine_tune(sources: Sequence[Source], site: Sequence[str], init_from: Path | None) -> None:
    """``--site`` names sources given, ``--init-from`` is a run directory with a model; SourceError otherwise."""
    names = [source.name for source in sources]
    strangers = [name for name in site if name not in names]
    if strangers:
        raise SourceError(f"--site {', '.join(strangers)}: not a source name; sources are {', '.join(names)} "
                          "(name the site's folder NAME=PATH)")
    if init_from is not None and not (Path(init_from) / "model.keras").is_file():
        raise SourceError(f"--init-from {init_from}: no model.keras there; pass a `rclstm-convert train` run "
                          "directory")
