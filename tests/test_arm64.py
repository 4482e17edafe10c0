"""The arm64 comparison's tolerances, on real output of the device commands (testbed/arm64.py).

`.ci/arm64` trusts this comparison to tell "the Pi's build decoded a few pixels differently" from
"the Pi's build detects something else", so both sides of that line are checked here on what the
commands really print, changed the way the other architecture could change it.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.synthetic import write_video
from testbed import arm64
from testbed.arm64 import SCORE_TOL, TIME_TOL_S, compare_check, compare_events, load_events, max_differences
from tests.media import read_frames

ROOT = Path(__file__).resolve().parents[1]


def _edge(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=180, check=True)
    return proc.stdout


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("arm64")
    arm64.prepare(folder)
    return folder


@pytest.fixture(scope="module")
def runs(clip_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two runs of `run --fast` on the clip with the built-in model and the clip's config, as in .ci/arm64:
    fresh event ids and anchors, the same incidents."""
    clip, config = str(clip_dir / "clip.mp4"), str(clip_dir / "check.toml")
    first, second = (load_events(_edge("run", "--config", config, "--source", clip, "--fast",
                                       "--state-dir", str(clip_dir / f"state{i}"))) for i in range(2))
    return first, second


def _second_start(events: list[dict]) -> int:
    """The index of the second incident's start message."""
    return next(i for i, e in enumerate(events) if e["event_id"] != events[0]["event_id"])


def _shift(value: str, seconds: float) -> str:
    moved = datetime.fromisoformat(value.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return moved.isoformat().replace("+00:00", "Z")


def test_two_runs_of_the_same_clip_agree_though_ids_and_times_differ(runs: tuple[list, list]) -> None:
    first, second = runs
    assert len({e["event_id"] for e in first}) == 2, "the clip's two fights are two incidents"
    assert {e["event_id"] for e in first}.isdisjoint(e["event_id"] for e in second)
    assert compare_events(first, second) == []


def test_a_clip_decoded_two_levels_apart_agrees(clip_dir: Path, runs: tuple[list, list]) -> None:
    """What the other architecture's OpenCV does, done here: every pixel moved by up to 2 levels, encoded again."""
    frames, fps = read_frames(clip_dir / "clip.mp4")
    rng = np.random.default_rng(0)
    write_video(clip_dir / "noisy.mp4",
                [np.clip(f.astype(np.int16) + rng.integers(-2, 3, f.shape), 0, 255).astype(np.uint8) for f in frames],
                fps)
    noisy = load_events(_edge("run", "--config", str(clip_dir / "check.toml"), "--source", str(clip_dir / "noisy.mp4"),
                              "--fast", "--state-dir", str(clip_dir / "noisy-state")))
    assert max_differences(runs[0], noisy)["score"] > 0, "the noise did not reach the model"
    assert compare_events(runs[0], noisy) == []


def test_scores_within_the_tolerance_agree_and_beyond_it_do_not(runs: tuple[list, list]) -> None:
    reference = runs[0]
    near, far = copy.deepcopy(reference), copy.deepcopy(reference)
    near[1]["peak_score"] = reference[1]["peak_score"] - SCORE_TOL * 0.9
    far[1]["peak_score"] = reference[1]["peak_score"] - SCORE_TOL * 1.5
    assert compare_events(reference, near) == []
    [problem] = compare_events(reference, far)
    assert problem.startswith(f"incident 1 {reference[1]['type']} (seq 1): peak_score "), problem


def test_an_incident_one_hop_later_agrees_a_second_later_does_not(runs: tuple[list, list]) -> None:
    reference = runs[0]
    second_start = _second_start(reference)
    hop, late = copy.deepcopy(reference), copy.deepcopy(reference)
    hop[second_start]["started_at"] = _shift(reference[second_start]["started_at"], 0.52)  # a hop and a frame
    late[second_start]["started_at"] = _shift(reference[second_start]["started_at"], 2 * TIME_TOL_S)
    assert compare_events(reference, hop) == []
    [problem] = compare_events(reference, late)
    assert problem.startswith("incident 2 start (seq 0): started_at at "), problem


def test_a_mean_score_may_move_by_one_window_only_when_the_incident_began_a_window_apart(
        runs: tuple[list, list]) -> None:
    """Real footage on litert: a start one hop later, so its mean over 4 windows had one other window in it
    (0.72 on x86, 0.78 on arm64). The same move in an incident that began at the same time is a difference."""
    reference = runs[0]
    second_start = _second_start(reference)
    share = 1.0 / reference[second_start]["windows"]
    moved = SCORE_TOL + share * 0.5
    later, same_start = copy.deepcopy(reference), copy.deepcopy(reference)
    for events in (later, same_start):
        events[second_start]["mean_score"] = reference[second_start]["mean_score"] - moved
    later[second_start]["started_at"] = _shift(reference[second_start]["started_at"], 0.52)
    assert compare_events(reference, later) == []
    [problem] = compare_events(reference, same_start)
    assert problem.startswith("incident 2 start (seq 0): mean_score "), problem
    later[second_start]["mean_score"] = reference[second_start]["mean_score"] - (SCORE_TOL + share * 1.2)
    [problem] = compare_events(reference, later)
    assert "mean_score" in problem, problem


def test_a_missing_incident_or_another_ending_is_a_difference(runs: tuple[list, list]) -> None:
    reference = runs[0]
    first_only = [e for e in reference if e["event_id"] == reference[0]["event_id"]]
    assert compare_events(reference, first_only) == ["1 incident(s) on arm64, 2 on x86"]
    other_end = copy.deepcopy(reference)
    end = next(e for e in other_end if e["type"] == "end")
    end["end_reason"] = "max_duration"
    [problem] = compare_events(reference, other_end)
    assert problem.endswith(": end_reason 'max_duration' on arm64, 'calm' on x86"), problem


def test_check_agrees_across_durations_and_not_across_verdicts(clip_dir: Path) -> None:
    text = _edge("check", "--config", str(clip_dir / "check.toml"))
    model = next(line for line in text.splitlines() if line.startswith("PASS model:"))
    duration = re.search(r"in \d+ ms", model)
    assert duration, model
    slower = text.replace(duration.group(0), "in 917 ms")
    assert slower != text and compare_check(text, slower) == []
    failed = text.replace("PASS camera", "FAIL camera")
    [problem] = compare_check(text, failed)
    assert problem.startswith("check says 'FAIL camera clip:"), problem


def test_the_command_line_prints_one_line_and_exits_1_on_a_difference(runs: tuple[list, list],
                                                                       tmp_path: Path) -> None:
    x86, arm = tmp_path / "x86.jsonl", tmp_path / "arm64.jsonl"
    x86.write_text("".join(json.dumps(e) + "\n" for e in runs[0]))
    arm.write_text("".join(json.dumps(e) + "\n" for e in runs[1]))
    agree = subprocess.run([sys.executable, "-m", "testbed.arm64", "events", str(x86), str(arm)],
                           capture_output=True, text=True, cwd=ROOT)
    assert agree.returncode == 0 and agree.stdout.startswith("2 incident(s)"), agree
    arm.write_text("".join(json.dumps(e) + "\n" for e in runs[1][:1]))
    differ = subprocess.run([sys.executable, "-m", "testbed.arm64", "events", str(x86), str(arm)],
                            capture_output=True, text=True, cwd=ROOT)
    assert differ.returncode == 1 and len(differ.stdout.splitlines()) == 1, differ


def test_a_recording_runs_with_the_models_own_settings(clip_dir: Path, tmp_path: Path) -> None:
    """RCLSTM_ARM64_CLIP: the recording is copied in and the config leaves the decision to the model."""
    arm64.prepare(tmp_path, clip_dir / "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == (clip_dir / "clip.mp4").read_bytes()
    assert "[decision]" not in (tmp_path / "check.toml").read_text()
    assert f"[decision]\nthreshold = {arm64.GENERATED_DECISION['threshold']}\n" in (clip_dir / "check.toml").read_text()
