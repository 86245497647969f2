"""The bus API every implementation provides (Kafka and embedded), and the delivery loop."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from kiln_core.backoff import Backoff

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
BatchHandler = Callable[[list[Record]], Awaitable[None]]


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
        self._commit_task: asyncio.Future[None] | None = None

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def wait_assigned(self, timeout_s: float = 30.0) -> None:
        """Block until the group has given this member its partitions (no-op when immediate)."""
        return None

    async def lag(self) -> dict[tuple[str, int], int]:
        """Records per assigned (topic, partition) not yet taken by this member (none known:
        empty)."""
        return {}

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
        backoff = Backoff(retry_backoff_s, max_backoff_s)
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
                await backoff.sleep()
            elif done:
                backoff.reset()

    async def run_batches(
        self,
        handler: BatchHandler,
        stop: asyncio.Event,
        *,
        retry_backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        max_records: int = 500,
    ) -> None:
        """Like :meth:`run`, but hands over each polled batch whole.

        The batch is committed after ``handler`` returns; if it raises, every partition of the
        batch is rewound to its first record in the batch and the batch is redelivered.
        """
        backoff = Backoff(retry_backoff_s, max_backoff_s)
        while not stop.is_set():
            records = await self.poll(timeout_s=0.2, max_records=max_records)
            if not records:
                continue
            try:
                await handler(records)
            except Exception as exc:  # noqa: BLE001 - any failure means redeliver the batch
                self.stats.failed += 1
                self.stats.errors.append(repr(exc))
                log.warning(
                    "batch handler failed; batch will be redelivered",
                    extra={"records": len(records), "error": repr(exc)},
                )
                await self.flush_commits()
                firsts: dict[tuple[str, int], Record] = {}
                for record in records:
                    firsts.setdefault((record.topic, record.partition), record)
                for record in firsts.values():
                    await self.rewind(record)
                await backoff.sleep()
                continue
            self.stats.delivered += len(records)
            # The offset commit is a broker round trip; let it run while the next batch is
            # polled and applied. Commits stay in order, and a lost one only means redelivery,
            # which the inbox absorbs.
            self._commit_later(records)
            backoff.reset()
        await self.flush_commits()

    def _commit_later(self, records: list[Record]) -> None:
        previous = self._commit_task

        async def commit_after_previous() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await self.commit(records)
                self.stats.committed += len(records)
            except Exception as exc:  # noqa: BLE001 - redelivery is safe
                log.warning(
                    "offset commit failed; records may be redelivered", extra={"error": repr(exc)}
                )

        self._commit_task = asyncio.ensure_future(commit_after_previous())

    async def flush_commits(self) -> None:
        """Wait for offset commits still in flight."""
        if self._commit_task is not None:
            await asyncio.gather(self._commit_task, return_exceptions=True)
            self._commit_task = None


class Bus(ABC):
    """Publish records durably and create consumers. Chosen by URL scheme (see ``open_bus``)."""

    url: str
    in_process = False  # True when only this process can publish to or read from it

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
