"""Exactly-once effects over real Kafka and PostgreSQL: crashes, duplicate publishes, poison."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from kiln_core.bus import Bus, OutgoingRecord, dlq_topic, open_bus
from kiln_core.catalog import PING_EVENTS
from kiln_core.events import new_event
from kiln_core.inbox import InboxConsumer, SimulatedCrash, replay_dead_letters
from kiln_core.outbox import OutboxRelay, add_event
from tests.conftest import eventually
from tests.support.effects import count_effects, record_effect

pytestmark = pytest.mark.integration
PING = PING_EVENTS["dataset"]
TOPIC = "kiln.dataset"


def ping():  # type: ignore[no-untyped-def]
    ping_id = uuid.uuid4().hex
    return new_event(PING(ping_id=ping_id, origin="dataset", sent_at=datetime.now(UTC)), ping_id)


@pytest.fixture
async def kafka(kafka_url: str) -> AsyncIterator[Bus]:
    bus = open_bus(kafka_url)
    await bus.start()
    await bus.ensure_topics([TOPIC, dlq_topic(TOPIC)])
    yield bus
    await bus.stop()


async def run_until(consumer: InboxConsumer, condition, timeout_s: float = 30) -> None:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await eventually(condition, timeout_s=timeout_s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def read_topic(bus: Bus, topic: str, want: int, timeout_s: float = 20) -> list:  # type: ignore[type-arg]
    reader = bus.consumer([topic], f"reader-{uuid.uuid4().hex}")
    await reader.start()
    await reader.wait_assigned()
    got: list = []  # type: ignore[type-arg]
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            got += await reader.poll(timeout_s=0.5)
    finally:
        await reader.stop()
    return got


async def test_crash_after_db_commit_before_offset_commit_applies_once(pg_db, kafka: Bus) -> None:  # type: ignore[no-untyped-def]
    event = ping()
    async with pg_db.transaction() as session:
        await add_event(session, event)
    await OutboxRelay(pg_db, kafka, service="t").drain()

    crashing = InboxConsumer("t", pg_db, kafka, {PING.event_type: record_effect})

    async def crash(_event):  # type: ignore[no-untyped-def]
        raise SimulatedCrash("process killed between DB commit and offset commit")

    crashing.after_commit = crash
    stop = asyncio.Event()
    with pytest.raises(SimulatedCrash):
        await asyncio.wait_for(crashing.run(stop), 30)
    assert await count_effects(pg_db, event.data["ping_id"]) == 1  # the write did commit

    # A restarted member of the same group gets the uncommitted record again...
    restarted = InboxConsumer("t", pg_db, kafka, {PING.event_type: record_effect})
    await run_until(
        restarted, lambda: restarted.consumer and restarted.consumer.stats.committed >= 1
    )
    # ...and its inbox row turns the redelivery into a no-op.
    assert await count_effects(pg_db, event.data["ping_id"]) == 1


async def test_relay_publishing_a_row_twice_still_gives_one_effect(pg_db, kafka: Bus) -> None:  # type: ignore[no-untyped-def]
    event = ping()
    async with pg_db.transaction() as session:
        await add_event(session, event)
    relay = OutboxRelay(pg_db, kafka, service="t")

    async def crash_before_marking(_rows):  # type: ignore[no-untyped-def]
        raise SimulatedCrash("relay died after publishing, before marking rows sent")

    relay.after_publish = crash_before_marking
    with pytest.raises(SimulatedCrash):
        await relay.publish_pending()
    relay.after_publish = None
    assert await relay.drain() == 1  # the row was still pending, so it is published again

    copies = [
        r for r in await read_topic(kafka, TOPIC, 2) if r.header("ce_id") == event.id.encode()
    ]
    assert len(copies) == 2

    consumer = InboxConsumer("t", pg_db, kafka, {PING.event_type: record_effect})
    await run_until(consumer, lambda: consumer.consumer and consumer.consumer.stats.committed >= 2)
    assert await count_effects(pg_db, event.data["ping_id"]) == 1


async def test_concurrent_relays_publish_each_row_once(pg_db, kafka: Bus) -> None:  # type: ignore[no-untyped-def]
    events = [ping() for _ in range(200)]
    async with pg_db.transaction() as session:
        for e in events:
            await add_event(session, e)
    relays = [OutboxRelay(pg_db, kafka, service="t", batch_size=10) for _ in range(3)]
    counts = await asyncio.gather(*(r.drain() for r in relays))
    assert sum(counts) == 200
    published = await read_topic(kafka, TOPIC, 200)
    ids = [r.header("ce_id") for r in published]
    assert sorted(ids) == sorted(e.id.encode() for e in events)


async def test_poison_event_lands_in_dlq_with_reason_and_replays(pg_db, kafka: Bus) -> None:  # type: ignore[no-untyped-def]
    healed = asyncio.Event()

    async def handler(session, event, data):  # type: ignore[no-untyped-def]
        if not healed.is_set():
            raise ValueError("unsupported label format 'v9'")
        await record_effect(session, event, data)

    poison = ping()
    await kafka.publish(
        TOPIC, poison.to_bytes(), poison.key.encode(), (("ce_id", poison.id.encode()),)
    )
    consumer = InboxConsumer(
        "t", pg_db, kafka, {PING.event_type: handler}, max_attempts=3, backoff_initial_s=0.01
    )
    await run_until(consumer, lambda: consumer.consumer and consumer.consumer.stats.committed >= 1)
    assert await count_effects(pg_db) == 0

    dead = await read_topic(kafka, dlq_topic(TOPIC), 1)
    assert len(dead) == 1
    assert dead[0].header("kiln-dlq-reason") == b"unsupported label format 'v9'"
    assert dead[0].header("kiln-dlq-consumer") == b"t"
    assert dead[0].header("kiln-dlq-attempts") == b"3"

    healed.set()
    replayed = await replay_dead_letters(kafka, TOPIC, consumer="t")
    assert [r["event_id"] for r in replayed] == [poison.id]
    consumer2 = InboxConsumer("t", pg_db, kafka, {PING.event_type: handler})
    await run_until(consumer2, lambda: count_effects(pg_db, poison.data["ping_id"]))
    assert await count_effects(pg_db, poison.data["ping_id"]) == 1


async def test_malformed_input_goes_to_dlq_while_the_consumer_keeps_going(
    pg_db, kafka: Bus
) -> None:  # type: ignore[no-untyped-def]
    good = ping()
    bad = [
        b"<xml>not a cloud event</xml>",
        b'{"specversion": "1.0", "id": "m1", "source": "/x", "type": "kiln.dataset.unknown.thing", "time": "2026-01-01T00:00:00Z"}',
        b'{"specversion": "1.0", "id": "m2", "source": "/x", "type": "kiln.dataset.ping.sent", "time": "2026-01-01T00:00:00Z", "data": {"ping_id": []}}',
    ]
    await kafka.publish_many(
        [OutgoingRecord(TOPIC, raw, b"k") for raw in bad]
        + [OutgoingRecord(TOPIC, good.to_bytes(), b"k")]
    )
    consumer = InboxConsumer("t", pg_db, kafka, {PING.event_type: record_effect})
    await run_until(consumer, lambda: count_effects(pg_db, good.data["ping_id"]))
    dead = await read_topic(kafka, dlq_topic(TOPIC), 3)
    reasons = {r.header("kiln-dlq-error-type"): r.header("kiln-dlq-reason") for r in dead}
    assert set(reasons) == {b"malformed-event", b"unknown-event-type", b"event-schema-violation"}
    assert b"kiln.dataset.unknown.thing" in reasons[b"unknown-event-type"]
    assert b"ping_id" in reasons[b"event-schema-violation"]


async def test_outbox_notify_wakes_the_relay_without_polling(pg_db, kafka: Bus) -> None:  # type: ignore[no-untyped-def]
    relay = OutboxRelay(pg_db, kafka, service="t", fallback_interval_s=30)  # no useful polling
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    await asyncio.sleep(0.5)  # relay is now waiting on LISTEN
    event = ping()
    async with pg_db.transaction() as session:
        await add_event(session, event)
    got = [
        r
        for r in await read_topic(kafka, TOPIC, 1, timeout_s=10)
        if r.header("ce_id") == event.id.encode()
    ]
    stop.set()
    await task
    assert len(got) == 1
