"""rclstm-convert's argument errors come before TensorFlow loads; --version and help for every flag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from converter.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
# Runs the CLI in a fresh interpreter and reports whether TensorFlow was imported.
PROBE = ("import sys; from converter.cli import main; code = main(sys.argv[1:]); "
         "print('tensorflow loaded' if 'tensorflow' in sys.modules else 'no tensorflow'); sys.exit(code)")


def convert_cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return done, time.monotonic() - began


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "/nonexistent.keras", "--out", "OUT"], "/nonexistent.keras: model file not found"),
        (["train", "EMPTY", "--out", "OUT"], "EMPTY: no class folders"),
        (["train", "/nonexistent-data", "--out", "OUT"], "/nonexistent-data: data folder not found"),
        (["evaluate", "/nonexistent.keras", "EMPTY"], "/nonexistent.keras: model file not found"),
    ],
)
def test_bad_inputs_fail_before_tensorflow_loads(tmp_path: Path, args: list[str], message: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.replace("EMPTY", str(empty)).replace("OUT", str(tmp_path / "out")) for a in args]
    done, took = convert_cli(*args)
    message = message.replace("EMPTY", str(empty))
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "no tensorflow"
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr
    assert took < 10, took  # ~1 s on a loaded 2-core machine; TensorFlow alone takes ~10 s to import


@pytest.mark.parametrize(("args", "message"), [
    (["--site", "nope"], "--site nope: not a source name; sources are data (name the site's folder NAME=PATH)"),
    (["--init-from", "EMPTY"], "--init-from EMPTY: no model.keras there; pass a `rclstm-convert train` run"),
], ids=["unknown-site", "init-from-not-a-run"])
def test_bad_fine_tune_flags_fail_before_tensorflow_loads(synth_data: Path, tmp_path: Path, args: list[str],
                                                          message: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.replace("EMPTY", str(empty)) for a in args]
    done, _ = convert_cli("train", str(synth_data), "--out", str(tmp_path / "out"), *args)
    assert done.returncode == 2 and done.stdout.strip() == "no tensorflow", done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message.replace("EMPTY", str(empty)) in done.stderr


def test_version_and_help_for_every_flag() -> None:
    from edge import __version__

    done = subprocess.run([sys.executable, "-m", "converter", "--version"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"rclstm-convert {__version__}"
    parser = _parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help"
                if action.default not in (None, False, [], "") and name in ("train", "synth", "convert"):
                    assert "default" in action.help.lower(), f"{name} {action.option_strings[0]}: default not shown"
