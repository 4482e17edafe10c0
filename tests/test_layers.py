"""The layout is the architecture: no module imports a layer above its own, every module imports on its
own (no cycles), and the values and pure stages import without OpenCV or a runtime (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EDGE = ROOT / "edge"
# Longest prefix wins; a module may import its own layer and those below.
LAYERS = {
    "edge": 0, "edge.core": 0, "edge.bundle": 0, "edge.preprocess": 0, "edge.synthetic": 0, "edge.models": 0,
    "edge.stages": 1, "edge.adapters": 1, "edge.verify": 2, "edge.sinks": 2,
    "edge.app": 3, "edge.tools": 3, "edge.provision": 3, "edge.__main__": 4,
}
PURE = ["edge.core.values", "edge.core.config", "edge.core.messages", "edge.core.errors", "edge.stages.sampler",
        "edge.stages.decision", "edge.stages.events"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = sorted(module_name(p) for p in EDGE.rglob("*.py"))
LIBRARY = [m for m in MODULES if m != "edge.__main__"]  # importing __main__ runs the CLI


def layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def edge_imports(module: str) -> set[str]:
    path = ROOT / Path(*module.split("."))
    source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text(encoding="utf-8")
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edge"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("edge"))
    return found


def test_no_import_points_up_a_layer() -> None:
    upward = [f"{m} ({layer(m)}) imports {i} ({layer(i)})" for m in MODULES for i in edge_imports(m)
              if layer(i) > layer(m)]
    assert upward == []


def test_every_module_imports_on_its_own() -> None:
    def load(module: str) -> tuple[str, str]:
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT)
        return module, done.stderr.strip().splitlines()[-1] if done.returncode else ""

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = {m: error for m, error in pool.map(load, LIBRARY) if error}
    assert failures == {}


@pytest.mark.parametrize("module", PURE)
def test_values_and_pure_stages_need_no_opencv_or_runtime(module: str) -> None:
    blocked = "import sys; [sys.modules.__setitem__(m, None) for m in ('cv2', 'ai_edge_litert', 'tflite_runtime')]"
    done = subprocess.run([sys.executable, "-c", f"{blocked}; import {module}"], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
