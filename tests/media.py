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
