"""Reading test videos back: every decoded frame and the file's frame rate, as OpenCV gives them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_frames(path: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


# Boxes on the way from the top of an MP4 to a track's sample table; their sizes include the table's.
_PATH_TO_STTS = (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stts")


def retime_mp4(path: Path, steps: list[int]) -> Path:
    """Give an MP4's frames irregular timestamps: frame i lasts ``steps[i % len(steps)]`` of its original duration.

    Rewrites the time-to-sample table (``stts``) of a file whose index follows its media data (what
    OpenCV's and GStreamer's muxers write), so no data offset moves: a real variable-frame-rate file,
    decoded by FFmpeg like any other, from one any encoder here can write at a constant rate.
    """
    data = bytearray(path.read_bytes())
    spans: list[tuple[int, int]] = []  # (offset, size) of each box on the path
    start, end = 0, len(data)
    seen: list[bytes] = []  # the top-level boxes before moov
    for name in _PATH_TO_STTS:
        while start < end:
            size, kind = int.from_bytes(data[start : start + 4], "big"), bytes(data[start + 4 : start + 8])
            if kind == name:
                break
            seen.append(kind)
            start += size
        else:
            raise ValueError(f"{path}: no {name.decode()} box")
        if name == b"moov" and b"mdat" not in seen:
            raise ValueError(f"{path}: the index comes before the media data")
        spans.append((start, size))
        start, end = start + 8, start + size
    stts_at, stts_size = spans[-1]
    entries = int.from_bytes(data[stts_at + 12 : stts_at + 16], "big")
    samples, delta = [], 0
    for e in range(entries):
        at = stts_at + 16 + 8 * e
        count, delta = int.from_bytes(data[at : at + 4], "big"), int.from_bytes(data[at + 4 : at + 8], "big")
        samples += [delta] * count
    table = b"".join((1).to_bytes(4, "big") + (d * steps[i % len(steps)]).to_bytes(4, "big")
                     for i, d in enumerate(samples))
    stts = (16 + len(table)).to_bytes(4, "big") + b"stts" + bytes(data[stts_at + 8 : stts_at + 12])
    stts += len(samples).to_bytes(4, "big") + table
    grow = len(stts) - stts_size
    for at, size in spans[:-1]:
        data[at : at + 4] = (size + grow).to_bytes(4, "big")
    data[stts_at : stts_at + stts_size] = stts
    path.write_bytes(bytes(data))
    return path
