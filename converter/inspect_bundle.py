"""`rclstm-convert inspect BUNDLE`: what a bundle is, what ops it runs, where it was verified, how it scored."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edge.bundle import load_bundle


def op_counts(model_path: Path) -> Counter[str]:
    """Builtin op name -> count, read from the model by ai-edge-litert's interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    return Counter(op["op_name"] for op in interpreter._get_ops_details())


def describe(bundle_dir: Path) -> str:
    manifest, model_path = load_bundle(bundle_dir)
    spec = manifest.input
    lines = [
        f"{manifest.name} {manifest.version} ({manifest.arch}, {manifest.quantization}), "
        f"{manifest.size_bytes / 1024:.0f} KiB, sha256 {manifest.sha256}",
        f"labels: {', '.join(manifest.labels)}; anomaly: {', '.join(manifest.anomaly_labels) or '-'}",
        f"input: {spec.frames} x {spec.height}x{spec.width}x{spec.channels} {spec.representation} "
        f"({spec.color_order}, scale {spec.scale:.6f})",
        f"sampling: {manifest.sampling.method}, one frame every {manifest.sampling.frame_interval_s:.3f} s "
        f"(window {manifest.sampling.window_s:.2f} s)",
        f"built by converter {manifest.converter_version} with TensorFlow {manifest.tensorflow_version} "
        f"at {manifest.created_at:%Y-%m-%d %H:%M}",
        "signatures:",
    ]
    for name, sig in manifest.signatures.items():
        ins = ", ".join(f"{t.name}{t.shape}" for t in sig.inputs)
        outs = ", ".join(f"{t.name}{t.shape}" for t in sig.outputs)
        lines.append(f"  {name}: {ins} -> {outs}")
    ops = op_counts(model_path)
    lines.append("ops: " + ", ".join(f"{name} x{count}" for name, count in sorted(ops.items())))
    lines.append("verified runtimes:" + ("" if manifest.verified_runtimes else " none"))
    for check in manifest.verified_runtimes:
        lines.append(f"  {check.runtime} {check.version}: max |diff| {check.max_abs_diff:.2e}, "
                     f"top-1 agreement {check.top1_agreement:.1%}")
    lines.append("metrics:" + ("" if manifest.metrics else " none"))
    for key, m in manifest.metrics.items():
        std = f" ± {m.accuracy_std:.3f}" if m.accuracy_std is not None else ""
        lines.append(f"  {key} ({m.view}, {m.clips} clips{f', {m.runs} runs' if m.runs else ''}): accuracy "
                     f"{m.accuracy:.3f}{std}, precision {m.precision:.3f}, recall {m.recall:.3f}, f1 {m.f1:.3f}")
    return "\n".join(lines)
