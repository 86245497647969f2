"""Async database access: one engine per service, PostgreSQL schema or SQLite file per service.

PostgreSQL (asyncpg) puts each service in its own schema via ``search_path``; SQLite (aiosqlite)
gives each service its own file. Alembic keeps one migration history per service.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import DateTime, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlalchemy.types import TypeDecorator
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.errors import InvalidValue

log = logging.getLogger(__name__)

# The largest integer either database stores (SQLite INTEGER, PostgreSQL BIGINT).
INT64_MAX = 2**63 - 1
# The maximum request parameters declare (offsets, version numbers): the largest integer a
# JSON client reads exactly (JavaScript's Number.MAX_SAFE_INTEGER), well inside INT64_MAX.
MAX_PARAM_INT = 2**53 - 1
# The largest number an INTEGER column holds on PostgreSQL (version numbers are stored so).
INT32_MAX = 2**31 - 1


def utcnow() -> datetime:
    """Every stored time is UTC and timezone-aware."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp column that always reads back as an aware UTC datetime.

    PostgreSQL's ``timestamptz`` keeps the offset; SQLite stores text without one and hands
    back naive values, which would reach clients as times with no offset."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None and value.tzinfo else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return aware(value).astimezone(UTC) if value is not None else None


def new_id() -> str:
    """A new opaque row id (32 hex characters)."""
    return uuid.uuid4().hex


class Database:
    """The engine and session factory of one service's store."""

    def __init__(self, url: str, schema: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.schema = schema
        sa_url = make_url(url)
        self.is_postgres = sa_url.get_backend_name() == "postgresql"
        self.is_sqlite = sa_url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_postgres:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            # No pre-ping round trip per checkout: a dead connection surfaces as a transient
            # error, which the inbox redelivers and the relay retries.
            kwargs["pool_recycle"] = 1800
        elif self.is_sqlite:
            db_path = sa_url.database
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            raise ValueError(f"unsupported database URL {sa_url.render_as_string()}")
        # Looked up at call time: the SQLAlchemy instrumentation (kiln_core.telemetry) wraps it.
        self.engine: AsyncEngine = sa_asyncio.create_async_engine(url, **kwargs)
        self._lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "handle_error", _sqlite_value_refused)
        # Copied into every session of this database (the runtime registers itself here).
        self.session_info: dict[str, Any] = {"kiln_db": self}
        self.sessionmaker = async_sessionmaker(
            self.engine,
            class_=AsyncSession,
            expire_on_commit=False,
            info=self.session_info,
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work commits on exit, or rolls back if the block raises."""
        async with self._write_lock(), self.sessionmaker() as session, session.begin():
            yield session

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in a transaction (for set-based work such as the outbox relay)."""
        async with self._write_lock(), self.engine.begin() as conn:
            yield conn

    def _write_lock(self) -> asyncio.Lock | contextlib.nullcontext[None]:
        # SQLite has one writer at a time and its busy handler sleeps; queueing writers of this
        # process on a lock is far faster. PostgreSQL needs nothing of the sort.
        if self._lock is None:
            return contextlib.nullcontext()
        return self._lock

    async def check(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def migrate(self, script_location: Path) -> None:
        """Bring this service's schema to the newest revision (safe with concurrent starters)."""
        await asyncio.to_thread(_upgrade_in_thread, self.url, self.schema, script_location)

    def notify_channel(self) -> str:
        return f"kiln_outbox_{self.schema}"

    async def listen(
        self, channel: str, on_notify: Callable[[], None]
    ) -> asyncpg.Connection | None:
        """A dedicated PostgreSQL connection calling ``on_notify`` for each ``NOTIFY`` on
        ``channel``; the caller closes it. None if it cannot connect: callers poll instead."""
        url = make_url(self.url)
        try:
            conn = await asyncpg.connect(
                host=url.host,
                port=url.port or 5432,
                user=url.username,
                password=url.password,
                database=url.database,
            )
            await conn.add_listener(channel, lambda *_: on_notify())
            return conn
        except Exception:  # noqa: BLE001 - polling still works, only later
            log.warning("LISTEN failed; falling back to polling", extra={"channel": channel})
            return None


def _sqlite_value_refused(context: Any) -> None:
    # sqlite3 raises a bare OverflowError for an integer past 64 bits (PostgreSQL answers
    # SQLSTATE 22003, handled by the HTTP layer): the caller's value, not a server fault.
    if isinstance(context.original_exception, OverflowError):
        raise InvalidValue(
            f"a number is out of range: integers are at most {INT64_MAX}"
        ) from context.original_exception


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the relay read while the API writes; busy_timeout rides out short write locks.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# Alembic keeps the running migration in a module-level context: two services of one process
# migrating at once (in their threads) would run each other's scripts. One at a time.
_ALEMBIC = threading.Lock()


def _upgrade_in_thread(url: str, schema: str, script_location: Path) -> None:
    with _ALEMBIC:
        _upgrade(url, schema, script_location)


def _upgrade(url: str, schema: str, script_location: Path) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["kiln_url"] = url
    cfg.attributes["kiln_schema"] = schema
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite" and sa_url.database not in (None, "", ":memory:"):
        lock_path = Path(f"{sa_url.database}.migrate.lock")
        with lock_path.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            command.upgrade(cfg, "head")
    else:
        command.upgrade(cfg, "head")


def run_migrations_from_env() -> None:
    """Body of every service's Alembic ``env.py``: migrate the schema named in the config."""
    from alembic import context

    cfg = context.config
    url: str = cfg.attributes["kiln_url"]
    schema: str = cfg.attributes["kiln_schema"]
    asyncio.run(_run_async_migrations(context, url, schema))


async def _run_async_migrations(context: Any, url: str, schema: str) -> None:
    db = Database(url, schema, pool_size=1)
    try:
        async with db.engine.connect() as conn:
            if db.is_postgres:
                # Two processes of one service may start together: serialise their migrations.
                lock_id = int.from_bytes(hashlib.sha256(schema.encode()).digest()[:7], "big")
                await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                await conn.commit()
            try:
                await conn.run_sync(_configure_and_run, context, schema if db.is_postgres else None)
                await conn.commit()
            finally:
                if db.is_postgres:
                    await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                    await conn.commit()
    finally:
        await db.dispose()


def _configure_and_run(sync_conn: Any, context: Any, schema: str | None) -> None:
    context.configure(
        connection=sync_conn,
        target_metadata=None,
        version_table_schema=schema,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
