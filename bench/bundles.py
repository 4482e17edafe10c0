"""The models under test: a trained Keras model converted in every mode, and the bundle the daemon runs.

Conversions go through ``converter.convert`` itself (parity gates, runtime checks), once per model
file, mode and variant ("stream": the device's encode + classify pair; "window": the same network
as one whole-window signature), cached by the model file's hash. A bundle the quality gate refuses
is still built with ``force`` so its cost and accuracy can be measured, and the refusal is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Settings, tflite_python
from edge.bundle import read_manifest, sha256_file
from edge.models import BUILTIN, HERE, resolve_bundle


@dataclass
class Converted:
    mode: str
    variant: str
    path: Path
    refused: str | None = None  # the quality gate's reason, when the bundle was kept with force


@dataclass
class Models:
    settings: Settings
    converted: dict[tuple[str, str], Converted] = field(default_factory=dict)

    def bundle(self, mode: str, variant: str = "stream") -> Converted:
        """Convert (or reuse) the --model in ``mode`` as ``variant``."""
        if (mode, variant) in self.converted:
            return self.converted[(mode, variant)]
        from converter.convert import ConvertOptions, ConvertRefused, convert

        model = self.settings.model
        if model is None:
            raise ValueError("no --model: pass a trained RUN_DIR/model.keras")
        out = self.settings.work / "bundles" / sha256_file(model)[:12] / f"{variant}-{mode}"
        refused_note = out / "refused.txt"
        if not (out / "manifest.json").is_file():
            lines: list[str] = []

            def options(force: bool) -> ConvertOptions:
                return ConvertOptions(model=model, out=out, quantize=mode, name=f"bench-{variant}-{mode}",  # type: ignore[arg-type]
                                      force=force, whole_window=variant == "window", verify_python=tflite_python(),
                                      cache=self.settings.work / "frames", log=lines.append)

            self.settings.log(f"converting {model} ({mode}, {variant})...")
            try:
                convert(options(force=False))
                refused_note.unlink(missing_ok=True)
            except ConvertRefused as exc:
                convert(options(force=True))
                refused_note.write_text(str(exc))
        refused = refused_note.read_text() if refused_note.is_file() else None
        self.converted[(mode, variant)] = Converted(mode, variant, out, refused)
        return self.converted[(mode, variant)]

    def device_bundle(self) -> tuple[Path, str]:
        """The bundle the daemon benchmarks run and where it came from: --bundle (by default the shipped
        builtin), else --model, else the demo. Another bundle than the builtin one must exist: a model's
        per-frame cost (fight-flow's optical flow) is what such a run is for."""
        spec = self.settings.bundle
        shipped = resolve_bundle(spec)
        if (shipped / "manifest.json").is_file():
            manifest = read_manifest(shipped)
            shown = f"edge/models/{shipped.name}" if shipped.parent == HERE else str(shipped)
            return shipped, f"bundle {shown} ({manifest.quantization}, representation {manifest.input.representation})"
        if spec != "builtin":
            raise ValueError(f"--bundle {spec}: no bundle there; give a built-in name ({', '.join(BUILTIN)}) or a path")
        if self.settings.model is not None:
            mode = "float32"
            return self.bundle(mode).path, f"--model {self.settings.model} converted ({mode}, streaming)"
        return resolve_bundle("demo"), "demo bundle edge/models/demo-synth (generated-data model)"
