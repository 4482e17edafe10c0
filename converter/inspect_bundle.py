"""`rclstm-convert inspect BUNDLE`: what a bundle is, what ops it runs, where it was verified, how it scored."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from edge.bundle import load_bundle


def op_counts(model_path: Path) -> dict[str, Counter[str]]:
    """Signature (subgraph) name -> builtin op name -> count, from ai-edge-litert's model analyzer.

    The analyzer reads every subgraph without TensorFlow; the interpreter's op list covers only the first.
    """
    from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer

    report = analyzer.ModelAnalyzer(str(model_path), True, False)
    counts: dict[str, Counter[str]] = {}
    current: Counter[str] | None = None
    for line in report.splitlines():
        header = re.match(r"^Subgraph#(\d+) (\w*)", line)
        if header:
            current = counts.setdefault(header.group(2) or f"subgraph{header.group(1)}", Counter())
            continue
        op = re.match(r"^\s+Op#\d+ (\w+)\(", line)
        if op and current is not None:
            current[op.group(1)] += 1
    return counts


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
    for signature, ops in op_counts(model_path).items():
        lines.append(f"ops in {signature}: " + ", ".join(f"{name} x{count}" for name, count in sorted(ops.items())))
    lines.append("verified runtimes:" + ("" if manifest.verified_runtimes else " none"))
    for check in manifest.verified_runtimes:
        lines.append(f"  {check.runtime} {check.version}: max |diff| {check.max_abs_diff:.2e}, "
                     f"top-1 agreement {check.top1_agreement:.1%}")
    lines.append("metrics:" + ("" if manifest.metrics else " none"))
    for key, m in manifest.metrics.items():
        cells = []
        for column in ("accuracy", "precision", "recall", "f1"):
            std = getattr(m, f"{column}_std")
            cells.append(f"{column} {getattr(m, column):.3f}" + (f" ± {std:.3f}" if std is not None else ""))
        lines.append(f"  {key} ({m.view}, {m.clips} clips{f', {m.runs} runs' if m.runs else ''}): " + ", ".join(cells))
    lines.append("training data:" + ("" if manifest.data else " not recorded"))
    lines.extend(f"  {d.name}: {d.clips} clips, {d.licence}" for d in manifest.data)
    if manifest.crosseval:
        lines.append("crosseval (balanced accuracy [95 % interval over groups], recall, seeds):")
    for row in manifest.crosseval:
        ba = row.balanced_accuracy
        interval = f" [{ba.low:.2f}, {ba.high:.2f}]" if ba.low is not None and ba.high is not None else ""
        value, recall = (f"{v:.3f}" if v is not None else "-" for v in (ba.value, row.recall.value))
        lines.append(f"  {row.protocol} {row.level} {row.source}: {value}{interval}, recall {recall}, "
                     f"{row.units} units, seeds {row.seeds}")
    if manifest.decision:
        d = manifest.decision
        lines.append(f"decision settings: threshold {d.threshold}, start_windows {d.start_windows} ({d.chosen_by}); "
                     "a config that sets them wins")
    if manifest.budget:
        from converter.budget import table

        lines.append("device budget:")
        lines.extend(f"  {line}" for line in table(manifest.budget).splitlines())
    return "\n".join(lines)
