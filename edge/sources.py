"""Camera sources: frames with timestamps from V4L2, RTSP, HTTP MJPEG or a file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One captured image with its stream time (monotonic per source) and wall time (UTC)."""

    image: np.ndarray
    ts: float
    wall: datetime
