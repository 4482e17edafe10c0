"""The shipped unit passes systemd's own checks: verify prints nothing, exposure stays at 2.0 or lower."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "rclstm-edge.service"
SYSTEM_UNITS = Path("/usr/lib/systemd/system")

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not SYSTEM_UNITS.is_dir(),
    reason="systemd-analyze is not installed (.ci/run installs the systemd package)",
)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """A root tree with the system's units, the unit under test and an executable at its ExecStart path.

    `verify` checks that ExecStart exists; a root tree lets it do so without installing anything
    on the machine running the tests.
    """
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    shutil.copy(UNIT, unit_dir / UNIT.name)
    exec_start = re.search(r"^ExecStart=(\S+)", UNIT.read_text(), re.M)
    assert exec_start, "the unit has no ExecStart="
    binary = root / exec_start.group(1).lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return root


def test_verify_prints_nothing(image_root: Path) -> None:
    # `verify` exits 0 even for unknown keys; the words it prints are the verdict.
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={image_root}", UNIT.name],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr + result.stdout
    assert result.returncode == 0


def test_verify_catches_a_broken_unit(image_root: Path) -> None:
    """The check above is only worth something if a wrong key makes it speak."""
    broken = image_root / "etc/systemd/system" / UNIT.name
    broken.write_text(broken.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=yes\nNoSuchKey=1"))
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={image_root}", UNIT.name], capture_output=True, text=True
    )
    assert "NoSuchKey" in result.stderr


def test_security_exposure_is_at_most_two() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


def test_camera_access_survives_hardening() -> None:
    """Hardening must not take the cameras away: the settings that would are relaxed on purpose."""
    text = UNIT.read_text()
    assert "DeviceAllow=char-video4linux rw" in text
    assert "SupplementaryGroups=video" in text
    assert re.search(r"^PrivateDevices=no", text, re.M)
    assert re.search(r"^Type=notify", text, re.M) and re.search(r"^WatchdogSec=\d+", text, re.M)
