"""In-process bus for the single-process quickstart and unit tests.

Same semantics as Kafka where the contract needs them: per-topic partitions with key-hash
placement, consumer groups sharing partitions, committed offsets per group, redelivery from
the committed offset when group membership changes, manual commits.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from kiln_core.bus.base import Bus, Consumer, OutgoingRecord, Record


@dataclass
class _Group:
    members: list[EmbeddedConsumer] = field(default_factory=list)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)
    generation: int = 0


class EmbeddedBroker:
    """The shared state of one embedded bus: topic logs, groups and their offsets."""

    def __init__(self, partitions: int = 3) -> None:
        self.partitions = partitions
        self.logs: dict[str, list[list[Record]]] = {}
        self.groups: dict[str, _Group] = {}
        self._changed = asyncio.Event()
        self._counter = itertools.count()

    def log(self, topic: str) -> list[list[Record]]:
        if topic not in self.logs:
            self.logs[topic] = [[] for _ in range(self.partitions)]
        return self.logs[topic]

    def append(self, rec: OutgoingRecord) -> None:
        parts = self.log(rec.topic)
        if rec.key is not None:
            partition = zlib.crc32(rec.key) % len(parts)
        else:
            partition = next(self._counter) % len(parts)
        log = parts[partition]
        log.append(
            Record(
                topic=rec.topic,
                partition=partition,
                offset=len(log),
                value=rec.value,
                key=rec.key,
                headers=tuple(rec.headers),
                timestamp_ms=int(time.time() * 1000),
            )
        )

    def notify(self) -> None:
        # Wake every waiting consumer; each re-arms with a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            pass

    def join(self, consumer: EmbeddedConsumer) -> None:
        group = self.groups.setdefault(consumer.group_id, _Group())
        group.members.append(consumer)
        group.generation += 1
        self.notify()

    def leave(self, consumer: EmbeddedConsumer) -> None:
        group = self.groups.get(consumer.group_id)
        if group and consumer in group.members:
            group.members.remove(consumer)
            group.generation += 1
            self.notify()

    def assignment(self, consumer: EmbeddedConsumer) -> list[tuple[str, int]]:
        group = self.groups[consumer.group_id]
        index = group.members.index(consumer)
        count = len(group.members)
        pairs = [(t, p) for t in sorted(consumer.topics) for p in range(len(self.log(t)))]
        return [tp for i, tp in enumerate(pairs) if i % count == index]


_BROKERS: dict[str, EmbeddedBroker] = {}


def broker_for(name: str) -> EmbeddedBroker:
    """One broker per name per process, so every service in the process shares it."""
    if name not in _BROKERS:
        _BROKERS[name] = EmbeddedBroker()
    return _BROKERS[name]


def reset_brokers() -> None:
    _BROKERS.clear()


class EmbeddedConsumer(Consumer):
    def __init__(self, broker: EmbeddedBroker, topics: Sequence[str], group_id: str) -> None:
        super().__init__(topics, group_id)
        self.broker = broker
        self.positions: dict[tuple[str, int], int] = {}
        self._generation = -1
        self._started = False

    async def start(self) -> None:
        self.broker.join(self)
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self.broker.leave(self)
            self._started = False

    def _sync_assignment(self) -> list[tuple[str, int]]:
        group = self.broker.groups[self.group_id]
        assigned = self.broker.assignment(self)
        if group.generation != self._generation:
            # A rebalance: resume every assigned partition from the group's committed offset.
            self._generation = group.generation
            self.positions = {tp: group.committed.get(tp, 0) for tp in assigned}
        return assigned

    async def poll(self, timeout_s: float = 0.5, max_records: int = 500) -> list[Record]:
        if not self._started:
            raise RuntimeError("consumer not started")
        deadline = time.monotonic() + timeout_s
        while True:
            out: list[Record] = []
            for tp in self._sync_assignment():
                log = self.broker.log(tp[0])[tp[1]]
                pos = self.positions.get(tp, 0)
                take = log[pos : pos + max_records - len(out)]
                out.extend(take)
                self.positions[tp] = pos + len(take)
                if len(out) >= max_records:
                    break
            if out:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            await self.broker.wait(remaining)

    async def commit(self, records: Sequence[Record]) -> None:
        group = self.broker.groups[self.group_id]
        for rec in records:
            tp = (rec.topic, rec.partition)
            group.committed[tp] = max(group.committed.get(tp, 0), rec.offset + 1)

    async def rewind(self, record: Record) -> None:
        self.positions[(record.topic, record.partition)] = record.offset


class EmbeddedBus(Bus):
    in_process = True

    def __init__(self, url: str = "embedded://") -> None:
        self.url = url
        name = url.split("://", 1)[1] or "default"
        self.broker = broker_for(name)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None:
        for rec in records:
            self.broker.append(rec)
        if records:
            self.broker.notify()

    def consumer(self, topics: Sequence[str], group_id: str) -> Consumer:
        return EmbeddedConsumer(self.broker, topics, group_id)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        for topic in topics:
            self.broker.log(topic)

    async def check(self) -> None:
        return None
