"""Real bad luck for the fault tests and the issue-12 table (``python -m bench.faults``): small file systems
that fill up, write-ahead logs left by an unclean stop, damaged video, and a process's peak memory."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from edge.synthetic import write_stream

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def tmpfs(directory: Path, size: str = "1m", inodes: int = 64) -> Iterator[Path | None]:
    """A tmpfs of ``size`` with ``inodes`` inodes mounted at ``directory``; None where mounting is not allowed."""
    if os.geteuid() != 0:
        yield None
        return
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes}", "tmpfs", str(directory)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def fill_inodes(directory: Path) -> list[Path]:
    """Empty files until the file system has no inode left; the files, to free them again."""
    made = []
    try:
        while True:
            path = directory / f"filler-{len(made)}"
            path.touch()
            made.append(path)
    except OSError:
        return made


def fill_space(directory: Path) -> Path:
    """One file that takes every free block; remove it to give the space back."""
    filler = directory / "filler.bin"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
                out.flush()
        except OSError:
            pass
    return filler


def free(fillers: list[Path], filler: Path | None = None) -> None:
    """Give back what ``fill_inodes`` (and ``fill_space``) took."""
    if filler is not None:
        filler.unlink()
    for path in fillers:
        path.unlink()


# Stores ``count`` messages with automatic checkpoints off, then ends like SIGKILL: every message is only
# in the -wal file, as between two checkpoints of a running daemon.
WAL_WRITER = """
import os, sys
from edge.adapters.outbox import Outbox
box = Outbox(sys.argv[1])
box._db.execute("PRAGMA wal_autocheckpoint=0")
for i in range(int(sys.argv[2])):
    box.put("cam/events", b"event %d " % i + b"x" * 300)
os._exit(0)
"""


def unclean_wal(path: Path, count: int = 30) -> Path:
    """An outbox at ``path`` whose ``count`` messages sit in the -wal an unclean stop left; the -wal's path."""
    subprocess.run([sys.executable, "-c", WAL_WRITER, str(path), str(count)], check=True, cwd=ROOT, timeout=60)
    return Path(f"{path}-wal")


def damaged_mp4(path: Path) -> Path:
    """A real encoded clip with its middle garbled: FFmpeg complains about a hundred times while decoding it."""
    write_stream(path, [("calm", 20.0)], fps=25)
    data = bytearray(path.read_bytes())
    rng = random.Random(1)
    for i in range(len(data) // 10, len(data) * 9 // 10, 101):
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))
    return path


def peak_rss_mb(proc: subprocess.Popen, seconds: float | None = None) -> float:
    """The process's peak resident memory (VmHWM) in MB, read until it exits (or for ``seconds``)."""
    peak = 0.0
    deadline = None if seconds is None else time.monotonic() + seconds
    while proc.poll() is None and (deadline is None or time.monotonic() < deadline):
        with contextlib.suppress(OSError, ValueError, IndexError):
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) / 1024)
        time.sleep(0.2)
    return peak


def checkpointed_outbox(path: Path, count: int, size: int = 500) -> list[bytes]:
    """An outbox of ``count`` messages closed cleanly (everything checkpointed into the file); the payloads."""
    from edge.adapters.outbox import Outbox

    box = Outbox(path)
    payloads = [f"event {i:04d} ".encode() + b"x" * size for i in range(count)]
    for payload in payloads:
        box.put("cam/events", payload)
    box.close()  # the last connection checkpoints the WAL into the file
    return payloads


def pattern_video(path: Path, width: int, height: int, frames: int = 20, fps: float = 10.0) -> Path:
    """A moving pattern at any resolution (4K included), encoded by OpenCV like a camera's recording."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    yy, xx = np.mgrid[0:height, 0:width]
    base = ((xx // 40 + yy // 40) % 2 * 120 + 60).astype(np.uint8)
    for i in range(frames):
        frame = np.dstack([base, np.roll(base, i * 16, axis=1), base[::-1]])
        cv2.rectangle(frame, (i * width // frames, height // 3), (i * width // frames + width // 8, height // 2),
                      (255, 255, 255), -1)
        writer.write(frame)
    writer.release()
    return path
