"""Model fixtures: a generated dataset, a tiny trained model and its bundles (session scoped).

Training and converting are the slow part of the suite, so each happens once per session and every
test that needs a model shares it. TensorFlow is imported inside the fixtures only, so test modules
that never ask for a model never pay for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.adapters.runtime import BundleModel
from edge.models import resolve_bundle

# A generated dataset small enough to train in seconds and big enough for a group split.
SYNTH_CLIPS_PER_CLASS = 12
SYNTH_SIZE = (96, 72)
SYNTH_FRAMES = (30, 40)
# Settings for the tiny model: learnable on synth data in 3 epochs with the diff representation.
TINY = {"filters": [8, 16, 16], "pools": [4, 4, 2], "epochs": 3, "patience": 3, "batch_size": 2,
        "learning_rate": 3e-3, "augment": "none"}


def tflite_python() -> Path | None:
    """The second environment's interpreter (tflite-runtime 2.14), when configured."""
    value = os.environ.get("RCLSTM_TFLITE_PYTHON")
    return Path(value) if value else None


@pytest.fixture(scope="session")
def frame_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decoded-frame cache private to the session (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("frame-cache")


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from converter.synth import write_dataset

    out = tmp_path_factory.mktemp("synth") / "data"
    write_dataset(out, SYNTH_CLIPS_PER_CLASS, seed=1, size=SYNTH_SIZE, frames_range=SYNTH_FRAMES)
    return out


@pytest.fixture(scope="session")
def trained_run(synth_data: Path, frame_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RCLSTM (diff, small filters) trained for 3 epochs on ``synth_data``; the run directory."""
    from converter.train import TrainOptions, train

    out = tmp_path_factory.mktemp("run") / "rclstm"
    train(TrainOptions(data_dir=synth_data, out=out, representation="diff", anomaly_classes=["fight"], seed=0,
                       cache=frame_cache, **TINY))
    return out


@pytest.fixture(scope="session")
def bundle_factory(
    request: pytest.FixtureRequest, frame_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """``bundle_factory(mode, arch="rclstm")`` converts the arch's run once per quantization mode.

    The run is asked for only when needed, so RCLSTM-only tests never train the ConvLSTM.
    """
    from converter.convert import ConvertOptions, convert

    made: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("bundles")
    runs = {"rclstm": "trained_run", "convlstm": "convlstm_run", "flow": "flow_run"}

    def make(mode: str, arch: str = "rclstm") -> Path:
        if (mode, arch) not in made:
            out = root / f"{arch}-{mode}"
            run: Path = request.getfixturevalue(runs[arch])
            convert(ConvertOptions(model=run / "model.keras", out=out, quantize=mode,  # type: ignore[arg-type]
                                   name=f"tiny-{arch}-{mode}", verify_python=tflite_python(), cache=frame_cache))
            made[mode, arch] = out
        return made[mode, arch]

    return make


@pytest.fixture(scope="session")
def rclstm_bundle(bundle_factory: Callable[..., Path]) -> Path:
    return bundle_factory("float32")


@pytest.fixture(scope="session")
def convlstm_run(synth_data: Path, frame_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ConvLSTM trained for one epoch on ``synth_data`` (enough to have real weights to convert)."""
    from converter.train import TrainOptions, train

    out = tmp_path_factory.mktemp("run") / "convlstm"
    train(TrainOptions(data_dir=synth_data, out=out, arch="convlstm", representation="diff",
                       anomaly_classes=["fight"], epochs=1, patience=1, batch_size=4, cache=frame_cache))
    return out


@pytest.fixture(scope="session")
def flow_run(synth_data: Path, frame_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dense+LSTM model over optical-flow statistics (representation ``flow``), 3 epochs on ``synth_data``."""
    from converter.train import TrainOptions, train

    out = tmp_path_factory.mktemp("run") / "flow"
    train(TrainOptions(data_dir=synth_data, out=out, representation="flow", anomaly_classes=["fight"], epochs=3,
                       patience=3, batch_size=2, augment="none", cache=frame_cache))
    return out


@pytest.fixture(scope="session")
def convlstm_bundle(bundle_factory: Callable[..., Path]) -> Path:
    return bundle_factory("float32", "convlstm")


@pytest.fixture(scope="session")
def demo_model() -> BundleModel:
    """The committed demo bundle (edge/models/demo-synth), loaded once."""
    return BundleModel(resolve_bundle("demo"))
