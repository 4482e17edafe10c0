"""Event messages: built from real decision transitions, valid against the committed JSON Schema."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from edge.bundle import Manifest
from edge.core.config import DecisionConfig
from edge.core.messages import Event, message_json
from edge.core.values import Transition
from edge.stages.decision import Decider
from edge.stages.events import build_event, interrupted_end
from tests.test_decision import pred

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "schemas" / "event.json"
MANIFEST = Manifest.model_validate(
    {
        "name": "fight-rclstm",
        "version": "1.2.0",
        "arch": "rclstm",
        "labels": ["calm", "fight", "theft"],
        "anomaly_labels": ["fight", "theft"],
        "input": {},
        "sampling": {"frame_interval_s": 0.25, "window_s": 5.0},
        "quantization": "int8",
        "signatures": {"window": {"inputs": [{"name": "x", "shape": [1, 20, 64, 64, 3]}], "outputs": []}},
        "sha256": "ab" * 32,
        "size_bytes": 1,
        "converter_version": "0.1.0",
        "tensorflow_version": "2.21",
        "created_at": "2024-05-01T00:00:00Z",
    }
)


def lifecycle() -> list[Transition]:
    decider = Decider(DecisionConfig(start_windows=1, end_windows=1, update_interval_s=1.0, cooldown_s=0.0))
    out: list[Transition] = []
    for i, score in enumerate([0.9, 0.95, 0.7, 0.1]):
        out += decider.update(pred(10.0 + i * 1.5, score))
    return out


def events() -> list[Event]:
    return [build_event(t, "pi-7", "store 12", "door", MANIFEST) for t in lifecycle()]


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_lifecycle_messages_are_valid_and_ordered() -> None:
    check = validator()
    built = events()
    assert [e.type for e in built] == ["start", "update", "update", "end"]
    assert [e.seq for e in built] == [0, 1, 2, 3]
    assert len({e.event_id for e in built}) == 1
    for event in built:
        payload = json.loads(message_json(event))
        check.validate(payload)
        assert payload["schema_version"] == 1
        assert payload["model"] == {"name": "fight-rclstm", "version": "1.2.0", "sha256": "ab" * 32}
        assert payload["started_at"] == "2024-05-01T12:00:10Z"
    start, end = json.loads(message_json(built[0])), json.loads(message_json(built[-1]))
    assert start["ended_at"] is None and start["label"] == "fight"
    assert end["ended_at"] == "2024-05-01T12:00:13Z" and end["emitted_at"] == "2024-05-01T12:00:14.500000Z"
    assert end["peak_score"] == 0.95 and end["windows"] == 3 and end["score"] == 0.1
    assert start["end_reason"] is None and end["end_reason"] == "calm"
    assert end["mean_score"] == pytest.approx((0.9 + 0.95 + 0.7) / 3, abs=1e-4)


def test_interrupted_end_follows_the_last_message_sent() -> None:
    """What the next start sends for an incident its daemon died with: valid, next seq, same bytes twice."""
    last = events()[1]  # the daemon died after the first update
    end = interrupted_end(last)
    validator().validate(json.loads(message_json(end)))
    assert (end.type, end.seq, end.end_reason) == ("end", last.seq + 1, "interrupted")
    assert end.ended_at == end.emitted_at == last.emitted_at
    assert (end.event_id, end.started_at, end.peak_score, end.windows) == (
        last.event_id, last.started_at, last.peak_score, last.windows)
    assert message_json(interrupted_end(Event.model_validate_json(message_json(last)))) == message_json(end)


def test_same_transition_gives_byte_identical_payload() -> None:
    transition = lifecycle()[0]
    first = message_json(build_event(transition, "pi-7", "store 12", "door", MANIFEST))
    again = message_json(build_event(transition, "pi-7", "store 12", "door", MANIFEST))
    assert first == again
    assert b" " not in first.replace(b"store 12", b"")  # compact


def test_other_timezones_are_written_as_utc_z() -> None:
    base = json.loads(message_json(events()[0]))
    plus_two = timezone(timedelta(hours=2))
    base["started_at"] = datetime(2024, 5, 1, 14, 0, 10, tzinfo=plus_two).isoformat()
    event = Event.model_validate(base)
    assert json.loads(message_json(event))["started_at"] == "2024-05-01T12:00:10Z"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"started_at": "2024-05-01T12:00:10"}, "timezone"),
        ({"sent_at": "2024-05-01T12:00:10Z"}, "Extra inputs"),
        ({"type": "begin"}, "type"),
        ({"score": 1.5}, "score"),
        ({"seq": -1}, "seq"),
        ({"event_id": "not-a-uuid"}, "event_id"),
    ],
)
def test_model_refuses_bad_messages(change: dict[str, object], problem: str) -> None:
    payload = {**json.loads(message_json(events()[0])), **change}
    with pytest.raises(ValidationError, match=problem):
        Event.model_validate(payload)


@pytest.mark.parametrize(
    "change",
    [
        {"started_at": "2024-05-01T14:00:10+02:00"},  # consumers can count on Z
        {"sent_at": "2024-05-01T12:00:10Z"},
        {"schema_version": 2},
        {"model": {"name": "x", "version": "1", "sha256": "nothex"}},
    ],
)
def test_schema_refuses_what_the_device_never_sends(change: dict[str, object]) -> None:
    payload = {**json.loads(message_json(events()[0])), **change}
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(payload)


def test_schema_requires_ended_at_even_while_open() -> None:
    missing = json.loads(message_json(events()[0]))
    del missing["ended_at"]
    with pytest.raises(jsonschema.ValidationError, match="ended_at"):
        validator().validate(missing)
