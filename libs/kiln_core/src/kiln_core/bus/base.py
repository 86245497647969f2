"""The bus API every implementation provides (Kafka and embedded), and the delivery loop."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = ()


@dataclass(frozen=True)
class Record:
    """A record as delivered to a consumer."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: Headers = ()
    timestamp_ms: int = 0

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


RecordHandler = Callable[[Record], Awaitable[None]]


@dataclass
class DeliveryStats:
    delivered: int = 0
    failed: int = 0
    committed: int = 0
    errors: list[str] = field(default_factory=list)


class Consumer(ABC):
    """A member of a consumer group with manual offset commits.

    Records of one partition arrive in order. Nothing is committed unless :meth:`commit` is
    called; :meth:`rewind` makes the next :meth:`poll` deliver a record again.
    """

    def __init__(self, topics: Sequence[str], group_id: str) -> None:
        self.topics = list(topics)
        self.group_id = group_id
        self.stats = DeliveryStats()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def wait_assigned(self, timeout_s: float = 30.0) -> None:
        """Block until the group has given this member its partitions (no-op when immediate)."""
        return None

    @abstractmethod
    async def poll(self, timeout_s: float = 0.5, max_records: int = 500) -> list[Record]: ...

    @abstractmethod
    async def commit(self, records: Sequence[Record]) -> None:
        """Commit, per partition, the offset after the last of ``records``."""

    @abstractmethod
    async def rewind(self, record: Record) -> None:
        """Seek the record's partition back so ``record`` is delivered again."""

    async def run(
        self,
        handler: RecordHandler,
        stop: asyncio.Event,
        *,
        retry_backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
    ) -> None:
        """Deliver records to ``handler`` until ``stop`` is set; at-least-once.

        A record is committed only after its handler returned. If the handler raises, the
        record's partition is rewound and the record redelivered after a backoff.
        """
        backoff = retry_backoff_s
        while not stop.is_set():
            records = await self.poll(timeout_s=0.2)
            done: list[Record] = []
            failed_partitions: set[tuple[str, int]] = set()
            for record in records:
                tp = (record.topic, record.partition)
                if tp in failed_partitions:
                    continue
                try:
                    await handler(record)
                except Exception as exc:  # noqa: BLE001 - any handler failure means redeliver
                    self.stats.failed += 1
                    self.stats.errors.append(repr(exc))
                    log.warning(
                        "handler failed; record will be redelivered",
                        extra={"topic": record.topic, "offset": record.offset, "error": repr(exc)},
                    )
                    failed_partitions.add(tp)
                    await self.rewind(record)
                else:
                    self.stats.delivered += 1
                    done.append(record)
            if done:
                await self.commit(done)
                self.stats.committed += len(done)
            if failed_partitions:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff_s)
            elif done:
                backoff = retry_backoff_s


class Bus(ABC):
    """Publish records durably and create consumers. Chosen by URL scheme (see ``open_bus``)."""

    url: str

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def publish_many(self, records: Sequence[OutgoingRecord]) -> None:
        """Publish records; returns once every one is durably stored (acks=all on Kafka)."""

    async def publish(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        await self.publish_many([OutgoingRecord(topic, value, key, headers)])

    @abstractmethod
    def consumer(self, topics: Sequence[str], group_id: str) -> Consumer: ...

    @abstractmethod
    async def ensure_topics(self, topics: Sequence[str]) -> None: ...

    @abstractmethod
    async def check(self) -> None:
        """Raise if the bus is not reachable (used by ``/readyz``)."""

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
