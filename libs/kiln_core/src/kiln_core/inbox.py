"""Idempotent inbox consumer: exactly-once effects over at-least-once delivery.

For each record: decode and validate the CloudEvent; run the handler and insert the
``(consumer, event id)`` inbox row in one transaction; commit the offset only afterwards. A
redelivered event finds its inbox row and changes nothing. Handler failures are retried with
backoff; events that can never succeed go to ``<topic>.dlq`` with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from opentelemetry import trace
from sqlalchemy import Column, DateTime, String
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.backoff import Backoff
from kiln_core.bus import Bus, Consumer, OutgoingRecord, Record, dlq_topic
from kiln_core.db import Database, utcnow
from kiln_core.errors import EventRejected
from kiln_core.events import CloudEvent, EventData, decode_event, topic_for
from kiln_core.metrics import EVENT_HANDLE_SECONDS, EVENTS_DEAD_LETTERED, EVENTS_HANDLED
from kiln_core.outage import Outage
from kiln_core.telemetry import extract_context, tracer

log = logging.getLogger(__name__)

EventHandler = Callable[[AsyncSession, CloudEvent, Any], Awaitable[None]]

DLQ_PREFIX = "kiln-dlq-"


class InboxEntry(SQLModel, table=True):
    __tablename__ = "inbox"

    consumer: str = Field(sa_column=Column(String(100), primary_key=True))
    event_id: str = Field(sa_column=Column(String(64), primary_key=True))
    event_type: str = Field(sa_column=Column(String(200), nullable=False))
    processed_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False),
    )


INBOX = InboxEntry.__table__  # type: ignore[attr-defined]


def create_inbox_table(op: Any) -> None:
    import sqlalchemy as sa

    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )


class SimulatedCrash(BaseException):
    """Raised by fault-injection hooks in tests to stop a consumer as a crash would."""


def _is_transient(exc: BaseException) -> bool:
    """Infrastructure trouble (DB unreachable) must not poison an event: redeliver instead."""
    if isinstance(exc, OperationalError | InterfaceError | ConnectionError | OSError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class InboxConsumer:
    """Applies events of the given types to one service's database, exactly once in effect."""

    def __init__(
        self,
        name: str,
        db: Database,
        bus: Bus,
        handlers: dict[str, EventHandler],
        *,
        topics: Sequence[str] | None = None,
        max_attempts: int = 5,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        batch_size: int = 200,
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.db = db
        self.bus = bus
        self.handlers = dict(handlers)
        self.topics = sorted(set(topics or [topic_for(t) for t in self.handlers]))
        self.group_id = f"kiln-{name}"
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.consumer: Consumer | None = None
        insert_fn = pg_insert if db.is_postgres else sqlite_insert
        self._claim = insert_fn(INBOX).on_conflict_do_nothing()
        # Fault-injection point for tests: runs after the DB commit, before the offset commit.
        self.after_commit: Callable[[CloudEvent], Awaitable[None]] | None = None

    async def handle_batch(self, records: list[Record]) -> None:
        """Apply a polled batch in one transaction; fall back to one by one if any fails.

        Under load this turns a handful of database round trips per event into a handful per
        batch. Rejected records go to the DLQ first; the rest keep their order.
        """
        if len(records) == 1:
            await self.handle_record(records[0])
            return
        decoded: list[tuple[Record, CloudEvent, EventData, EventHandler]] = []
        for record in records:
            routed = await self._route(record)
            if routed is not None:
                decoded.append((record, *routed))
        if not decoded:
            return
        started = time.perf_counter()
        try:
            applied = await self._apply_batch(decoded)
        except Exception as exc:
            if _is_transient(exc):
                raise
            log.info(
                "batch failed; applying its events one by one",
                extra={"consumer": self.name, "error": repr(exc)},
            )
            for record, *_ in decoded:
                await self.handle_record(record)
            return
        elapsed = (time.perf_counter() - started) / len(decoded)
        for _record, envelope, _data, _handler in decoded:
            EVENT_HANDLE_SECONDS.labels(self.name).observe(elapsed)
            EVENTS_HANDLED.labels(
                self.name, "applied" if envelope.id in applied else "duplicate"
            ).inc()
        if self.after_commit is not None:
            for _record, envelope, _data, _handler in decoded:
                if envelope.id in applied:
                    await self.after_commit(envelope)

    async def _apply_batch(
        self, decoded: list[tuple[Record, CloudEvent, EventData, EventHandler]]
    ) -> set[str]:
        now = utcnow()
        rows = [
            {"consumer": self.name, "event_id": e.id, "event_type": e.type, "processed_at": now}
            for _r, e, _d, _h in decoded
        ]
        async with self.db.transaction() as session:
            # One statement claims the whole batch; ids already claimed come back missing.
            result = await session.execute(self._claim.values(rows).returning(INBOX.c.event_id))
            claimed = {row[0] for row in result}
            applying: set[str] = set()
            for record, envelope, data, handler in decoded:
                if envelope.id not in claimed or envelope.id in applying:
                    continue  # already applied, or the same event twice in one batch
                applying.add(envelope.id)
                with self._span(record, envelope):
                    await handler(session, envelope, data)
        return applying

    async def _route(self, record: Record) -> tuple[CloudEvent, EventData, EventHandler] | None:
        """Decode a record and find its handler; dead-letter what can never be applied."""
        try:
            envelope, data = decode_event(record.value)
        except EventRejected as exc:
            await self.dead_letter(record, exc)
            return None
        handler = self.handlers.get(envelope.type)
        if handler is None:
            EVENTS_HANDLED.labels(self.name, "ignored").inc()
            return None
        return envelope, data, handler

    def _span(self, record: Record, envelope: CloudEvent) -> Any:
        """The consumer span, a child of the producer's trace carried in the record headers."""
        return tracer("kiln.inbox").start_as_current_span(
            f"{self.name} handle {envelope.type}",
            context=extract_context(record.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.message.id": envelope.id,
                "kiln.consumer": self.name,
            },
        )

    async def handle_record(self, record: Record) -> None:
        routed = await self._route(record)
        if routed is None:
            return
        envelope, data, handler = routed
        with self._span(record, envelope):
            await self._apply_with_retries(record, envelope, data, handler)

    async def _apply_with_retries(
        self, record: Record, envelope: CloudEvent, data: EventData, handler: EventHandler
    ) -> None:
        attempt = 0
        backoff = Backoff(self.backoff_initial_s, self.backoff_max_s)
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                applied = await self._apply_once(envelope, data, handler)
            except EventRejected as exc:
                await self.dead_letter(record, exc, attempts=attempt)
                return
            except Exception as exc:
                if _is_transient(exc):
                    raise  # the delivery loop rewinds and redelivers; never dead-letter this
                if attempt >= self.max_attempts:
                    await self.dead_letter(record, exc, attempts=attempt)
                    return
                EVENTS_HANDLED.labels(self.name, "retried").inc()
                log.warning(
                    "event handler failed; retrying",
                    extra={
                        "consumer": self.name,
                        "event_id": envelope.id,
                        "attempt": attempt,
                        "error": repr(exc),
                    },
                )
                await backoff.sleep()
                continue
            EVENT_HANDLE_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            EVENTS_HANDLED.labels(self.name, "applied" if applied else "duplicate").inc()
            if self.after_commit is not None:
                await self.after_commit(envelope)
            return

    async def _apply_once(
        self, envelope: CloudEvent, data: EventData, handler: EventHandler
    ) -> bool:
        """Run the handler and record the event in one transaction; False if already applied."""
        async with self.db.transaction() as session:
            # Claim the event first: a concurrent claimer of the same id waits on this row and
            # then finds it taken; an earlier claim means the event was already applied.
            claimed = await session.execute(
                self._claim.values(
                    consumer=self.name,
                    event_id=envelope.id,
                    event_type=envelope.type,
                    processed_at=utcnow(),
                ).returning(INBOX.c.event_id)
            )
            if claimed.first() is None:
                return False
            await handler(session, envelope, data)
        return True

    async def dead_letter(self, record: Record, exc: BaseException, attempts: int = 1) -> None:
        reason = str(exc) or repr(exc)
        error_type = exc.type if isinstance(exc, EventRejected) else type(exc).__name__
        headers = tuple(h for h in record.headers if not h[0].startswith(DLQ_PREFIX)) + (
            (DLQ_PREFIX + "reason", reason[:4000].encode()),
            (DLQ_PREFIX + "error-type", error_type.encode()),
            (DLQ_PREFIX + "consumer", self.name.encode()),
            (DLQ_PREFIX + "topic", record.topic.encode()),
            (DLQ_PREFIX + "partition", str(record.partition).encode()),
            (DLQ_PREFIX + "offset", str(record.offset).encode()),
            (DLQ_PREFIX + "attempts", str(attempts).encode()),
            (DLQ_PREFIX + "time", utcnow().isoformat().encode()),
        )
        await self.bus.publish_many(
            [OutgoingRecord(dlq_topic(record.topic), record.value, record.key, headers)]
        )
        EVENTS_HANDLED.labels(self.name, "dead_lettered").inc()
        EVENTS_DEAD_LETTERED.labels(self.name, record.topic, error_type).inc()
        log.error(
            "event dead-lettered",
            extra={
                "consumer": self.name,
                "topic": record.topic,
                "offset": record.offset,
                "reason": reason,
                "error_type": error_type,
            },
        )

    async def start(self) -> Consumer:
        await self.bus.ensure_topics(self.topics + [dlq_topic(t) for t in self.topics])
        consumer = self.bus.consumer(self.topics, self.group_id)
        await consumer.start()
        self.consumer = consumer
        return consumer

    async def _start_when_reachable(self, stop: asyncio.Event) -> Consumer | None:
        """Start the consumer, retrying with backoff while the broker is unreachable, so a
        consumer process started during a broker outage waits for it instead of exiting."""
        backoff = Backoff(max(0.5, self.backoff_initial_s), max(5.0, self.backoff_max_s))
        outage = Outage(log, "event consumer start", consumer=self.name)
        while not stop.is_set():
            try:
                consumer = await self.start()
            except Exception as exc:  # noqa: BLE001 - retried until the broker answers
                outage.failed(exc)
            else:
                outage.recovered()
                return consumer
            await backoff.sleep(stop)
        return None

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self.consumer or await self._start_when_reachable(stop)
        if consumer is None:
            return
        try:
            await consumer.run_batches(
                self.handle_batch,
                stop,
                retry_backoff_s=self.backoff_initial_s,
                max_backoff_s=self.backoff_max_s,
                max_records=self.batch_size,
            )
        finally:
            await consumer.stop()
            self.consumer = None


async def replay_dead_letters(
    bus: Bus,
    topic: str,
    *,
    consumer: str | None = None,
    event_id: str | None = None,
    group_id: str = "kiln-dlq-replay",
    idle_timeout_s: float = 2.0,
) -> list[dict[str, str]]:
    """Re-feed dead-lettered records of ``topic`` to it; returns what was replayed.

    Consumers' inboxes make the re-feed harmless for those that already applied an event.
    """
    source = dlq_topic(topic)
    await bus.ensure_topics([topic, source])
    reader = bus.consumer([source], group_id)
    await reader.start()
    replayed: list[dict[str, str]] = []
    try:
        await reader.wait_assigned()
        while True:
            records = await reader.poll(timeout_s=idle_timeout_s)
            if not records:
                return replayed
            out = []
            for rec in records:
                info = {
                    k[len(DLQ_PREFIX) :]: v.decode(errors="replace")
                    for k, v in rec.headers
                    if k.startswith(DLQ_PREFIX)
                }
                ce_id = (rec.header("ce_id") or b"").decode()
                if consumer and info.get("consumer") != consumer:
                    continue
                if event_id and ce_id != event_id:
                    continue
                headers = tuple(h for h in rec.headers if not h[0].startswith(DLQ_PREFIX))
                headers += (
                    ("kiln-replayed-from", f"{source}@{rec.partition}:{rec.offset}".encode()),
                )
                out.append(OutgoingRecord(topic, rec.value, rec.key, headers))
                replayed.append({"event_id": ce_id, **info})
            await bus.publish_many(out)
            await reader.commit(records)
    finally:
        await reader.stop()
