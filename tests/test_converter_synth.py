"""Generated clips and streams (edge.synthetic), the `synth` command, and a CLI that stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converter.cli import main
from edge.preprocess import prepare_frame, spread_indices, window_inputs
from edge.synthetic import render_clip, write_stream, write_video
from tests.media import read_frames


def _motion(frames: list[np.ndarray]) -> float:
    prepared = [prepare_frame(frames[i], 64, 64) for i in spread_indices(len(frames), 21)]
    return float(window_inputs(prepared, "diff").mean())


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_clips_decode_with_the_requested_shape(tmp_path: Path, suffix: str) -> None:
    frames = render_clip("calm", 25, 80, 60, np.random.default_rng(0))
    assert all(f.shape == (60, 80, 3) and f.dtype == np.uint8 for f in frames)
    decoded, fps = read_frames(write_video(tmp_path / f"clip{suffix}", frames, 25))
    assert len(decoded) == 25 and decoded[0].shape == (60, 80, 3) and fps == pytest.approx(25)


def test_fight_clips_carry_much_more_motion_than_calm_ones() -> None:
    rng = np.random.default_rng(1)
    calm = [_motion(render_clip("calm", 36, 96, 72, rng)) for _ in range(4)]
    fight = [_motion(render_clip("fight", 36, 96, 72, rng)) for _ in range(4)]
    assert min(fight) > 2 * max(calm)


def test_stream_segments_are_contiguous_and_share_one_scene(tmp_path: Path) -> None:
    spans = write_stream(tmp_path / "s.mp4", [("calm", 2), ("fight", 1.5), ("calm", 2)], fps=20, size=(96, 72))
    assert spans == [("calm", 0.0, 2.0), ("fight", 2.0, 3.5), ("calm", 3.5, 5.5)]
    frames, _ = read_frames(tmp_path / "s.mp4")
    assert len(frames) == 110
    # The same background either side of each boundary: consecutive frames differ only where people move.
    for boundary in (40, 70):
        change = np.abs(frames[boundary].astype(int) - frames[boundary - 1].astype(int)).mean()
        assert change < 12
    assert _motion(frames[40:70]) > 2 * _motion(frames[:40])


def test_bad_kind_and_extension_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind 'riot'"):
        render_clip("riot", 5, 32, 32, np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported extension"):
        write_video(tmp_path / "x.gif", [np.zeros((8, 8, 3), np.uint8)], 25)
    with pytest.raises(ValueError, match="segment kind"):
        write_stream(tmp_path / "x.mp4", [("riot", 1.0)])


def test_synth_command_writes_a_dataset_with_a_source_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path / "d"), "--clips-per-class", "2", "--seed", "3", "--size", "48x36"]) == 0
    assert "wrote 4 clips" in capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path / "d").as_posix() for p in (tmp_path / "d").rglob("*.mp4")) == [
        "calm/calm000.mp4", "calm/calm001.mp4", "fight/fight000.mp4", "fight/fight001.mp4"]
    assert (tmp_path / "d" / "videos.txt").read_text().count("https://") == 2


def test_cli_help_and_synth_do_not_import_tensorflow() -> None:
    code = "import sys, converter.cli, converter.dataset, converter.synth; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    done = subprocess.run([sys.executable, "-m", "converter", "--help"], capture_output=True, text=True, check=True)
    for command in ("synth", "train", "evaluate", "convert", "inspect"):
        assert command in done.stdout


def test_bad_option_values_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "/nowhere", "--out", "/tmp/x", "--filters", "16,abc"])
    assert exit_info.value.code == 2
    assert "not a comma-separated list of integers" in capsys.readouterr().err
