"""The streaming classifier on real bundles: same answers as a training-style window, any frame it is handed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.adapters.runtime import BundleModel
from edge.core.values import Frame
from edge.preprocess import prepare_frame, window_inputs
from edge.stages.classifier import StreamClassifier
from edge.synthetic import render_clip

START = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def frames_of(images: list[np.ndarray], interval: float = 0.07) -> list[Frame]:
    return [Frame(img, i * interval, START + timedelta(seconds=i * interval)) for i, img in enumerate(images)]


def clip(kind: str, n: int, seed: int = 0, size: tuple[int, int] = (160, 120)) -> list[np.ndarray]:
    return render_clip(kind, n, size[0], size[1], np.random.default_rng(seed))  # type: ignore[arg-type]


def reference_probs(model: BundleModel, images: list[np.ndarray]) -> np.ndarray:
    """Probabilities for a window built the way training builds it (frames + 1 prepared frames)."""
    spec = model.manifest.input
    prepared = [prepare_frame(img, spec.height, spec.width) for img in images]
    return model.predict_window(window_inputs(prepared, spec.representation))


def check_same_as_training_windows(model: BundleModel) -> None:
    frames_per_window = model.manifest.input.frames
    images = clip("fight", frames_per_window + 9, seed=3)
    classifier = StreamClassifier(model, hop=4)
    predictions = {i: classifier.push(f) for i, f in enumerate(frames_of(images))}
    due = [i for i, p in predictions.items() if p is not None]
    # First window once frames + 1 sampled frames are in, then every hop frames.
    assert due == [frames_per_window, frames_per_window + 4, frames_per_window + 8]
    for i in due:
        expected = reference_probs(model, images[i - frames_per_window : i + 1])
        prediction = predictions[i]
        assert prediction is not None
        np.testing.assert_allclose(prediction.probs, expected, atol=1e-5)
        assert prediction.ts == pytest.approx(i * 0.07) and prediction.wall == START + timedelta(seconds=i * 0.07)
    assert classifier.classified == 3 and classifier.sampled == len(images)
    assert classifier.inference_ms_mean > 0 and classifier.inference_ms_last > 0


def test_streaming_windows_match_training_windows(demo_model: BundleModel) -> None:
    assert demo_model.streaming
    check_same_as_training_windows(demo_model)


@pytest.mark.slow
def test_whole_window_bundle_matches_training_windows(convlstm_bundle: Path) -> None:
    model = BundleModel(convlstm_bundle)
    assert not model.streaming
    check_same_as_training_windows(model)


def test_prediction_fields_follow_the_manifest(demo_model: BundleModel) -> None:
    manifest = demo_model.manifest
    classifier = StreamClassifier(demo_model, hop=1)
    fight = [p for f in frames_of(clip("fight", 30, seed=5)) if (p := classifier.push(f)) is not None]
    classifier.reset()
    calm = [p for f in frames_of(clip("calm", 30, seed=5)) if (p := classifier.push(f)) is not None]
    anomaly = [manifest.labels.index(a) for a in manifest.anomaly_labels]
    for p in fight + calm:
        assert p.labels == manifest.labels and p.probs.shape == (len(manifest.labels),)
        assert p.probs.sum() == pytest.approx(1.0, abs=1e-4)
        assert p.anomaly_score == pytest.approx(float(p.probs[anomaly].sum()), abs=1e-6)
        assert p.top_label == manifest.labels[int(np.argmax(p.probs))]
        assert p.anomaly_label in manifest.anomaly_labels
    # The demo model was trained on exactly these two kinds of generated scene.
    assert np.mean([p.anomaly_score for p in fight]) > 0.5 > np.mean([p.anomaly_score for p in calm])


def test_reset_starts_a_fresh_window(demo_model: BundleModel) -> None:
    frames_per_window = demo_model.manifest.input.frames
    frames = frames_of(clip("calm", 2 * frames_per_window, seed=7))
    classifier = StreamClassifier(demo_model, hop=1)
    for frame in frames[:frames_per_window]:
        assert classifier.push(frame) is None  # one short of a window
    classifier.reset()
    outputs = [classifier.push(f) for f in frames[frames_per_window:]]
    # A window never mixes frames from both sides of the reset.
    assert outputs[:frames_per_window] == [None] * frames_per_window


def test_odd_frames_are_classified_or_skipped_never_crash(demo_model: BundleModel) -> None:
    rng = np.random.default_rng(11)
    good = {
        "1x1": rng.integers(0, 256, (1, 1, 3), dtype=np.uint8),
        "grayscale": rng.integers(0, 256, (120, 160), dtype=np.uint8),
        "grayscale-1ch": rng.integers(0, 256, (120, 160, 1), dtype=np.uint8),
        "bgra": rng.integers(0, 256, (120, 160, 4), dtype=np.uint8),
        "4k": rng.integers(0, 256, (2160, 3840, 3), dtype=np.uint8),
        "tall": rng.integers(0, 256, (480, 64, 3), dtype=np.uint8),
    }
    bad = {
        "empty": np.zeros((0, 0, 3), np.uint8),
        "uint16": np.zeros((120, 160, 3), np.uint16),
        "five-channels": np.zeros((120, 160, 5), np.uint8),
        "4d": np.zeros((2, 120, 160, 3), np.uint8),
    }
    frames_per_window = demo_model.manifest.input.frames
    sequence = [good[name] for name in list(good) * (frames_per_window // len(good) + 2)]
    images: list[np.ndarray] = []
    for i, image in enumerate(sequence):
        images.append(image)
        if i % 3 == 0:
            images.append(list(bad.values())[i % len(bad)])
    classifier = StreamClassifier(demo_model, hop=1)
    predictions = [p for f in frames_of(images) if (p := classifier.push(f)) is not None]
    assert classifier.bad_frames == sum(1 for img in images if any(img is b for b in bad.values()))
    assert classifier.sampled == len(sequence)
    assert len(predictions) == len(sequence) - frames_per_window
    assert all(np.isfinite(p.probs).all() and 0.0 <= p.anomaly_score <= 1.0 for p in predictions)


def test_hop_must_be_positive(demo_model: BundleModel) -> None:
    with pytest.raises(ValueError, match="hop"):
        StreamClassifier(demo_model, hop=0)
