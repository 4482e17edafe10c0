"""What a model costs a device: MACs per sampled frame and per second of video, measured x86 time, a Pi 4 estimate.

A camera's model must leave room for decoding and for other cameras on a Raspberry Pi 4, so every
model variant is held to one budget: under ``MAX_MAC_PER_VIDEO_SECOND`` multiply-accumulates per
second of video. MACs are counted from the Keras graph (convolutions, LSTM and dense layers; pooling
and activations are noise next to them), so the figure is exact and machine-independent; the
milliseconds are measured on this machine in both device runtimes through the daemon's own
``BundleModel``.

The Pi 4 figure is an estimate, not a measurement (no Pi is reachable from here): the larger of
``MACs / PI4_MAC_PER_S`` and the x86 time times ``PI4_VS_X86``; both constants are stated with their
source so a reader can redo the arithmetic with better numbers. The timings come from
``edge.verify.time_model``, run by the converter in every runtime it verifies the bundle in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.bundle import DeviceBudget

MAX_MAC_PER_VIDEO_SECOND = 1.5e9
# A Pi 4 runs MobileNet v1 1.0/224 (569 M MAC) in about 87 ms with XNNPACK on its CPU (TildAlice, "MobileNet
# vs EfficientNet-Lite: Pi 4", 2026): 6.5 G MAC/s over its four Cortex-A72 cores. One core, and the small
# tensors of a 64x64 model that use the vector units less well, are taken as a quarter of that.
PI4_MAC_PER_S = 1.6e9
# Single-thread speed of a recent x86 core over one Cortex-A72 at 1.5 GHz for float NEON/AVX2 kernels.
PI4_VS_X86 = 6.0


@dataclass(frozen=True)
class Macs:
    """Multiply-accumulates of one encode (per sampled frame) and one classify (per window)."""

    encode: int
    classify: int
    streaming: bool

    def per_frame(self, hop: int) -> float:
        """Per sampled frame: a streaming model encodes every sampled frame once and classifies every
        ``hop`` frames; a whole-window model (``classify`` is then the whole window) runs once per hop."""
        return (self.encode if self.streaming else 0) + self.classify / hop

    def per_video_second(self, interval_s: float, hop: int) -> float:
        return self.per_frame(hop) / interval_s


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.shape[1:] if d is not None)


def _layer_macs(layer: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    kind = type(layer).__name__
    if kind == "Conv2D":
        kh, kw = layer.kernel_size
        return int(np.prod(out_shape)) * kh * kw * in_shape[-1]
    if kind == "DepthwiseConv2D":
        kh, kw = layer.kernel_size
        return int(np.prod(out_shape)) * kh * kw
    if kind == "Dense":
        return int(np.prod(out_shape[:-1] or (1,))) * in_shape[-1] * out_shape[-1]
    if kind in ("LSTM", "GRU"):
        gates = 4 if kind == "LSTM" else 3
        steps, features = in_shape[-2], in_shape[-1]
        return steps * gates * layer.units * (features + layer.units)
    if kind == "ConvLSTM2D":
        kh, kw = layer.kernel_size
        steps = in_shape[0]
        out_cells = int(np.prod(out_shape[-3:]))  # rows x cols x filters of one step
        return steps * 4 * out_cells * kh * kw * (in_shape[-1] + layer.filters)
    return 0


def model_macs(model: Any) -> Macs:
    """MACs of a training graph (see converter.models), split the way the bundle runs it.

    Layers wrapped in TimeDistributed run once per sampled frame (the ``encode`` signature); the rest
    runs once per window (``classify``). A ConvLSTM has no per-frame part, so it is all ``classify``.
    """
    encode = classify = 0
    for layer in model.layers:
        if not hasattr(layer, "input") or type(layer).__name__ == "InputLayer":
            continue
        in_shape, out_shape = _shape(layer.input), _shape(layer.output)
        if type(layer).__name__ == "TimeDistributed":
            encode += _layer_macs(layer.layer, in_shape[1:], out_shape[1:])
        else:
            classify += _layer_macs(layer, in_shape, out_shape)
    return Macs(encode=encode, classify=classify, streaming=encode > 0)


def budget(macs: Macs, timings: list[dict[str, Any]], interval_s: float, hop: int) -> DeviceBudget:
    """Fold MACs and measured timings into the per-frame figures a device is sized by.

    "Per frame" is per sampled frame with the classify cost spread over the ``hop`` frames between
    windows, so per-frame time times frames per second is the model's share of a core.
    """
    per_frame_mac = macs.per_frame(hop)
    x86 = {t["runtime"]: (t["encode_ms"] if macs.streaming else 0.0) + t["classify_ms"] / hop for t in timings}
    pi4_ms = max(per_frame_mac / PI4_MAC_PER_S * 1000.0, max(x86.values(), default=0.0) * PI4_VS_X86)
    return DeviceBudget(
        mac_per_frame=round(per_frame_mac),
        mac_per_window=macs.classify,
        mac_per_video_second=macs.per_video_second(interval_s, hop),
        x86_ms_per_frame=x86,
        pi4_ms_per_frame_estimate=pi4_ms,
        pi4_core_share_estimate=pi4_ms / 1000.0 / interval_s,
    )


def within(b: DeviceBudget) -> bool:
    return b.mac_per_video_second <= MAX_MAC_PER_VIDEO_SECOND


def table(b: DeviceBudget) -> str:
    runtimes = ", ".join(f"{name} {ms:.3f} ms" for name, ms in sorted(b.x86_ms_per_frame.items()))
    verdict = "within" if within(b) else "OVER"
    return "\n".join([
        f"MACs per sampled frame     {b.mac_per_frame / 1e6:9.2f} M (classify spread over the hop)",
        f"MACs per window (classify) {b.mac_per_window / 1e6:9.2f} M",
        f"MACs per second of video   {b.mac_per_video_second / 1e6:9.1f} M ({verdict} the "
        f"{MAX_MAC_PER_VIDEO_SECOND / 1e9:.1f} G budget)",
        f"x86 ms per sampled frame   {runtimes}",
        f"Pi 4 estimate              {b.pi4_ms_per_frame_estimate:.2f} ms per frame, "
        f"{b.pi4_core_share_estimate * 100:.1f} % of one core per camera",
    ])
