"""Dataset scanning, decoding cache, bad input, source groups and splits, on real generated video files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from converter import dataset as ds
from converter.groups import assign_groups, parse_source_map
from converter.splits import group_kfold, group_split, random_split
from edge.synthetic import render_clip, write_video

FIGHT_SURV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fight-surv"


def _clip(path: Path, kind: str = "calm", n_frames: int = 30, seed: int = 0) -> Path:
    return write_video(path, render_clip(kind, n_frames, 64, 48, np.random.default_rng(seed)), 25)


@pytest.fixture()
def small_data(tmp_path: Path) -> Path:
    for kind in ("calm", "fight"):
        for i in range(3):
            _clip(tmp_path / "data" / kind / f"{kind}{i}.mp4", kind, 30, i)
    return tmp_path / "data"


def _messages(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err


def test_missing_data_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ds.DataError, match="data folder not found") as err:
        ds.scan(tmp_path / "nowhere")
    assert "\n" not in str(err.value)


def test_empty_data_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ds.DataError, match="no class folders"):
        ds.scan(tmp_path)


def test_class_folder_without_videos_names_the_folder(small_data: Path) -> None:
    (small_data / "empty").mkdir()
    (small_data / "empty" / "notes.txt").write_text("not a video")
    with pytest.raises(ds.DataError, match=r"empty: class folder has no videos"):
        ds.scan(small_data)


def test_unknown_class_subset_is_an_error(small_data: Path) -> None:
    with pytest.raises(ds.DataError, match="no folder for class"):
        ds.scan(small_data, ["calm", "riot"])


def test_corrupt_and_short_clips_are_listed_and_skipped(small_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (small_data / "fight" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    _clip(small_data / "calm" / "short.avi", "calm", 12)
    data = ds.load_dataset(small_data, frames=20, size=32, cache_dir=tmp_path / "cache")
    skipped = dict(data.skipped)
    assert "unreadable video" in skipped["fight/broken.mp4"]
    assert "only 12 frames" in skipped["calm/short.avi"]
    assert len(data.clips) == 6
    err = _messages(capsys)
    assert "skipped fight/broken.mp4" in err and "skipped calm/short.avi" in err


def test_second_load_reads_the_cache_and_gives_identical_frames(small_data: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    first = ds.load_dataset(small_data, frames=20, size=32, cache_dir=cache)
    assert "6 decoded, 0 from cache" in _messages(capsys)
    second = ds.load_dataset(small_data, frames=20, size=32, cache_dir=cache)
    assert "0 decoded, 6 from cache" in _messages(capsys)
    for a, b in zip(first.clips, second.clips, strict=True):
        assert np.array_equal(a.frames, b.frames) and a.fps == b.fps
    # A different model size is a different cache entry, not a stale hit.
    ds.load_dataset(small_data, frames=20, size=16, cache_dir=cache)
    assert "6 decoded" in _messages(capsys)


def test_damaged_cache_entry_is_rebuilt(small_data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ds.load_dataset(small_data, frames=20, size=32, cache_dir=cache)
    for entry in cache.glob("*.npz"):
        entry.write_bytes(b"garbage")
    again = ds.load_dataset(small_data, frames=20, size=32, cache_dir=cache)
    assert len(again.clips) == 6


def test_spread_sampling_records_the_median_interval(small_data: Path, tmp_path: Path) -> None:
    from converter.sampling import WindowSampling

    data = ds.load_dataset(small_data, frames=20, size=32, cache_dir=tmp_path / "cache")
    stats = WindowSampling("spread", 20).manifest([(len(d.frames), d.fps) for d in data.clips])
    assert stats["method"] == "spread"
    assert stats["frame_interval_s"] == pytest.approx(30 / 25 / 20)
    assert stats["window_s"] == pytest.approx(30 / 25)


SOURCE_MAP = """https://video.example/a
fi001: 0.13.50 - 0.15.60
nofi001: 2.34.70 - 2.37.80
https://video.example/b
fi002: 0.14.50 - 0.17.50
nofi022: 0.14.20 - 0.16.20
https://video.example/c
nofi022: 8.43.20 - 8.45.30
fi003: 1.00.00 - 1.02.00
https://video.example/d
fi004: 1.00.00 - 1.02.00


nofi062 - nofi064 : CamNet Dataset
nofi064 - nofi066 : Synopsis dataset
"""


def test_source_map_merges_shared_clips_and_keeps_dataset_ranges(tmp_path: Path) -> None:
    path = tmp_path / "videos.txt"
    path.write_text(SOURCE_MAP)
    groups = parse_source_map(path)
    assert groups["fi001"] == groups["nofi001"]
    assert groups["fi002"] == groups["nofi022"] == groups["fi003"]  # b and c share nofi022
    assert groups["fi004"] != groups["fi001"]
    assert groups["nofi062"] == groups["nofi064"]  # the overlap stays in the first range
    assert groups["nofi065"] == groups["nofi066"] != groups["nofi062"]
    assert len(set(groups.values())) == 5


def test_ucf50_group_ids_and_per_clip_fallback(tmp_path: Path) -> None:
    groups, how = assign_groups(["v_Punch_g07_c01", "v_Punch_g07_c02", "v_Fencing_g08_c01"], tmp_path)
    assert groups == ["g07", "g07", "g08"] and "ucf50" in how
    groups, how = assign_groups(["a", "b"], tmp_path)
    assert groups == ["clip:a", "clip:b"] and "per clip" in how


@pytest.mark.skipif(not (FIGHT_SURV / "videos.txt").is_file(), reason=f"{FIGHT_SURV} is not present on this machine")
def test_fight_dataset_source_map_gives_45_groups() -> None:
    stems = [p.stem for p in sorted(FIGHT_SURV.glob("*/*.mp4"))]
    groups, _ = assign_groups(stems, FIGHT_SURV)
    assert len(stems) == 300
    assert len(set(groups)) == 45


def _toy_labels(seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for g in range(30):
        for _ in range(int(rng.integers(1, 8))):
            labels.append(str(rng.choice(["calm", "fight"])))
            groups.append(f"g{g}")
    return labels, groups


def test_group_split_keeps_groups_whole_and_is_close_to_a_quarter_per_class() -> None:
    labels, groups = _toy_labels()
    train, test = group_split(labels, groups, 0.25, seed=3)
    assert not {groups[i] for i in train} & {groups[i] for i in test}
    assert sorted([*train, *test]) == list(range(len(labels)))
    totals, held = Counter(labels), Counter(labels[i] for i in test)
    for label in totals:
        assert abs(held[label] / totals[label] - 0.25) < 0.05
    again = group_split(labels, groups, 0.25, seed=3)
    assert np.array_equal(again[1], test)


def test_group_kfold_covers_every_clip_once_without_sharing_groups() -> None:
    labels, groups = _toy_labels(1)
    folds = group_kfold(labels, groups, 4, seed=0)
    seen = np.concatenate([test for _, test in folds])
    assert sorted(seen) == list(range(len(labels)))
    for train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        assert len(test) > 0


def test_random_split_is_stratified() -> None:
    labels = ["calm"] * 40 + ["fight"] * 20
    _, test = random_split(labels, 0.25, seed=0)
    assert Counter(labels[i] for i in test) == {"calm": 10, "fight": 5}


def test_group_split_refuses_a_single_group() -> None:
    with pytest.raises(ValueError, match="at least two source groups"):
        group_split(["calm", "fight"], ["g", "g"], 0.25, seed=0)


def test_scan_uses_the_synth_source_map(tmp_path: Path) -> None:
    from converter.synth import write_dataset

    write_dataset(tmp_path / "d", clips_per_class=3, seed=2, size=(48, 36), frames_range=(21, 22))
    clips, labels, how = ds.scan(tmp_path / "d")
    assert labels == ["calm", "fight"] and "source map" in how
    by_group = Counter(c.group for c in clips)
    assert len(by_group) == 3 and set(by_group.values()) == {2}  # one scene, a calm and a fight clip


def test_frames_are_prepared_and_cached_per_preprocessing_version(tmp_path: Path) -> None:
    """Training prepares frames with the newest version; a v2 model's clips are prepared (and cached) as v2."""
    from edge.preprocess import PREPROCESS_VERSION, prepare_frame

    path = write_video(tmp_path / "data" / "calm" / "big.mp4",
                       render_clip("fight", 12, 320, 240, np.random.default_rng(3)), 25)
    cache = tmp_path / "cache"
    clip = ds.Clip(path, "calm", "g")
    v2, fresh2 = ds.load_clip(clip, 64, 64, cache, 2)
    latest, fresh3 = ds.load_clip(clip, 64, 64, cache)
    assert fresh2 and fresh3 and len(list(cache.glob("*.npz"))) == 2  # one cache entry per version
    assert not np.array_equal(v2.frames, latest.frames)
    assert ds.load_clip(clip, 64, 64, cache, 2)[1] is False
    grey, fresh_grey = ds.load_clip(clip, 64, 64, cache, grey=True)  # a motion model's frames: their own entry
    assert fresh_grey and len(list(cache.glob("*.npz"))) == 3 and grey.frames.shape[1:] == (64, 64)
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read()
    capture.release()
    assert ok
    latest_version = PREPROCESS_VERSION
    for item, version, is_grey in ((v2, 2, False), (latest, latest_version, False), (grey, latest_version, True)):
        prepared = prepare_frame(first, 64, 64, version, is_grey)
        assert np.array_equal(item.frames[0], np.rint(prepared * 255).astype(np.uint8))
