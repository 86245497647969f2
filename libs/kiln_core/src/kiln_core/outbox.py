"""Transactional outbox: an event row is written in the same transaction as the state change,
and a relay publishes pending rows to the bus and marks them published.

Several relays may run at once: each claims rows with ``FOR UPDATE SKIP LOCKED``. A commit that
staged events wakes the relays of that outbox running in this process (whichever runtime or
thread committed); on PostgreSQL the writing transaction also NOTIFYs relays elsewhere at
commit; on SQLite relays poll for rows other processes committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Text, event, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.orm import Session
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.bus import Bus, OutgoingRecord
from kiln_core.db import Database, utcnow
from kiln_core.events import CloudEvent
from kiln_core.metrics import EVENTS_PUBLISHED
from kiln_core.outage import Outage
from kiln_core.telemetry import inject_headers

log = logging.getLogger(__name__)


class OutboxEvent(SQLModel, table=True):
    __tablename__ = "outbox"

    position: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    event_id: str = Field(sa_column=Column(String(64), unique=True, nullable=False))
    event_type: str = Field(sa_column=Column(String(200), nullable=False))
    topic: str = Field(sa_column=Column(String(200), nullable=False))
    key: str | None = Field(default=None, sa_column=Column(String(300)))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    headers: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    published_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    publish_count: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))


def create_outbox_table(op: Any) -> None:
    """Migration step every service's first revision runs."""
    import sqlalchemy as sa

    op.create_table(
        "outbox",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(300)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("publish_count", sa.Integer, nullable=False, server_default="0"),
    )
    # The relay only ever scans unpublished rows; keep that scan small.
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["position"],
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Every insert wakes the relays of this schema at commit; writers cannot forget it.
        op.execute(
            """
            CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger AS $$
            BEGIN
                PERFORM pg_notify('kiln_outbox_' || TG_TABLE_SCHEMA, '');
                RETURN NULL;
            END $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
            "FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
        )


OUTBOX = OutboxEvent.__table__  # type: ignore[attr-defined]


async def add_event(session: AsyncSession, event: CloudEvent) -> None:
    """Stage ``event`` for publication in the caller's transaction.

    When the transaction commits, the relays of this outbox running in this process are woken;
    on PostgreSQL a statement trigger also NOTIFYs the relays of other processes.
    """
    session.sync_session.info[_STAGED] = True
    headers = [(k, v.decode()) for k, v in inject_headers()]
    headers += [("ce_id", event.id), ("ce_type", event.type)]
    # A Core insert, not an ORM add: this is on every write path, so keep it cheap.
    await session.execute(
        insert(OUTBOX).values(
            event_id=event.id,
            event_type=event.type,
            topic=event.topic,
            key=event.key,
            payload=event.model_dump_json(exclude_none=True),
            headers=json.dumps(headers),
            created_at=utcnow(),
            publish_count=0,
        )
    )


def _to_record(row: Any) -> OutgoingRecord:
    headers = tuple((k, v.encode()) for k, v in json.loads(row.headers))
    return OutgoingRecord(
        topic=row.topic,
        value=row.payload.encode(),
        key=row.key.encode() if row.key is not None else None,
        headers=headers,
    )


# The relays running in this process, by the outbox they relay (database URL and schema): a
# commit made through any runtime of the service (a Celery task's, a training run's) wakes them.
_RUNNING: dict[tuple[str, str], set[OutboxRelay]] = {}
_STAGED = "kiln_outbox_staged"  # session.info mark: this transaction staged events


def _outbox_of(db: Database) -> tuple[str, str]:
    return (db.url, db.schema)


def _wake_relays(outbox: tuple[str, str]) -> None:
    for relay in list(_RUNNING.get(outbox, ())):
        relay._wake_soon()


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_STAGED, False):
        db = session.info.get("kiln_db")
        if db is not None:
            _wake_relays(_outbox_of(db))


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_STAGED, None)  # nothing of it was committed


class OutboxRelay:
    """Publishes pending outbox rows of one service's database, in commit order."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        *,
        service: str,
        batch_size: int = 500,
        poll_interval_s: float = 0.02,
        fallback_interval_s: float = 1.0,
        retention: timedelta = timedelta(days=7),
        in_process_writers: bool = False,
    ) -> None:
        """``poll_interval_s`` is how often a relay without PostgreSQL's NOTIFY looks for
        rows other processes committed. With ``in_process_writers`` (an in-memory bus: no
        other process can share this outbox) every commit that stages an event wakes the relay
        (see ``add_event``), so it looks only every ``fallback_interval_s``, as a relay that
        listens does."""
        self.db = db
        self.bus = bus
        self.service = service
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.fallback_interval_s = fallback_interval_s
        self.in_process_writers = in_process_writers
        self.retention = retention
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Fault-injection point for tests: runs after publishing, before rows are marked.
        self.after_publish: Callable[[Sequence[Any]], Awaitable[None]] | None = None

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows it published."""
        c = OUTBOX.c
        query = (
            sa_select(c.position, c.topic, c.key, c.payload, c.headers)
            .where(c.published_at.is_(None))
            .order_by(c.position)
            .limit(self.batch_size)
        )
        if self.db.is_postgres:
            # Concurrent relays take disjoint rows instead of waiting on each other.
            query = query.with_for_update(skip_locked=True)
        async with self.db.begin() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                return 0
            await self.bus.publish_many([_to_record(r) for r in rows])
            if self.after_publish is not None:
                await self.after_publish(rows)
            await conn.execute(
                update(OUTBOX)
                .where(c.position.in_([r.position for r in rows]))
                .values(published_at=utcnow(), publish_count=c.publish_count + 1)
            )
        for row in rows:
            EVENTS_PUBLISHED.labels(row.topic).inc()
        return len(rows)

    async def drain(self) -> int:
        total = 0
        while True:
            n = await self.publish_pending()
            total += n
            if n < self.batch_size:
                return total

    async def prune(self) -> int:
        """Delete rows published longer ago than the retention period."""
        from sqlalchemy import delete

        cutoff = utcnow() - self.retention
        async with self.db.begin() as conn:
            result = await conn.execute(delete(OUTBOX).where(OUTBOX.c.published_at < cutoff))
            return int(result.rowcount or 0)

    async def run(self, stop: asyncio.Event) -> None:
        listener = await self._listen() if self.db.is_postgres else None
        woken = listener is not None or self.in_process_writers
        interval = self.fallback_interval_s if woken else self.poll_interval_s
        last_prune = 0.0
        loop = self._loop = asyncio.get_running_loop()
        running = _RUNNING.setdefault(_outbox_of(self.db), set())
        running.add(self)
        outage = Outage(log, "outbox relay", traceback_first=True, service=self.service)
        try:
            while not stop.is_set():
                # Clear before draining: a wake-up that arrives mid-drain must not be lost.
                self._wake.clear()
                try:
                    await self.drain()
                except Exception as exc:  # noqa: BLE001 - keep relaying; rows stay pending
                    outage.failed(exc)
                    await asyncio.sleep(min(5.0, interval * 10 + 0.5))
                else:
                    outage.recovered()
                if loop.time() - last_prune > 600:
                    last_prune = loop.time()
                    try:
                        await self.prune()
                    except Exception:  # noqa: BLE001
                        log.warning("outbox prune failed", exc_info=True)
                stop_wait = asyncio.ensure_future(stop.wait())
                wake_wait = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    [stop_wait, wake_wait], timeout=interval, return_when=asyncio.FIRST_COMPLETED
                )
                stop_wait.cancel()
                wake_wait.cancel()
        finally:
            running.discard(self)
            self._loop = None
            if listener is not None:
                await listener.close()

    def _wake_soon(self) -> None:
        """Drain soon; callable from any thread (training runs commit on their own)."""
        loop = self._loop
        if loop is None:
            return
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    async def _listen(self) -> asyncpg.Connection | None:
        return await self.db.listen(self.db.notify_channel(), self._wake.set)
