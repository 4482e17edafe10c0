"""Training graphs: the paper's RCLSTM (LRCN-style), its pretrained-encoder variant, and ConvLSTM.

Layer names are fixed (``conv0``, ``lstm``, ``probs``...) because the inference twins find and copy
layers by role, and a model saved today must convert tomorrow.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

CONVLSTM_FILTERS = (4, 8, 14, 16)
FLOW_DENSE = (32, 16)


def _compile(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_rclstm(
    num_classes: int,
    frames: int = 20,
    size: int = 64,
    channels: int = 3,
    filters: Sequence[int] = (16, 32, 64, 64),
    pools: Sequence[int] = (4, 4, 2, 2),
    dropout: float = 0.25,
    lstm_units: int = 32,
    learning_rate: float = 1e-3,
) -> keras.Model:
    """Per-frame Conv2D 3x3 relu stack (each followed by max-pooling, dropout after all but the last),
    Flatten, LSTM, Dense softmax."""
    if len(filters) != len(pools) or not filters:
        raise ValueError(f"--filters {list(filters)} and --pools {list(pools)} must have the same, non-zero length")
    side = size
    for p in pools:
        side //= p
    if side < 1:
        raise ValueError(f"--pools {list(pools)} shrink a {size}x{size} frame to nothing; use fewer or smaller pools")
    inputs = keras.Input((frames, size, size, channels), name="frames")
    x = inputs
    for i, (f, p) in enumerate(zip(filters, pools, strict=True)):
        x = layers.TimeDistributed(layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i}"),
                                   name=f"td_conv{i}")(x)
        x = layers.TimeDistributed(layers.MaxPooling2D(p, name=f"pool{i}"), name=f"td_pool{i}")(x)
        if i < len(filters) - 1:
            x = layers.TimeDistributed(layers.Dropout(dropout, name=f"drop{i}"), name=f"td_drop{i}")(x)
    x = layers.TimeDistributed(layers.Flatten(name="flatten"), name="td_flatten")(x)
    x = layers.LSTM(lstm_units, name="lstm")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return _compile(keras.Model(inputs, outputs, name="rclstm"), learning_rate)


def build_flowlstm(
    num_classes: int,
    frames: int = 20,
    features: int = 11,
    units: Sequence[int] = FLOW_DENSE,
    dropout: float = 0.25,
    lstm_units: int = 16,
    learning_rate: float = 1e-3,
) -> keras.Model:
    """The RCLSTM shape over per-frame flow statistics (representation ``flow``): a small per-frame
    Dense stack in place of the CNN, then LSTM and softmax.

    The statistics are already scale-free summaries (see ``edge.preprocess.flow_features``), so the
    per-frame part only has to mix a dozen numbers; a CNN would have nothing spatial left to learn.
    Being TimeDistributed before an LSTM, it converts to the same encode/classify bundle as the RCLSTM.
    """
    inputs = keras.Input((frames, features), name="frames")
    x = inputs
    for i, width in enumerate(units):
        x = layers.TimeDistributed(layers.Dense(width, activation="relu", name=f"dense{i}"), name=f"td_dense{i}")(x)
        x = layers.TimeDistributed(layers.Dropout(dropout, name=f"drop{i}"), name=f"td_drop{i}")(x)
    x = layers.LSTM(lstm_units, name="lstm")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return _compile(keras.Model(inputs, outputs, name="flowlstm"), learning_rate)


def build_mobilenet_lstm(
    num_classes: int,
    frames: int = 20,
    dropout: float = 0.25,
    lstm_units: int = 32,
    learning_rate: float = 1e-3,
    trainable_blocks: int = 0,
) -> keras.Model:
    """The RCLSTM shape with ImageNet MobileNet v1 0.25/128 as the per-frame encoder (``--encoder
    mobilenet_v1_0.25_128``, representation ``rgb`` at 128x128), its weights ported from the TFLite
    flatbuffer (converter.pretrained).

    Every per-frame layer is its own TimeDistributed layer (``td_rescale``, ``td_conv0``, ``td_dw1``,
    ``td_pw1``... ``td_pool``), so ``converter.twins.rclstm_twins`` splits it into the bundle's
    ``encode`` (256 pooled features per sampled frame) and ``classify`` exactly as it splits the
    small CNN. The encoder is frozen but for the last ``trainable_blocks`` depthwise/pointwise pairs.
    """
    from converter import pretrained

    convs = pretrained.read_convs()
    inputs = keras.Input((frames, pretrained.SIZE, pretrained.SIZE, 3), name="frames")
    x = inputs
    for layer in pretrained.frame_layers(convs, trainable_blocks):
        x = layers.TimeDistributed(layer, name=f"td_{layer.name}")(x)
    x = layers.TimeDistributed(layers.Dropout(dropout, name="drop"), name="td_drop")(x)
    x = layers.LSTM(lstm_units, name="lstm")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, outputs, name="mobilenet_lstm")
    pretrained.load_weights(convs, lambda name: model.get_layer(f"td_{name}").layer)
    return _compile(model, learning_rate)


def frozen_parts(model: keras.Model, learning_rate: float) -> tuple[keras.Model, keras.Model]:
    """(per-frame encoder, compiled head) of a ``build_mobilenet_lstm`` model, sharing its layers.

    With the encoder frozen, training need not run MobileNet on every window of every epoch: the
    encoder turns each sampled frame into features once, and the head (dropout, LSTM, softmax)
    trains on windows of features. The layers are the model's own, so training the head trains the
    model, which is saved and converted whole.
    """
    per_frame = [layer for layer in model.layers if isinstance(layer, layers.TimeDistributed)]
    split = next(i for i, layer in enumerate(per_frame) if layer.name == "td_drop")
    frame_in = keras.Input(model.input_shape[2:], name="frame")
    x = frame_in
    for layer in per_frame[:split]:
        x = layer.layer(x)
    encoder = keras.Model(frame_in, x, name="encoder")
    features_in = keras.Input((model.input_shape[1], int(x.shape[-1])), name="features")
    y = features_in
    for name in ("td_drop", "lstm", "probs"):
        y = model.get_layer(name)(y)
    return encoder, _compile(keras.Model(features_in, y, name="head"), learning_rate)


def build_convlstm(
    num_classes: int,
    frames: int = 20,
    size: int = 64,
    channels: int = 3,
    filters: Sequence[int] = CONVLSTM_FILTERS,
    dropout: float = 0.2,
    learning_rate: float = 1e-3,
) -> keras.Model:
    """ConvLSTM2D 3x3 tanh blocks (recurrent dropout 0.2), each with MaxPooling3D(1,2,2) and dropout."""
    inputs = keras.Input((frames, size, size, channels), name="frames")
    x = inputs
    for i, f in enumerate(filters):
        x = layers.ConvLSTM2D(f, 3, activation="tanh", recurrent_dropout=0.2, return_sequences=True,
                              name=f"convlstm{i}")(x)
        x = layers.MaxPooling3D((1, 2, 2), padding="same", name=f"pool{i}")(x)
        x = layers.TimeDistributed(layers.Dropout(dropout, name=f"drop{i}"), name=f"td_drop{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return _compile(keras.Model(inputs, outputs, name="convlstm"), learning_rate)


def arch_of(model: keras.Model) -> str:
    """``convlstm`` when the model has ConvLSTM2D layers, ``rclstm`` when it has an LSTM over frame features."""
    kinds = {type(layer).__name__ for layer in model.layers}
    if "ConvLSTM2D" in kinds:
        return "convlstm"
    if "LSTM" in kinds:
        return "rclstm"
    raise ValueError(f"model {model.name!r} has neither an LSTM nor a ConvLSTM2D layer; not an RCLSTM or ConvLSTM")
