"""Training end to end on generated clips: the run directory, leak-free splits, repeated splits, bad data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converter.cli import main

pytestmark = pytest.mark.slow
PNG = b"\x89PNG"


def test_run_directory_records_everything_evaluate_and_convert_need(trained_run: Path, synth_data: Path) -> None:
    for name in ("model.keras", "history.json", "metrics.json", "run.json"):
        assert (trained_run / name).is_file(), name
    for name in ("curves.png", "confusion.png"):
        assert (trained_run / name).read_bytes()[:4] == PNG
    run = json.loads((trained_run / "run.json").read_text())
    assert run["representation"] == "diff" and run["labels"] == ["calm", "fight"]
    assert run["sources"] == [{"name": "data", "path": str(synth_data.resolve())}] and run["class_map"] == {}
    assert run["sampling"]["method"] == "spread"
    assert run["options"]["filters"] == [8, 16, 16]
    assert run["sampling"]["frame_interval_s"] > 0
    history = json.loads((trained_run / "history.json").read_text())
    assert len(history) == 1 and "val_loss" in history[0]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    summary = metrics["summary"]
    assert set(summary) >= {"macro", "binary", "runs", "clips"}
    # Three epochs on generated clips must clearly beat chance on held-out scenes.
    assert summary["binary"]["accuracy"]["mean"] >= 0.75


def test_test_scenes_never_appear_in_training(trained_run: Path, synth_data: Path) -> None:
    from converter.dataset import scan
    from converter.sources import Source

    run = json.loads((trained_run / "run.json").read_text())
    clips, _, _ = scan(Source("data", synth_data))
    group = {c.name: c.group for c in clips}
    test = set(run["test_clips"])
    assert test and {c.label for c in clips if c.name in test} == {"calm", "fight"}
    assert not {group[n] for n in test} & {group[n] for n in group if n not in test}
    split = run["splits"][0]
    assert split["train_clips"] + split["validation_clips"] + len(test) == len(clips)


@pytest.fixture(scope="module")
def two_split_run(synth_data: Path, frame_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run with two random splits (one epoch each) and what `train` printed on stdout and stderr."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("two-splits") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["train", str(synth_data), "--out", str(out), "--representation", "diff", "--seeds", "2",
                     "--split", "random", "--augment", "flip+jitter", "--epochs", "1", "--filters", "4,8",
                     "--pools", "8,4", "--anomaly-classes", "fight", "--cache", str(frame_cache)])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue() + stderr.getvalue()


def test_repeated_random_splits_with_augmentation_report_mean_and_spread(two_split_run: tuple[Path, str]) -> None:
    out, printed = two_split_run
    assert printed.count("val_loss") == 2  # one Keras progress line per epoch, one epoch per split
    assert "split 2:" in printed and "over 2 split(s)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["runs"] == 2 and "std" in metrics["summary"]["macro"]["accuracy"]
    assert (out / "runs" / "00" / "model.keras").is_file() and (out / "runs" / "01" / "model.keras").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["splits"][0]["test_clips"] != run["splits"][1]["test_clips"]
    assert run["options"]["augment"] == "flip+jitter"


def test_convert_every_split_records_keras_and_bundle_over_the_splits(
    two_split_run: tuple[Path, str], frame_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.bundle import read_manifest

    out, _ = two_split_run
    bundle = tmp_path / "bundle"
    assert main(["convert", str(out / "model.keras"), "--out", str(bundle), "--every-split",
                 "--cache", str(frame_cache)]) == 0
    assert "split 1: converting" in capsys.readouterr().err
    metrics = read_manifest(bundle).metrics
    trained = json.loads((out / "metrics.json").read_text())["summary"]["binary"]
    keras_runs, bundle_runs = metrics["keras_runs"], metrics["bundle_runs"]
    test_clips = sum(len(s["test_clips"]) for s in json.loads((out / "run.json").read_text())["splits"])
    assert (keras_runs.runs, keras_runs.clips, bundle_runs.runs, bundle_runs.clips) == (2, test_clips, 2, test_clips)
    # The Keras row, recomputed through the converter, is what training measured on the same clips.
    for column in ("accuracy", "precision", "recall", "f1"):
        assert getattr(keras_runs, column) == pytest.approx(trained[column]["mean"])
        assert getattr(keras_runs, f"{column}_std") == pytest.approx(trained[column]["std"])
    # A float32 bundle takes the Keras model's decisions (the parity gate held on every split).
    assert bundle_runs == keras_runs
    assert metrics["bundle"].clips == len(json.loads((out / "run.json").read_text())["splits"][0]["test_clips"])


def test_every_split_needs_a_run_with_several_splits(
    trained_run: Path, frame_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(trained_run / "model.keras"), "--out", str(tmp_path / "b"), "--every-split",
                 "--cache", str(frame_cache)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("is not from a run with several splits; train with --seeds N or --folds K"), err


def test_training_on_bad_data_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "data folder not found" in err and len(err.splitlines()) == 1
    (tmp_path / "data" / "calm").mkdir(parents=True)
    (tmp_path / "data" / "fight").mkdir()
    assert main(["train", str(tmp_path / "data"), "--out", str(tmp_path / "run")]) == 2
    assert "class folder has no videos" in capsys.readouterr().err


def test_unknown_anomaly_class_is_refused(synth_data: Path, frame_cache: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(synth_data), "--out", str(tmp_path / "run"), "--anomaly-classes", "riot",
                 "--cache", str(frame_cache)]) == 2
    assert "--anomaly-classes riot not among the classes calm, fight" in capsys.readouterr().err


def test_group_folds_cover_every_clip_once(synth_data: Path, frame_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "folds"
    assert main(["train", str(synth_data), "--out", str(out), "--representation", "diff", "--folds", "3",
                 "--epochs", "1", "--filters", "4", "--pools", "16", "--cache", str(frame_cache)]) == 0
    run = json.loads((out / "run.json").read_text())
    tested = [clip for split in run["splits"] for clip in split["test_clips"]]
    assert len(run["splits"]) == 3 and len(tested) == len(set(tested)) == 24
    assert json.loads((out / "metrics.json").read_text())["summary"]["runs"] == 3


def test_class_weights_are_one_when_balanced_and_lift_the_rarer_class() -> None:
    from converter.train import balanced_weights

    assert balanced_weights(np.array([0, 1, 0, 1]), 2) == {0: 1.0, 1: 1.0}
    weights = balanced_weights(np.array([0, 0, 0, 0, 1, 1]), 2)
    assert weights[1] == 2 * weights[0] and weights[0] == 0.75
