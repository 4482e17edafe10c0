"""`rclstm-convert synth`: a small generated dataset in the real data's layout, for tests and trying the tool.

It is a test aid, not a substitute for real data. Each generated "source" is one scene (one
background) with a calm clip and a fight clip, listed in ``videos.txt`` like the real fight
dataset's source map, so ``--split group`` keeps a scene on one side as it would a real camera.

The shipped demo bundle (edge/models/demo-synth) was made with exactly:

    rclstm-convert synth /tmp/demo-data --clips-per-class 40 --seed 7 --size 160x120
    rclstm-convert train /tmp/demo-data --arch rclstm --out /tmp/demo-run --anomaly-classes fight \
        --representation diff --filters 8,16,16 --pools 4,4,2 --epochs 8 --seed 7 --learning-rate 0.003
    RCLSTM_TFLITE_PYTHON=/work/venv-tfl/bin/python \
    rclstm-convert convert /tmp/demo-run/model.keras --out edge/models/demo-synth --quantize float32 \
        --name demo-synth --version 2
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter.groups import SOURCE_MAP_NAME
from edge.synthetic import KINDS, render_clip, write_video


def write_dataset(
    out_dir: Path,
    clips_per_class: int = 10,
    seed: int = 0,
    size: tuple[int, int] = (96, 72),
    frames_range: tuple[int, int] = (30, 40),
    fps: float = 25.0,
) -> list[Path]:
    """Write ``out_dir/calm`` and ``out_dir/fight`` clips plus a ``videos.txt`` source map."""
    out_dir = Path(out_dir)
    width, height = size
    source_map: list[str] = []
    written: list[Path] = []
    for source in range(clips_per_class):
        source_map.append(f"https://synthetic.invalid/scene-{seed}-{source:03d}")
        for kind in KINDS:
            # The same seed per source draws the same background first: one scene, two activities.
            rng = np.random.default_rng([seed, source])
            lo, hi = frames_range
            n_frames = int(np.random.default_rng([seed, source, len(kind)]).integers(lo, hi + 1))
            frames = render_clip(kind, n_frames, width, height, rng)  # type: ignore[arg-type]
            stem = f"{kind}{source:03d}"
            written.append(write_video(out_dir / kind / f"{stem}.mp4", frames, fps))
            source_map.append(f"{stem}: 0.00.00 - 0.{n_frames / fps:05.2f}")
    (out_dir / SOURCE_MAP_NAME).write_text("\n".join(source_map) + "\n", encoding="utf-8")
    return written
