"""Batch-1 inference twins of the training graphs, with the trained weights copied in.

The training graph is what Keras trains well; the twin is what TFLite runs well:
- RCLSTM -> ``encoder`` (one frame -> feature vector; the per-frame layers without TimeDistributed,
  so time is folded into the batch, measured ~8x faster in LiteRT) and ``classifier`` (T feature
  vectors -> probabilities, LSTM unrolled so it becomes plain builtin ops). The device encodes each
  sampled frame once and slides the window over cached features.
- ConvLSTM -> one whole-window model with MaxPooling3D(1,2,2) replaced by TimeDistributed(MaxPooling2D)
  (TFLite has no 3D pooling builtin) and no recurrent dropout.
Dropout layers are copied too; they are identities at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers


@dataclass
class Twins:
    """Either ``encoder`` + ``classifier`` (streaming) or ``window`` (whole window)."""

    encoder: keras.Model | None = None
    classifier: keras.Model | None = None
    window: keras.Model | None = None

    @property
    def streaming(self) -> bool:
        return self.encoder is not None

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities for windows (N x T x H x W x C), one batch-1 call at a time as on the device."""
        out = []
        for w in windows.astype(np.float32):
            if self.encoder is not None and self.classifier is not None:
                features = self.encoder(w, training=False)  # time folded into the batch
                out.append(np.asarray(self.classifier(np.asarray(features)[np.newaxis], training=False))[0])
            else:
                assert self.window is not None
                out.append(np.asarray(self.window(w[np.newaxis], training=False))[0])
        return np.stack(out)


def _clone(layer: keras.layers.Layer, x: keras.KerasTensor, **overrides: object) -> keras.KerasTensor:
    config = {**layer.get_config(), **overrides}
    config["name"] = layer.name
    twin = type(layer).from_config(config)
    y = twin(x)
    twin.set_weights(layer.get_weights())
    return y


def _body(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]


def rclstm_twins(model: keras.Model) -> Twins:
    """Split an RCLSTM into a per-frame encoder and a window classifier."""
    _, frames, *frame_shape = model.input_shape
    body = _body(model)
    split = next((i for i, layer in enumerate(body) if isinstance(layer, layers.LSTM)), None)
    if split is None:
        raise ValueError(f"model {model.name!r} has no LSTM layer; not an RCLSTM")
    frame_in = keras.Input(tuple(frame_shape), batch_size=1, name="frame")
    x = frame_in
    for layer in body[:split]:
        if not isinstance(layer, layers.TimeDistributed):
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) before the LSTM is not TimeDistributed; "
                "the per-frame encoder cannot be separated"
            )
        x = _clone(layer.layer, x)
    encoder = keras.Model(frame_in, x, name="encoder")
    features_in = keras.Input((frames, int(x.shape[-1])), batch_size=1, name="features")
    y = _clone(body[split], features_in, unroll=True)
    for layer in body[split + 1 :]:
        y = _clone(layer, y)
    return Twins(encoder=encoder, classifier=keras.Model(features_in, y, name="classifier"))


def rclstm_window_twin(model: keras.Model) -> Twins:
    """The RCLSTM as one whole-window model: every call runs the CNN on all T frames.

    Devices run the streaming pair; this variant is the baseline the benchmarks measure it against
    (``rclstm-convert convert --whole-window``). It uses the same per-frame encoder with time folded
    into the batch, so the comparison is about the work done, not about a slower graph.
    """
    parts = rclstm_twins(model)
    assert parts.encoder is not None and parts.classifier is not None
    _, frames, *frame_shape = model.input_shape
    frames_in = keras.Input(model.input_shape[1:], batch_size=1, name="frames")
    features = parts.encoder(keras.ops.reshape(frames_in, (frames, *frame_shape)))
    probs = parts.classifier(keras.ops.reshape(features, (1, frames, -1)))
    return Twins(window=keras.Model(frames_in, probs, name="window"))


def convlstm_twin(model: keras.Model) -> Twins:
    """The whole-window ConvLSTM at batch 1 with builtin-op friendly pooling."""
    frames_in = keras.Input(model.input_shape[1:], batch_size=1, name="frames")
    x = frames_in
    for layer in _body(model):
        if isinstance(layer, layers.ConvLSTM2D):
            x = _clone(layer, x, recurrent_dropout=0.0, unroll=True)
        elif isinstance(layer, layers.MaxPooling3D):
            if layer.pool_size[0] != 1 or layer.strides[0] != 1:
                raise ValueError(f"layer {layer.name!r} pools over time; only MaxPooling3D((1, a, b)) has a twin")
            pool = layers.MaxPooling2D(layer.pool_size[1:], strides=layer.strides[1:], padding=layer.padding)
            x = layers.TimeDistributed(pool, name=layer.name)(x)
        else:
            x = _clone(layer, x)
    return Twins(window=keras.Model(frames_in, x, name="window"))


def build_twins(model: keras.Model, arch: str, whole_window: bool = False) -> Twins:
    if arch == "rclstm":
        return rclstm_window_twin(model) if whole_window else rclstm_twins(model)
    return convlstm_twin(model)
