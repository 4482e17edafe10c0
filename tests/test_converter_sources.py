"""Several sources in one run: naming, class maps, groups.tsv, namespaced groups, per-source splits, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converter import dataset as ds
from converter.cli import main
from converter.groups import parse_groups_tsv
from converter.runs import RunRecord
from converter.sources import Source, SourceError, parse_class_map, parse_source
from converter.splits import group_split, leave_one_source_out
from edge.synthetic import render_clip, write_video


def _clip(path: Path, kind: str, n_frames: int = 24, seed: int = 0, fps: float = 25) -> Path:
    return write_video(path, render_clip(kind, n_frames, 48, 36, np.random.default_rng(seed)), fps)  # type: ignore[arg-type]


@pytest.fixture()
def two_sources(tmp_path: Path) -> tuple[Path, Path]:
    """``cctv``: fight/noFight with groups.tsv; ``street``: violent/calm with UCF-style ``_gNN_`` names."""
    cctv, street = tmp_path / "cctv", tmp_path / "street"
    lines = []
    for i in range(3):
        _clip(cctv / "fight" / f"fi{i}.mp4", "fight", seed=i)
        _clip(cctv / "noFight" / f"nofi{i}.mp4", "calm", seed=i)
        lines += [f"fi{i}\tcam{i}", f"nofi{i}\tcam{i}"]
    (cctv / "groups.tsv").write_text("# clip\tgroup\n" + "\n".join(lines) + "\n")
    for i in range(2):
        _clip(street / "violent" / f"v_Fight_g{i + 1:02d}_c01.mp4", "fight", seed=10 + i)
        _clip(street / "calm" / f"v_Walk_g{i + 1:02d}_c01.mp4", "calm", seed=20 + i)
    return cctv, street


MAP = "violent=fight,noFight=normal,calm=normal"


def test_several_sources_load_with_one_label_set_and_namespaced_groups(
    two_sources: tuple[Path, Path], tmp_path: Path
) -> None:
    cctv, street = two_sources
    data = ds.load_dataset([Source("cctv", cctv), Source("street", street)], size=16, cache_dir=tmp_path / "cache",
                           frames=8, class_map=parse_class_map(MAP))
    assert data.labels == ["fight", "normal"]
    assert Counter((d.clip.source, d.clip.label) for d in data.clips) == {
        ("cctv", "fight"): 3, ("cctv", "normal"): 3, ("street", "fight"): 2, ("street", "normal"): 2}
    groups = {d.clip.name: d.clip.group for d in data.clips}
    assert groups["cctv/fight/fi1.mp4"] == groups["cctv/noFight/nofi1.mp4"] == "cctv:cam1"
    assert groups["street/violent/v_Fight_g01_c01.mp4"] == "street:g01"
    assert "cctv: groups.tsv" in data.grouping and "street: ucf50" in data.grouping


def test_groups_of_two_sources_never_merge(tmp_path: Path) -> None:
    for name in ("a", "b"):
        for kind in ("calm", "fight"):
            _clip(tmp_path / name / kind / f"{kind}.mp4", kind)
        (tmp_path / name / "groups.tsv").write_text("calm\tg1\nfight\tg1\n")
    clips = [c for name in ("a", "b") for c in ds.scan(Source(name, tmp_path / name))[0]]
    assert {c.group for c in clips} == {"a:g1", "b:g1"}


def test_groups_tsv_parsing_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "groups.tsv"
    path.write_text("# comment\nf1\tcam-a\n\nf2\tcam-a\nnf1\tcam b\n")
    assert parse_groups_tsv(path) == {"f1": "cam-a", "f2": "cam-a", "nf1": "cam b"}
    path.write_text("f1\tcam-a\nf2 cam-a\n")
    with pytest.raises(ValueError, match=r"groups.tsv:2: no TAB in 'f2 cam-a'; write CLIP_STEM<TAB>GROUP_ID"):
        parse_groups_tsv(path)
    path.write_text("f1\t\n")
    with pytest.raises(ValueError, match=r"groups.tsv:1: empty clip stem or group id"):
        parse_groups_tsv(path)


def test_class_map_from_flag_and_file(tmp_path: Path) -> None:
    assert parse_class_map(None) == {}
    assert parse_class_map(MAP) == {"violent": "fight", "noFight": "normal", "calm": "normal"}
    file = tmp_path / "classes.txt"
    file.write_text("# folder=label\nviolent = fight\nnoFight=normal  # no fight\n")
    assert parse_class_map(str(file)) == {"violent": "fight", "noFight": "normal"}
    with pytest.raises(SourceError, match=r"--class-map: 'violent' is not FOLDER=LABEL"):
        parse_class_map("violent,noFight=normal")
    with pytest.raises(SourceError, match=r"'a' mapped to both 'x' and 'y'"):
        parse_class_map("a=x,a=y")
    file.write_text("ok=fine\nbroken\n")
    with pytest.raises(SourceError, match=r"classes.txt:2: 'broken' is not FOLDER=LABEL"):
        parse_class_map(str(file))


def test_source_names(tmp_path: Path) -> None:
    (tmp_path / "fight-surv").mkdir()
    assert parse_source(str(tmp_path / "fight-surv")) == Source("fight-surv", tmp_path / "fight-surv")
    assert parse_source(f"fs={tmp_path / 'fight-surv'}") == Source("fs", tmp_path / "fight-surv")
    with pytest.raises(SourceError, match="data folder not found"):
        parse_source(f"x={tmp_path / 'nowhere'}")


@pytest.mark.parametrize(("args", "expected"), [
    (["{cctv}", "{tmp}/nowhere"], "nowhere: data folder not found"),
    (["{cctv}", "{street}", "--class-map", "violent"], "--class-map: 'violent' is not FOLDER=LABEL"),
    (["{cctv}", "{street}", "--class-map", "violent=fight"],
     "class folder 'noFight' of source cctv is not in --class-map; add noFight=LABEL"),
    (["{cctv}", "{cctv}"], "source name(s) cctv given twice; name each source with NAME=PATH"),
    (["{cctv}", "--class-map", "{tmp}/map.txt"], "map.txt: file not found"),
    (["{bad}"], "groups.tsv:1: no TAB"),
    (["{cctv}", "{street}", "--class-map", MAP + ",nofight=normal"],
     "--class-map names nofight, a class folder in none of the sources; fix the spelling or drop it"),
])
def test_bad_sources_are_one_line_and_exit_2(
    two_sources: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    cctv, street = two_sources
    bad = tmp_path / "bad"
    _clip(bad / "calm" / "c.mp4", "calm")
    _clip(bad / "fight" / "f.mp4", "fight")
    (bad / "groups.tsv").write_text("c g1\n")
    argv = [a.format(cctv=cctv, street=street, tmp=tmp_path, bad=bad) for a in args]
    assert main(["train", *argv, "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_a_legacy_run_record_still_loads(tmp_path: Path) -> None:
    """A run.json from before sources, class maps and sampling methods: one unnamed source, spread sampling."""
    (tmp_path / "run.json").write_text(
        '{"options": {"arch": "rclstm"}, "data_dir": "/data/fight-surv", "labels": ["fight", "noFight"], '
        '"anomaly_labels": ["fight"], "representation": "diff", "frames": 20, "size": 64, "grouping": "x", '
        '"sampling": {"method": "spread", "frame_interval_s": 0.1, "window_s": 2.0}, "skipped": [], '
        '"test_clips": ["fight/fi001.mp4"], "splits": [{"seed": 0, "test_clips": ["fight/fi001.mp4"], '
        '"clips": 1, "macro": {"accuracy": 1.0}}]}')
    run = RunRecord.read(tmp_path)
    assert run.source_list() == [Source("", Path("/data/fight-surv"))] and run.class_map == {}
    assert run.window_sampling().method == "spread" and run.split_test_clips(0) == ["fight/fi001.mp4"]
    assert run.run_dir == tmp_path
    (tmp_path / "again").mkdir()
    run.write(tmp_path / "again")
    assert RunRecord.read(tmp_path / "again").splits[0].model_extra == {"clips": 1, "macro": {"accuracy": 1.0}}


def _toy(draw: st.DrawFn) -> tuple[list[str], list[str], list[str]]:
    """Sources, labels and source-namespaced groups of a random multi-source clip list."""
    sources, labels, groups = [], [], []
    for s in range(draw(st.integers(2, 3))):
        for g in range(draw(st.integers(2, 8))):
            for _ in range(draw(st.integers(1, 5))):
                sources.append(f"s{s}")
                labels.append(draw(st.sampled_from(["fight", "normal"])))
                groups.append(f"s{s}:g{g}")
    return sources, labels, groups


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(0, 10_000))
def test_no_group_is_ever_on_both_sides_of_a_split(data: st.DataObject, seed: int) -> None:
    sources, labels, groups = data.draw(st.composite(_toy)())
    train, test = group_split([f"{s}|{y}" for s, y in zip(sources, labels, strict=True)], groups, 0.25, seed)
    assert not {groups[i] for i in train} & {groups[i] for i in test}
    assert sorted([*train, *test]) == list(range(len(groups)))
    train, test = leave_one_source_out(sources, "s1")
    assert {sources[i] for i in test} == {"s1"} and "s1" not in {sources[i] for i in train}
    assert not {groups[i] for i in train} & {groups[i] for i in test}


def test_group_split_stratifies_per_source() -> None:
    """Stratifying on source and label holds out about a quarter of every source's every class."""
    sources, labels, groups = [], [], []
    for s, size in (("big", 40), ("small", 12)):
        for g in range(size):
            for label in ("fight", "normal"):
                sources.append(s)
                labels.append(label)
                groups.append(f"{s}:g{g}")
    _, test = group_split([f"{s}|{y}" for s, y in zip(sources, labels, strict=True)], groups, 0.25, seed=1)
    held = Counter((sources[i], labels[i]) for i in test)
    assert held == {("big", "fight"): 10, ("big", "normal"): 10, ("small", "fight"): 3, ("small", "normal"): 3}
