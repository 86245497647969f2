"""One contract, two buses: every behaviour here must hold for Kafka and for embedded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from kiln_core.bus import Bus, Consumer, OutgoingRecord, Record, open_bus
from tests.conftest import eventually

TOPIC = "kiln.dataset"


@pytest.fixture(params=["embedded", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    url = request.getfixturevalue(f"{request.param}_url")
    instance = open_bus(url)
    await instance.start()
    await instance.ensure_topics([TOPIC, "kiln.training"])
    yield instance
    await instance.stop()


async def drain(consumer: Consumer, want: int, timeout_s: float = 20.0) -> list[Record]:
    got: list[Record] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(got) < want and asyncio.get_running_loop().time() < deadline:
        got += await consumer.poll(timeout_s=0.3)
    return got


async def started(bus: Bus, topics: list[str], group: str) -> Consumer:
    consumer = bus.consumer(topics, group)
    await consumer.start()
    await consumer.wait_assigned()
    return consumer


async def test_records_of_one_key_arrive_in_order_with_headers(bus: Bus) -> None:
    records = [
        OutgoingRecord(
            TOPIC, f"v{i}".encode(), b"aggregate-1", (("traceparent", b"t"), ("n", str(i).encode()))
        )
        for i in range(20)
    ]
    await bus.publish_many(records)
    consumer = await started(bus, [TOPIC], f"g-{uuid.uuid4().hex}")
    try:
        got = await drain(consumer, 20)
    finally:
        await consumer.stop()
    assert [r.value for r in got] == [f"v{i}".encode() for i in range(20)]
    assert all(r.key == b"aggregate-1" for r in got)
    assert [r.header("n") for r in got] == [str(i).encode() for i in range(20)]
    assert len({r.partition for r in got}) == 1


async def test_committed_records_are_not_redelivered_to_the_group(bus: Bus) -> None:
    group = f"g-{uuid.uuid4().hex}"
    await bus.publish_many([OutgoingRecord(TOPIC, f"a{i}".encode(), b"k") for i in range(5)])
    first = await started(bus, [TOPIC], group)
    got = await drain(first, 5)
    await first.commit(got)
    await first.stop()
    await bus.publish(TOPIC, b"after", b"k")
    second = await started(bus, [TOPIC], group)
    try:
        again = await drain(second, 1)
    finally:
        await second.stop()
    assert [r.value for r in again] == [b"after"]


async def test_uncommitted_records_are_redelivered_after_restart(bus: Bus) -> None:
    group = f"g-{uuid.uuid4().hex}"
    await bus.publish_many([OutgoingRecord(TOPIC, f"u{i}".encode(), b"k") for i in range(4)])
    first = await started(bus, [TOPIC], group)
    got = await drain(first, 4)
    await first.commit(got[:2])  # crash before committing the last two
    await first.stop()
    second = await started(bus, [TOPIC], group)
    try:
        again = await drain(second, 2)
    finally:
        await second.stop()
    assert [r.value for r in again] == [b"u2", b"u3"]


async def test_failed_handler_gets_the_record_again(bus: Bus) -> None:
    await bus.publish_many([OutgoingRecord(TOPIC, v, b"k") for v in (b"one", b"two", b"three")])
    consumer = await started(bus, [TOPIC], f"g-{uuid.uuid4().hex}")
    seen: list[bytes] = []
    failed_once: set[bytes] = set()
    stop = asyncio.Event()

    async def handler(record: Record) -> None:
        seen.append(record.value)
        if record.value == b"two" and b"two" not in failed_once:
            failed_once.add(b"two")
            raise RuntimeError("transient")
        if record.value == b"three":
            stop.set()

    try:
        await asyncio.wait_for(consumer.run(handler, stop, retry_backoff_s=0.01), 30)
    finally:
        await consumer.stop()
    assert seen == [b"one", b"two", b"two", b"three"]
    assert consumer.stats.failed == 1


async def test_every_group_gets_every_record(bus: Bus) -> None:
    marker = uuid.uuid4().hex.encode()
    a = await started(bus, ["kiln.training"], f"ga-{uuid.uuid4().hex}")
    b = await started(bus, ["kiln.training"], f"gb-{uuid.uuid4().hex}")
    try:
        await bus.publish_many(
            [
                OutgoingRecord("kiln.training", marker + str(i).encode(), str(i).encode())
                for i in range(9)
            ]
        )
        got_a = [r for r in await drain(a, 9) if r.value.startswith(marker)]
        got_b = [r for r in await drain(b, 9) if r.value.startswith(marker)]
    finally:
        await a.stop()
        await b.stop()
    assert len(got_a) == 9 and len(got_b) == 9


async def test_members_of_one_group_share_partitions_without_duplicates(bus: Bus) -> None:
    group = f"g-{uuid.uuid4().hex}"
    marker = uuid.uuid4().hex.encode()
    c1 = bus.consumer([TOPIC], group)
    c2 = bus.consumer([TOPIC], group)
    await c1.start()
    await c2.start()
    try:
        await c1.wait_assigned()
        await c2.wait_assigned()
        await bus.publish_many(
            [
                OutgoingRecord(TOPIC, marker + str(i).encode(), f"key-{i}".encode())
                for i in range(60)
            ]
        )
        values: list[bytes] = []

        async def collected() -> bool:
            for c in (c1, c2):
                batch = await c.poll(timeout_s=0.1)
                values.extend(r.value for r in batch if r.value.startswith(marker))
                await c.commit(batch)
            return len(values) >= 60

        await eventually(collected, timeout_s=30)
    finally:
        await c1.stop()
        await c2.stop()
    assert sorted(values) == sorted(marker + str(i).encode() for i in range(60))
