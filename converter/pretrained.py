"""MobileNet v1 0.25/128 (ImageNet) as Keras layers, ported from its quantized TFLite flatbuffer.

No model hub is reachable from where models are trained, and the only ImageNet weights at hand are
TFLite flatbuffers (``converter/weights/README.md``). ``keras.applications.MobileNet`` has batch
normalisation layers and pads explicitly, so rather than bend it onto weights that have batch
normalisation folded into the convolution biases, the network is rebuilt from what the flatbuffer
says: every CONV_2D / DEPTHWISE_CONV_2D in graph order up to the global average pool, each one a
Keras layer with bias and relu6, its stride read from its input and output shapes.

The weights are uint8 with a per-tensor scale and zero point; ``scale * (q - zero_point)`` gives
the float weights the quantized model approximates (the int32 biases have their own scale and a
zero point of 0). The Keras twin therefore computes in float what the TFLite model computes in
integers: the two agree to within the quantization of the activations, which
``tests/test_pretrained.py`` measures on real-looking frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS = Path(__file__).parent / "weights" / "mobilenet_v1_0.25_128_quant.tflite"
NAME = "mobilenet_v1_0.25_128"
ENCODERS = ("cnn", NAME)  # the RCLSTM's per-frame encoders: the small CNN trained from scratch, or this one
SIZE = 128
BLOCKS = 13  # depthwise + pointwise pairs after the first convolution
# The flatbuffer's input is uint8 with scale 1/128 and zero point 128, i.e. pixel / 128 - 1 in -1..1;
# a prepared frame is pixel / 255 in 0..1, so the model rescales it by 255/128 and shifts it by -1.
INPUT_SCALE = 255.0 / 128.0
INPUT_OFFSET = -1.0


@dataclass(frozen=True)
class PortedConv:
    """One convolution of the flatbuffer with dequantized weights in Keras layout."""

    name: str  # conv0, dw1, pw1, ... dw13, pw13
    depthwise: bool
    kernel: np.ndarray  # Conv2D (kh, kw, in, out); DepthwiseConv2D (kh, kw, in, 1)
    bias: np.ndarray
    strides: int


def _dequantize(interpreter: Any, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    q = interpreter.get_tensor(detail["index"]).astype(np.float32)
    return np.float32(scale) * (q - np.float32(zero_point))


def read_convs(path: Path = WEIGHTS) -> list[PortedConv]:
    """The convolutions before the global average pool, in graph order, dequantized.

    TFLite stores a convolution kernel as (out, kh, kw, in) and a depthwise one as (1, kh, kw, in);
    Keras wants (kh, kw, in, out) and (kh, kw, in, 1). The op list comes from the interpreter's
    ``_get_ops_details`` (the only way either runtime exposes the graph; it is stable across
    ai-edge-litert and tflite-runtime 2.14).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    convs: list[PortedConv] = []
    for op in interpreter._get_ops_details():
        kind = op["op_name"]
        if kind == "AVERAGE_POOL_2D":
            break
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            raise ValueError(f"{path}: unexpected {kind} before the average pool; not a MobileNet v1 graph")
        source, weights, bias = (details[i] for i in op["inputs"])
        out_side, in_side = details[op["outputs"][0]]["shape"][1], source["shape"][1]
        kernel = _dequantize(interpreter, weights)
        depthwise = kind == "DEPTHWISE_CONV_2D"
        block = (len(convs) + 1) // 2
        name = "conv0" if not convs else f"{'dw' if depthwise else 'pw'}{block}"
        convs.append(PortedConv(
            name=name,
            depthwise=depthwise,
            kernel=kernel[0][..., np.newaxis] if depthwise else kernel.transpose(1, 2, 3, 0),
            bias=_dequantize(interpreter, bias),
            strides=int(in_side) // int(out_side),
        ))
    if len(convs) != 1 + 2 * BLOCKS:
        raise ValueError(f"{path}: {len(convs)} convolutions before the pool; MobileNet v1 has {1 + 2 * BLOCKS}")
    return convs


def frame_layers(convs: list[PortedConv], trainable_blocks: int = 0) -> list[Any]:
    """Fresh, unbuilt per-frame layers: rescale, the convolutions, global average pool.

    The last ``trainable_blocks`` depthwise/pointwise pairs are trainable, the rest frozen; the
    weights are set by ``load_weights`` once the layers are built inside a model.
    """
    from keras import layers

    out: list[Any] = [layers.Rescaling(INPUT_SCALE, INPUT_OFFSET, name="rescale")]
    for conv in convs:
        block = int(conv.name.lstrip("convdwp"))
        common = dict(kernel_size=conv.kernel.shape[:2], strides=conv.strides, padding="same",
                      activation="relu6", name=conv.name, trainable=block > BLOCKS - trainable_blocks)
        if conv.depthwise:
            out.append(layers.DepthwiseConv2D(**common))
        else:
            out.append(layers.Conv2D(conv.kernel.shape[-1], **common))
    out.append(layers.GlobalAveragePooling2D(name="pool"))
    return out


def load_weights(convs: list[PortedConv], layer: Callable[[str], Any]) -> None:
    """Set every ported convolution's weights on the built layer ``layer(name)`` returns."""
    for conv in convs:
        layer(conv.name).set_weights([conv.kernel, conv.bias])


def frame_encoder(convs: list[PortedConv] | None = None) -> Any:
    """The ported network for one frame (N x 128 x 128 x 3 in 0..1 -> N x 256 pooled features)."""
    import keras

    convs = convs if convs is not None else read_convs()
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), *frame_layers(convs)], name=NAME)
    load_weights(convs, model.get_layer)
    return model
