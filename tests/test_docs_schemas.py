"""docs/schemas/ are the models' JSON Schemas, and every JSON example in docs/mqtt.md is valid against them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from edge.core.messages import SCHEMA_MODELS, schema

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "schemas"
EXAMPLE = re.compile(r"<!-- schema: ([a-z-]+) -->\s*```json\n(.*?)\n```", re.DOTALL)


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((DOCS / f"{name}.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_committed_schema_equals_the_model(name: str) -> None:
    committed = json.loads((DOCS / f"{name}.json").read_text(encoding="utf-8"))
    assert committed == schema(name), f"docs/schemas/{name}.json is stale: rclstm-edge schema {name} > it"
    assert committed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator(name)  # a valid schema in its own dialect


def test_no_schema_file_without_a_model() -> None:
    assert sorted(p.stem for p in DOCS.glob("*.json")) == sorted(SCHEMA_MODELS)


@pytest.mark.parametrize("name", sorted(SCHEMA_MODELS))
def test_cli_prints_the_committed_file(name: str) -> None:
    printed = subprocess.run([sys.executable, "-m", "edge", "schema", name], capture_output=True, text=True,
                             check=True, cwd=ROOT)
    assert printed.stdout == (DOCS / f"{name}.json").read_text(encoding="utf-8")


def test_every_json_example_in_mqtt_md_is_valid() -> None:
    examples = EXAMPLE.findall((ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8"))
    assert {name for name, _ in examples} == set(SCHEMA_MODELS), "each schema needs at least one example"
    for name, text in examples:
        validator(name).validate(json.loads(text))


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("camera-status", {"since": "2026-11-26T04:25:55+01:00"}),
        ("camera-status", {"online": "yes"}),
        ("stats", {"uptime_s": -1}),
        ("stats", {"outbox_depth": None, "temperature": 41.0}),
    ],
)
def test_schemas_refuse_what_the_device_never_sends(name: str, change: dict[str, object]) -> None:
    text = next(t for n, t in EXAMPLE.findall((ROOT / "docs" / "mqtt.md").read_text(encoding="utf-8")) if n == name)
    with pytest.raises(jsonschema.ValidationError):
        validator(name).validate({**json.loads(text), **change})
