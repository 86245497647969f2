"""Outbox → embedded bus → inbox on SQLite: the same exactly-once rules as the real stack."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from kiln_core.bus import Record, dlq_topic, open_bus
from kiln_core.catalog import PING_EVENTS
from kiln_core.events import new_event
from kiln_core.inbox import InboxConsumer, replay_dead_letters
from kiln_core.outbox import OutboxRelay, add_event
from tests.conftest import eventually
from tests.support.effects import count_effects, record_effect

PING = PING_EVENTS["dataset"]


def ping(ping_id: str | None = None):  # type: ignore[no-untyped-def]
    ping_id = ping_id or uuid.uuid4().hex
    return new_event(PING(ping_id=ping_id, origin="dataset", sent_at=datetime.now(UTC)), ping_id)


async def test_duplicate_event_is_applied_once(sqlite_db, embedded_url: str) -> None:  # type: ignore[no-untyped-def]
    bus = open_bus(embedded_url)
    consumer = InboxConsumer("t", sqlite_db, bus, {PING.event_type: record_effect})
    event = ping()
    await bus.publish("kiln.dataset", event.to_bytes(), event.key.encode())
    await bus.publish("kiln.dataset", event.to_bytes(), event.key.encode())  # redelivery
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await eventually(lambda: consumer.consumer and consumer.consumer.stats.committed >= 2)  # type: ignore[union-attr]
    stop.set()
    await task
    assert await count_effects(sqlite_db, event.data["ping_id"]) == 1


async def test_relay_publishes_committed_rows_only(sqlite_db, embedded_url: str) -> None:  # type: ignore[no-untyped-def]
    bus = open_bus(embedded_url)
    relay = OutboxRelay(sqlite_db, bus, service="t")
    kept, rolled_back = ping(), ping()
    async with sqlite_db.transaction() as session:
        await add_event(session, kept)
    with pytest.raises(RuntimeError):
        async with sqlite_db.transaction() as session:
            await add_event(session, rolled_back)
            raise RuntimeError("state change failed")
    assert await relay.drain() == 1
    assert await relay.drain() == 0
    log = [r for part in bus.broker.log("kiln.dataset") for r in part]  # type: ignore[attr-defined]
    assert [r.header("ce_id") for r in log] == [kept.id.encode()]


async def test_handler_that_always_fails_goes_to_dlq_and_replays(
    sqlite_db, embedded_url: str
) -> None:  # type: ignore[no-untyped-def]
    bus = open_bus(embedded_url)
    broken = {"on": True}

    async def flaky(session, event, data):  # type: ignore[no-untyped-def]
        if broken["on"]:
            raise ValueError("label schema v2 not supported")
        await record_effect(session, event, data)

    consumer = InboxConsumer(
        "t", sqlite_db, bus, {PING.event_type: flaky}, max_attempts=3, backoff_initial_s=0.001
    )
    poison, good = ping(), ping()
    for e in (poison, good):
        await bus.publish("kiln.dataset", e.to_bytes(), e.key.encode())
    record = Record(
        "kiln.dataset",
        0,
        0,
        poison.to_bytes(),
        poison.key.encode(),
        (("ce_id", poison.id.encode()),),
    )
    await consumer.handle_record(record)
    dlq = [r for part in bus.broker.log(dlq_topic("kiln.dataset")) for r in part]  # type: ignore[attr-defined]
    assert len(dlq) == 1
    assert dlq[0].header("kiln-dlq-reason") == b"label schema v2 not supported"
    assert dlq[0].header("kiln-dlq-attempts") == b"3"
    assert await count_effects(sqlite_db) == 0

    broken["on"] = False
    replayed = await replay_dead_letters(bus, "kiln.dataset", idle_timeout_s=0.2)
    assert [r["event_id"] for r in replayed] == [poison.id]
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await eventually(lambda: count_effects(sqlite_db, poison.data["ping_id"]))
    stop.set()
    await task
    # the replayed copy and the original both arrived: still one effect each
    assert await count_effects(sqlite_db, poison.data["ping_id"]) == 1
    assert await count_effects(sqlite_db, good.data["ping_id"]) == 1


async def test_malformed_records_go_to_dlq_and_the_consumer_keeps_going(
    sqlite_db, embedded_url: str
) -> None:  # type: ignore[no-untyped-def]
    bus = open_bus(embedded_url)
    consumer = InboxConsumer("t", sqlite_db, bus, {PING.event_type: record_effect})
    bad = [
        b"definitely not json",
        b'{"specversion": "1.0", "id": "x1", "source": "/x", "type": "kiln.dataset.alien.landed", "time": "2026-01-01T00:00:00Z"}',
        b'{"specversion": "1.0", "id": "x2", "source": "/x", "type": "kiln.dataset.ping.sent", "time": "2026-01-01T00:00:00Z", "data": {"origin": 3}}',
    ]
    good = ping()
    for raw in bad:
        await bus.publish("kiln.dataset", raw, b"same-key")
    await bus.publish("kiln.dataset", good.to_bytes(), b"same-key")
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await eventually(lambda: count_effects(sqlite_db, good.data["ping_id"]))
    stop.set()
    await task
    dlq = [r for part in bus.broker.log(dlq_topic("kiln.dataset")) for r in part]  # type: ignore[attr-defined]
    kinds = sorted(r.header("kiln-dlq-error-type") for r in dlq)
    assert kinds == [b"event-schema-violation", b"malformed-event", b"unknown-event-type"]


async def test_consumer_started_while_the_broker_is_down_waits_for_it(
    sqlite_db, embedded_url: str
) -> None:  # type: ignore[no-untyped-def]
    bus = open_bus(embedded_url)
    ensure_topics = bus.ensure_topics
    refusals = {"left": 2}

    async def unreachable_at_first(topics):  # type: ignore[no-untyped-def]
        if refusals["left"]:
            refusals["left"] -= 1
            raise ConnectionError("Unable to bootstrap from 127.0.0.1:1")
        await ensure_topics(topics)

    bus.ensure_topics = unreachable_at_first  # type: ignore[method-assign]
    consumer = InboxConsumer("t", sqlite_db, bus, {PING.event_type: record_effect})
    event = ping()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await bus.publish("kiln.dataset", event.to_bytes(), event.key.encode())
    await eventually(lambda: consumer.consumer is not None, timeout_s=10)
    await eventually(lambda: consumer.consumer.stats.committed >= 1, timeout_s=10)  # type: ignore[union-attr]
    stop.set()
    await task
    assert refusals["left"] == 0 and not task.exception()
    assert await count_effects(sqlite_db, event.data["ping_id"]) == 1
