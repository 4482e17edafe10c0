"""The peak frame of an incident as a JPEG that fits a byte budget (snapshots are off by default)."""

from __future__ import annotations

import cv2
import numpy as np

QUALITIES = (85, 70, 50, 35)


def encode_jpeg(image: np.ndarray, max_bytes: int) -> bytes | None:
    """Lower the quality, then halve the size, until the JPEG fits; None if even a thumbnail does not."""
    while min(image.shape[:2]) >= 16:
        for quality in QUALITIES:
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and buf.nbytes <= max_bytes:
                return buf.tobytes()
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return None
