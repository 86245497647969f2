"""Kafka bus on aiokafka: idempotent producer with acks=all, consumer groups, manual commits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from kiln_core.bus.base import Bus, Consumer, OutgoingRecord, Record
from kiln_core.telemetry import attach, detach, extract_context, libraries_instrumented

log = logging.getLogger(__name__)


class KafkaConsumer(Consumer):
    def __init__(self, bus: KafkaBus, topics: Sequence[str], group_id: str) -> None:
        super().__init__(topics, group_id)
        self.bus = bus
        self._consumer = AIOKafkaConsumer(
            *[bus.wire(t) for t in self.topics],
            bootstrap_servers=bus.bootstrap,
            group_id=bus.wire(group_id),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Only see records of committed producer transactions, never aborted ones.
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=600_000,
        )

    async def start(self) -> None:
        await self.bus.ensure_topics(self.topics)
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def wait_assigned(self, timeout_s: float = 30.0) -> None:
        """Block until the group has assigned this member its partitions."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no partitions assigned to group {self.group_id}")
            await asyncio.sleep(0.05)

    async def lag(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)  # known once a fetch of the partition answered
            if end is None:
                continue
            position = await self._consumer.position(tp)
            out[(self.bus.unwire(tp.topic), tp.partition)] = max(end - position, 0)
        return out

    async def poll(self, timeout_s: float = 0.5, max_records: int = 500) -> list[Record]:
        batches = await self._consumer.getmany(
            timeout_ms=int(timeout_s * 1000), max_records=max_records
        )
        out: list[Record] = []
        for tp, msgs in batches.items():
            for m in msgs:
                out.append(
                    Record(
                        topic=self.bus.unwire(tp.topic),
                        partition=tp.partition,
                        offset=m.offset,
                        value=m.value or b"",
                        key=m.key,
                        headers=tuple((k, v or b"") for k, v in (m.headers or ())),
                        timestamp_ms=m.timestamp,
                    )
                )
        return out

    async def commit(self, records: Sequence[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(self.bus.wire(rec.topic), rec.partition)
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
        if offsets:
            await self._consumer.commit(offsets)

    async def rewind(self, record: Record) -> None:
        self._consumer.seek(
            TopicPartition(self.bus.wire(record.topic), record.partition), record.offset
        )


class KafkaBus(Bus):
    """``kafka://host:port[,host:port]?partitions=3&replication=1&namespace=ns``.

    A namespace prefixes every topic and group id on the wire (``ns.kiln.dataset``), so
    environments or test runs can share one cluster without seeing each other's records.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        self.bootstrap = parts.netloc
        query = parse_qs(parts.query)
        self.partitions = int(query.get("partitions", ["3"])[0])
        self.replication = int(query.get("replication", ["1"])[0])
        namespace = query.get("namespace", [""])[0]
        self.prefix = f"{namespace}." if namespace else ""
        self._producer: AIOKafkaProducer | None = None
        self._known_topics: set[str] = set()
        self._topic_lock = asyncio.Lock()

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                enable_idempotence=True,
                acks="all",
                linger_ms=0,
                request_timeout_ms=15_000,
            )
            try:
                await producer.start()
            except BaseException:
                # A failed start leaves the client's connections and tasks behind otherwise.
                await producer.stop()
                raise
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None:
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        futures = []
        for rec in records:
            # Sent in the trace the record carries (the request that emitted the event), so an
            # instrumented producer's span joins that trace rather than starting its own.
            token = attach(extract_context(rec.headers)) if libraries_instrumented() else None
            try:
                futures.append(
                    await self._producer.send(
                        self.wire(rec.topic),
                        value=rec.value,
                        key=rec.key,
                        headers=list(rec.headers),
                    )
                )
            finally:
                if token is not None:
                    detach(token)
        # Idempotent producer keeps per-partition order across retries; wait for every ack.
        await asyncio.gather(*futures)

    def consumer(self, topics: Sequence[str], group_id: str) -> Consumer:
        return KafkaConsumer(self, topics, group_id)

    def wire(self, name: str) -> str:
        return self.prefix + name

    def unwire(self, name: str) -> str:
        return name[len(self.prefix) :] if self.prefix and name.startswith(self.prefix) else name

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        missing = [self.wire(t) for t in topics if self.wire(t) not in self._known_topics]
        if not missing:
            return
        async with self._topic_lock:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                existing = set(await admin.list_topics())
                new = [
                    NewTopic(t, num_partitions=self.partitions, replication_factor=self.replication)
                    for t in missing
                    if t not in existing
                ]
                if new:
                    try:
                        await admin.create_topics(new)
                    except TopicAlreadyExistsError:
                        pass
                    await self._wait_for_leaders(admin, [t.name for t in new])
            finally:
                await admin.close()
            self._known_topics.update(missing)

    async def _wait_for_leaders(self, admin: AIOKafkaAdminClient, topics: list[str]) -> None:
        for _ in range(100):
            described = await admin.describe_topics(topics)
            ready = all(
                d.get("error_code", 0) == 0
                and d.get("partitions")
                and all(p.get("leader", -1) >= 0 for p in d["partitions"])
                for d in described
            )
            if ready:
                return
            await asyncio.sleep(0.1)

    async def check(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()
