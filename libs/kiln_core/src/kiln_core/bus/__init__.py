"""The message bus: one API, implementations chosen by URL scheme (``kafka://``, ``embedded://``)."""

from __future__ import annotations

from kiln_core.bus.base import (
    BatchHandler,
    Bus,
    Consumer,
    Headers,
    OutgoingRecord,
    Record,
    RecordHandler,
)
from kiln_core.bus.embedded import EmbeddedBus


def open_bus(url: str) -> Bus:
    """Return the bus implementation for ``url``; call ``await bus.start()`` before use."""
    scheme = url.split("://", 1)[0]
    if scheme == "embedded":
        return EmbeddedBus(url)
    if scheme == "kafka":
        from kiln_core.bus.kafka import KafkaBus  # heavy: aiokafka, only where Kafka is used

        return KafkaBus(url)
    raise ValueError(f"unsupported bus URL scheme {scheme!r} (use kafka:// or embedded://)")


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


__all__ = [
    "BatchHandler",
    "Bus",
    "Consumer",
    "Headers",
    "OutgoingRecord",
    "Record",
    "RecordHandler",
    "dlq_topic",
    "open_bus",
]
