"""Bad bundles: fuzzed manifests, truncated or tampered models, a wrong input shape, an op the runtime lacks.

Every one must be answered by a one-line BundleError (and `rclstm-edge run` exiting 1 with one
``error:`` line), never a traceback. The model-file cases recompute the manifest's sha256 so the
damage gets past the hash check and reaches the runtime itself, which is what a buggy converter
(rather than a bad copy) would hand the device.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.bundle import MANIFEST_NAME, BundleError, Manifest, read_manifest, sha256_file
from edge.models import resolve_bundle

ROOT = Path(__file__).resolve().parents[1]
DEMO = resolve_bundle("demo")
DEMO_MANIFEST: dict[str, Any] = json.loads((DEMO / MANIFEST_NAME).read_text())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def leaf_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a JSON document, containers included (replacing a whole section is a case too)."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += leaf_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += leaf_paths(value, (*prefix, index))
    return paths


MANIFEST_PATHS = leaf_paths(DEMO_MANIFEST)


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(document))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def assert_manifest_or_one_line(bundle: Path) -> None:
    try:
        assert isinstance(read_manifest(bundle), Manifest)
    except BundleError as exc:
        assert str(exc) and "\n" not in str(exc) and str(bundle) in str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_manifest_file_is_a_manifest_or_one_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / MANIFEST_NAME).write_bytes(content)
    assert_manifest_or_one_line(tmp_path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(MANIFEST_PATHS), json_values)
def test_any_field_of_a_real_manifest_replaced(tmp_path: Path, path: tuple[Any, ...], value: Any) -> None:
    """Near-valid manifests reach the deep validators (labels, signatures, input spec) and not just the parser."""
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(replaced(DEMO_MANIFEST, path, value)))
    assert_manifest_or_one_line(tmp_path)


# -- model files that reach the runtime ------------------------------------------------------------------


def copy_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO, bundle)
    return bundle


def rehash(bundle: Path, **changes: Any) -> None:
    """Make the manifest agree with the (changed) model file, plus any manifest ``changes``."""
    model = bundle / "model.tflite"
    manifest = {**json.loads((bundle / MANIFEST_NAME).read_text()), "sha256": sha256_file(model),
                "size_bytes": model.stat().st_size, **changes}
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))


def truncate(bundle: Path) -> None:
    model = bundle / "model.tflite"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    rehash(bundle)


def unknown_op(bundle: Path) -> None:
    """Point the model's first operator code past every builtin op, as a newer converter's op would be."""
    from ai_edge_litert import schema_py_generated as schema

    model = bundle / "model.tflite"
    data = bytearray(model.read_bytes())
    code = schema.Model.GetRootAsModel(data, 0).OperatorCodes(0)
    table = code._tab
    # OperatorCode fields: deprecated_builtin_code (int8, vtable slot 4), builtin_code (int32, slot 10).
    deprecated, builtin = table.Offset(4), table.Offset(10)
    assert builtin, "the model stores builtin_code explicitly"
    data[table.Pos + builtin: table.Pos + builtin + 4] = (100_000).to_bytes(4, "little")
    if deprecated:
        data[table.Pos + deprecated] = 127
    model.write_bytes(bytes(data))
    rehash(bundle)


def wrong_input_shape(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["signatures"]["encode"]["inputs"][0]["shape"] = [1, 32, 32, 3]
    manifest["input"].update(height=32, width=32)
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))


def wrong_sha256(bundle: Path) -> None:
    rehash(bundle, sha256="0" * 64)


def missing_signature(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["signatures"] = {"window": manifest["signatures"]["encode"]}
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (truncate, "cannot load it"),
        (unknown_op, "cannot load it"),
        (wrong_input_shape, "does not match"),
        (wrong_sha256, "sha256"),
        (missing_signature, "signature 'window'"),
    ],
)
def test_damaged_bundle_stops_run_with_one_line(tmp_path: Path, damage: Any, expected: str) -> None:
    bundle = copy_bundle(tmp_path)
    damage(bundle)
    (tmp_path / "none.mp4").write_bytes(b"")  # exists: the bundle is what fails
    proc = subprocess.run([sys.executable, "-m", "edge", "run", "--model", str(bundle), "--source",
                           str(tmp_path / "none.mp4"), "--fast"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    print(proc.stderr.strip())
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr


FLIP_SCRIPT = """
import json, random, shutil, sys
from pathlib import Path
import numpy as np
from edge.bundle import BundleError
from edge.adapters.runtime import BundleModel
from tests.test_fuzz_bundles import DEMO, rehash

work, seed, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
size = (DEMO / "model.tflite").stat().st_size
outcomes = {"refused": 0, "runs": 0}
for i in range(count):
    bundle = work / f"b{i}"
    shutil.copytree(DEMO, bundle)
    data = bytearray((bundle / "model.tflite").read_bytes())
    # Most flips land in weights; half of them go to the first 4 KiB (header, tables, op codes).
    at = rng.randrange(4096) if i % 2 else rng.randrange(size)
    data[at] ^= 1 << rng.randrange(8)
    (bundle / "model.tflite").write_bytes(bytes(data))
    rehash(bundle)
    try:
        model = BundleModel(bundle)
    except BundleError as exc:
        assert "\\n" not in str(exc), exc
        outcomes["refused"] += 1
        continue
    model.predict_window(np.zeros((20, 64, 64, 3), np.float32))
    outcomes["runs"] += 1
print(json.dumps(outcomes))
"""


def test_flipped_bits_in_the_model_are_refused_or_run_never_crash(tmp_path: Path) -> None:
    """One process for many flips: a crash of the runtime itself (a segfault) fails the test too."""
    proc = subprocess.run([sys.executable, "-c", FLIP_SCRIPT, str(tmp_path), "7", "60"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"60 bit flips: {outcomes}")
    assert outcomes["refused"] + outcomes["runs"] == 60
