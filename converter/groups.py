"""Which clips came from the same source, so a split can keep each source on one side.

Clips cut from one video look alike; a random clip split lets the model recognise the scene instead
of the activity and inflates the test score. Two conventions are understood:

- UCF50-style names with a group id (``v_Punch_g07_c03.avi`` -> ``g07``).
- A source map file (``videos.txt`` in the data folder, as in the surveillance fight dataset): a URL
  line opens a source and ``clip: start - end`` lines list the clips cut from it; lines like
  ``nofi062 - nofi076 : CamNet Dataset`` put a range of clips in one named dataset. A clip listed
  under two URLs merges those sources; a clip inside two dataset ranges stays in the first, since a
  range names one dataset (the fight dataset's map gives 45 groups this way).

- A generic ``groups.tsv`` (clip stem, TAB, group id; ``#`` comments and blank lines allowed), the
  simplest way to group any other dataset; it wins over the other two when present.

Clips with none of these, or not listed in the file, are their own group.
"""

from __future__ import annotations

import re
from pathlib import Path

SOURCE_MAP_NAME = "videos.txt"
GROUPS_TSV_NAME = "groups.tsv"
_UCF_GROUP = re.compile(r"_g(\d+)_", re.IGNORECASE)
_RANGE = re.compile(r"^([A-Za-z]+)(\d+)\s*-\s*([A-Za-z]+)(\d+)\s*:\s*(.+)$")
_CLIP = re.compile(r"^([A-Za-z][\w-]*?\d+)\s*:")


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            # Keep the lexicographically smaller root so group names do not depend on line order.
            low, high = sorted((root_a, root_b))
            self.parent[high] = low


def parse_source_map(path: Path) -> dict[str, str]:
    """Clip stem -> group name from a ``videos.txt``-style source map."""
    sets = _Union()
    in_range: dict[str, str] = {}
    source: str | None = None
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if re.match(r"^[a-z]+://", line):
            source = line
            sets.find(source)
            continue
        ranged = _RANGE.match(line)
        if ranged:
            prefix, first, _, last, dataset = ranged.groups()
            width = len(first)
            for i in range(int(first), int(last) + 1):
                in_range.setdefault(f"{prefix}{i:0{width}d}", f"dataset:{dataset.strip()}")
            continue
        clip = _CLIP.match(line)
        if clip and source is not None:
            sets.union(clip.group(1), source)
        elif clip:
            raise ValueError(f"{path}:{number}: clip line before any source URL line")
    for clip_id, dataset in in_range.items():
        sets.union(clip_id, dataset)
    return {item: sets.find(item) for item in sets.parent if not re.match(r"^([a-z]+://|dataset:)", item)}


def parse_groups_tsv(path: Path) -> dict[str, str]:
    """Clip stem -> group id from a ``groups.tsv``; a malformed line is a ValueError naming file and line."""
    mapping: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        stem, tab, group = line.partition("\t")
        if not tab:
            raise ValueError(f"{path}:{number}: no TAB in {line.strip()[:60]!r}; write CLIP_STEM<TAB>GROUP_ID per line")
        if not stem.strip() or not group.strip():
            raise ValueError(f"{path}:{number}: empty clip stem or group id; write CLIP_STEM<TAB>GROUP_ID per line")
        mapping[stem.strip()] = group.strip()
    return mapping


def assign_groups(stems: list[str], data_dir: Path) -> tuple[list[str], str]:
    """A group per clip stem, and which convention produced them ("groups.tsv", "source map", "ucf50" or "per clip")."""
    tsv = Path(data_dir) / GROUPS_TSV_NAME
    if tsv.is_file():
        mapping = parse_groups_tsv(tsv)
        return [mapping.get(stem, f"clip:{stem}") for stem in stems], GROUPS_TSV_NAME
    source_map = Path(data_dir) / SOURCE_MAP_NAME
    if source_map.is_file():
        mapping = parse_source_map(source_map)
        return [mapping.get(stem, f"clip:{stem}") for stem in stems], f"source map {source_map.name}"
    ucf = [_UCF_GROUP.search(stem) for stem in stems]
    if stems and all(ucf):
        return [f"g{int(m.group(1)):02d}" for m in ucf if m], "ucf50 _gNN_ ids"
    return [f"clip:{stem}" for stem in stems], "per clip (no source map, no _gNN_ ids)"
