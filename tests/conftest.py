"""Shared fixtures. Integration fixtures talk to the real local infrastructure
(``kiln infra up``); when it is missing they fail under CI and skip elsewhere."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from kiln_core.telemetry import setup_tracing

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

setup_tracing("tests", "memory")

LOCAL_STACK = {
    "database_url": "postgresql+asyncpg://kiln:kiln@127.0.0.1:55432/kiln",
    "bus_url": "kafka://127.0.0.1:59092",
    "storage_url": "s3://kiln:kilnkilnkiln@127.0.0.1:59000/kiln?secure=false",
    "celery_broker_url": "redis://127.0.0.1:56379/0",
    "triton_url": "grpc://127.0.0.1:58001",
}


def stack_url(name: str) -> str:
    return os.environ.get(f"KILN_TEST_{name.upper()}") or LOCAL_STACK[name]


def require_service(name: str, url: str) -> None:
    """Fail (CI) or skip (a developer without ``kiln infra up``) when a service is down."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc}); run `kiln infra up`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def pg_url() -> str:
    url = stack_url("database_url")
    require_service("PostgreSQL", url)
    return url


@pytest.fixture
def kafka_url(unique: str, request: pytest.FixtureRequest) -> str:
    url = stack_url("bus_url")
    require_service("Kafka", url)
    request.addfinalizer(lambda: drop_namespace(url, f"t{unique}"))
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}namespace=t{unique}"


def drop_namespace(url: str, namespace: str) -> None:
    # Finalizers may run inside the session's event loop: clean up from a thread of its own.
    cleaner = threading.Thread(target=lambda: asyncio.run(delete_namespace_topics(url, namespace)))
    cleaner.start()
    cleaner.join(30)


async def delete_namespace_topics(url: str, namespace: str) -> None:
    """Drop a test's topics so a long-lived broker does not collect thousands of partitions."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=urlsplit(url).netloc)
    try:
        await admin.start()
        topics = [t for t in await admin.list_topics() if t.startswith(f"{namespace}.")]
        if topics:
            await admin.delete_topics(topics)
    except Exception:  # noqa: BLE001 - hygiene only; never fail a test over it
        pass
    finally:
        await admin.close()


@pytest.fixture
def s3_url() -> str:
    url = stack_url("storage_url")
    require_service("MinIO", url)
    return url


@pytest.fixture
def embedded_url(unique: str) -> str:
    return f"embedded://t{unique}"


@pytest.fixture
async def pg_db(pg_url: str, unique: str) -> AsyncIterator[object]:
    """A fresh schema with the kernel tables plus an ``effects`` table, dropped afterwards."""
    from sqlalchemy import text

    from kiln_core.db import Database

    db = Database(pg_url, schema=f"t_{unique}")
    await db.migrate(REPO / "tests" / "support" / "migrations")
    yield db
    async with db.engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "t_{unique}" CASCADE'))
    await db.dispose()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[object]:
    from kiln_core.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/test.db", schema="test")
    await db.migrate(REPO / "tests" / "support" / "migrations")
    yield db
    await db.dispose()


async def eventually(check, timeout_s: float = 20.0, interval_s: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``check`` (sync or async) until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s (last: {result!r})")
        await asyncio.sleep(interval_s)
