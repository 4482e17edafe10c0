"""Disk fixtures: a small real tmpfs to fill up (full disks, no inodes), for the outbox and the clips."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.faults import tmpfs as mounted


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs with 64 inodes, or a skip where mounting is not allowed."""
    with mounted(tmp_path / "tmpfs") as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        yield mnt
