from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiln_cli.schemas import write_or_check
from kiln_core.catalog import PING_EVENTS
from kiln_core.errors import EventSchemaViolation, MalformedEvent, UnknownEventType
from kiln_core.events import (
    EVENT_TYPES,
    EventData,
    asyncapi_document,
    breaking_changes,
    decode_event,
    event_json_schema,
    new_event,
    register_event,
    topic_for,
)

REPO = Path(__file__).resolve().parents[2]


def ping_event():  # type: ignore[no-untyped-def]
    data = PING_EVENTS["dataset"](ping_id="p1", origin="dataset", sent_at=datetime.now(UTC))
    return new_event(data, subject="p1")


def test_event_round_trips_through_bytes() -> None:
    event = ping_event()
    envelope, data = decode_event(event.to_bytes())
    assert envelope.id == event.id
    assert envelope.type == "kiln.dataset.ping.sent"
    assert envelope.specversion == "1.0"
    assert envelope.subject == "p1"
    assert envelope.dataschema and envelope.dataschema.endswith("kiln.dataset.ping.sent.json")
    assert data.ping_id == "p1"  # type: ignore[attr-defined]
    assert envelope.topic == "kiln.dataset"


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\xff\xfe not json", MalformedEvent),
        (b"[1, 2]", MalformedEvent),
        (b'{"id": "1", "source": "/x", "type": "kiln.dataset.ping.sent"}', MalformedEvent),
        (
            b'{"specversion": "0.3", "id": "1", "source": "/x", "type": "kiln.dataset.ping.sent",'
            b' "time": "2026-01-01T00:00:00Z"}',
            MalformedEvent,
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "/x", "type": "kiln.dataset.nothing.happened",'
            b' "time": "2026-01-01T00:00:00Z", "data": {}}',
            UnknownEventType,
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "/x", "type": "kiln.dataset.ping.sent",'
            b' "time": "2026-01-01T00:00:00Z", "data": {"ping_id": 5}}',
            EventSchemaViolation,
        ),
    ],
)
def test_unusable_records_are_rejected_with_a_reason(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        decode_event(raw)
    assert str(info.value)


def test_event_type_names_follow_the_naming_rule() -> None:
    assert topic_for("kiln.serving.prediction.flagged") == "kiln.serving"
    with pytest.raises(UnknownEventType):
        topic_for("kiln.billing.invoice.sent")
    with pytest.raises(UnknownEventType):

        @register_event
        class Bad(EventData):
            event_type = "dataset-created"


def test_every_registered_type_exports_a_json_schema() -> None:
    for event_type in EVENT_TYPES:
        schema = event_json_schema(event_type)
        assert schema["$id"].endswith(f"{event_type}.json")
        assert "properties" in schema


def test_asyncapi_document_lists_every_topic_and_message() -> None:
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) == {topic_for(t) for t in EVENT_TYPES}
    names = {m["name"] for m in doc["components"]["messages"].values()}
    assert names == set(EVENT_TYPES)
    for op in doc["operations"].values():
        assert op["action"] == "send"


OLD = {
    "properties": {
        "id": {"type": "string"},
        "count": {"type": "integer"},
        "kind": {"type": "string", "enum": ["a", "b"]},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["id", "count"],
}


def test_additive_change_is_compatible() -> None:
    new = json.loads(json.dumps(OLD))
    new["properties"]["extra"] = {"type": "string"}
    new["properties"]["kind"]["enum"].append("c")
    assert breaking_changes(OLD, new) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["properties"].pop("count"), "count: field removed"),
        (lambda s: s["properties"].__setitem__("count", {"type": "string"}), "count: type changed"),
        (lambda s: s["required"].append("note"), "note: optional field became required"),
        (
            lambda s: (
                s["properties"].__setitem__("new", {"type": "string"}),
                s["required"].append("new"),
            ),
            "new: new required field",
        ),
        (lambda s: s["properties"]["kind"].__setitem__("enum", ["a"]), "kind: enum values removed"),
    ],
)
def test_breaking_changes_are_detected(mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    new = json.loads(json.dumps(OLD))
    mutate(new)
    problems = breaking_changes(OLD, new)
    assert any(p.startswith(expected) for p in problems), problems


def test_committed_event_docs_are_current_and_compatible() -> None:
    """Fails when a model changed incompatibly or `kiln events schemas` was not re-run."""
    problems = write_or_check(REPO / "docs" / "events", check=True)
    assert problems == []


def test_schema_writer_refuses_a_breaking_change(tmp_path: Path) -> None:
    out = tmp_path / "events"
    assert write_or_check(out, check=False) == []
    path = out / "kiln.dataset.ping.sent.json"
    schema = json.loads(path.read_text())
    schema["properties"]["retired_field"] = {"type": "string"}
    path.write_text(json.dumps(schema))
    problems = write_or_check(out, check=False)
    assert any("retired_field: field removed" in p for p in problems)
