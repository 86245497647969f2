"""The event contract: CloudEvents 1.0 envelopes around typed, registered event data models.

Every event type is a pydantic model subclassing :class:`EventData` with a class-level
``event_type`` named ``kiln.<service>.<aggregate>.<past-tense-verb>``. Registering it makes it
decodable, exportable as JSON Schema and part of the AsyncAPI document.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiln_core.errors import EventSchemaViolation, MalformedEvent, UnknownEventType

SCHEMA_BASE = "https://kiln.dev/schemas/events/"
SERVICES = ("dataset", "annotation", "training", "registry", "serving")


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope in structured JSON mode."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @property
    def topic(self) -> str:
        return topic_for(self.type)

    @property
    def key(self) -> str:
        return self.subject or self.id


class EventData(BaseModel):
    """Base of every typed event payload."""

    model_config = ConfigDict(extra="allow")
    event_type: ClassVar[str]
    description: ClassVar[str] = ""


E = TypeVar("E", bound=type[EventData])
EVENT_TYPES: dict[str, type[EventData]] = {}


def topic_for(event_type: str) -> str:
    """Events go to one topic per producing service: ``kiln.<service>``."""
    parts = event_type.split(".")
    if len(parts) != 4 or parts[0] != "kiln" or parts[1] not in SERVICES:
        raise UnknownEventType(
            f"event type {event_type!r} is not kiln.<service>.<aggregate>.<verb>"
        )
    return f"kiln.{parts[1]}"


def register_event(cls: E) -> E:
    """Class decorator: make an event type known to decoders, schema export and AsyncAPI."""
    name = cls.event_type
    topic_for(name)  # validates the naming rule
    existing = EVENT_TYPES.get(name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"event type {name} registered twice ({existing.__name__}, {cls.__name__})"
        )
    EVENT_TYPES[name] = cls
    return cls


def new_event(data: EventData, subject: str, *, source: str | None = None) -> CloudEvent:
    """Wrap typed data in a fresh envelope (new id, current time)."""
    service = data.event_type.split(".")[1]
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=source or f"/kiln/{service}",
        type=data.event_type,
        time=datetime.now(UTC),
        subject=subject,
        dataschema=f"{SCHEMA_BASE}{data.event_type}.json",
        data=data.model_dump(mode="json"),
    )


def decode_event(raw: bytes | str) -> tuple[CloudEvent, EventData]:
    """Parse and validate a record value; raise an :class:`EventRejected` subclass if unusable."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"record value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedEvent("record value is not a JSON object")
    try:
        envelope = CloudEvent.model_validate(obj)
    except ValidationError as exc:
        raise MalformedEvent(_first_errors(exc)) from None
    model = EVENT_TYPES.get(envelope.type)
    if model is None:
        raise UnknownEventType(f"no event type {envelope.type!r} is registered")
    try:
        data = model.model_validate(envelope.data)
    except ValidationError as exc:
        raise EventSchemaViolation(f"{envelope.type}: {_first_errors(exc)}") from None
    return envelope, data


def _first_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


# --- schema export ----------------------------------------------------------------------------


def event_json_schema(event_type: str) -> dict[str, Any]:
    model = EVENT_TYPES[event_type]
    schema = model.model_json_schema()
    schema["$id"] = f"{SCHEMA_BASE}{event_type}.json"
    schema["title"] = event_type
    if model.description:
        schema["description"] = model.description
    return schema


def envelope_json_schema() -> dict[str, Any]:
    schema = CloudEvent.model_json_schema()
    schema["$id"] = f"{SCHEMA_BASE}cloudevent.json"
    return schema


def asyncapi_document() -> dict[str, Any]:
    """One AsyncAPI 3.0 document describing every topic and event type Kiln publishes."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {"CloudEvent": envelope_json_schema()}
    for event_type in sorted(EVENT_TYPES):
        name = event_type.replace(".", "_")
        topic = topic_for(event_type)
        data_schema = event_json_schema(event_type)
        schemas[name] = data_schema
        messages[name] = {
            "name": event_type,
            "title": event_type,
            "summary": EVENT_TYPES[event_type].description or event_type,
            "contentType": "application/cloudevents+json",
            "headers": {
                "type": "object",
                "properties": {
                    "traceparent": {"type": "string", "description": "W3C trace context"}
                },
            },
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event_type},
                            "data": {"$ref": f"#/components/schemas/{name}"},
                        },
                    },
                ]
            },
            "bindings": {"kafka": {"key": {"type": "string", "description": "the event subject"}}},
        }
        channel = channels.setdefault(
            topic,
            {
                "address": topic,
                "description": f"Events published by the {topic.split('.')[1]} service",
                "messages": {},
            },
        )
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    for topic, channel in channels.items():
        operations["publish_" + topic.replace(".", "_")] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "messages": [
                {"$ref": f"#/channels/{topic}/messages/{m}"} for m in sorted(channel["messages"])
            ],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Kiln events",
            "version": "1.0.0",
            "description": (
                "CloudEvents 1.0 (structured JSON) published by Kiln's services, one Kafka topic "
                "per producing service, record key = subject. Schemas evolve additively."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "local": {
                "host": "127.0.0.1:59092",
                "protocol": "kafka",
                "description": "kiln infra up",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


# --- compatibility ----------------------------------------------------------------------------


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """List what in ``new`` breaks readers or stored events written against ``old``.

    Additive evolution only: removing a field, changing its type, making an optional field
    required, adding a required field, or narrowing an enum are breaking.
    """
    problems: list[str] = []
    old_props = old.get("properties", {})
    new_props = new.get("properties", {})
    old_req = set(old.get("required", []))
    new_req = set(new.get("required", []))
    for field, old_spec in old_props.items():
        where = f"{path}{field}"
        if field not in new_props:
            problems.append(f"{where}: field removed")
            continue
        new_spec = new_props[field]
        if _type_of(old_spec) != _type_of(new_spec):
            problems.append(f"{where}: type changed {_type_of(old_spec)} -> {_type_of(new_spec)}")
        old_enum, new_enum = old_spec.get("enum"), new_spec.get("enum")
        if old_enum is not None and (new_enum is None or not set(old_enum) <= set(new_enum)):
            if new_enum is not None:
                problems.append(f"{where}: enum values removed {set(old_enum) - set(new_enum)}")
        if "properties" in old_spec:
            problems += breaking_changes(old_spec, new_spec, where + ".")
    for field in new_req - old_req:
        if field in old_props:
            problems.append(f"{path}{field}: optional field became required")
        else:
            problems.append(f"{path}{field}: new required field")
    return problems


def _type_of(spec: dict[str, Any]) -> Any:
    if "$ref" in spec:
        return spec["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in spec:
        return sorted(str(_type_of(s)) for s in spec["anyOf"])
    return spec.get("type", spec.get("format"))
