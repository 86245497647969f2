"""The outbox relay wakes on commit: with an in-memory bus it need not poll the database."""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiln_core.bus import open_bus
from kiln_core.catalog import PING_EVENTS
from kiln_core.service import ServiceRuntime, ServiceSpec
from kiln_core.settings import Settings
from tests.conftest import REPO, eventually

PING = PING_EVENTS["dataset"]
# Far longer than any wait below: a relay that only polled would publish nothing in time.
SLOW_POLL_S = 60.0


def _runtime(tmp_path: Path, unique: str) -> ServiceRuntime:
    spec = ServiceSpec(
        name="relaywake", description="relay wake-up test", migrations=REPO / "tests" / "support"
    )
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
        bus_url=f"embedded://t{unique}",
        relay_poll_interval_s=SLOW_POLL_S,
        relay_fallback_interval_s=SLOW_POLL_S,
    )
    return ServiceRuntime(spec, settings)


def _published(runtime: ServiceRuntime) -> list[bytes]:
    log = runtime.bus.broker.log("kiln.dataset")  # type: ignore[attr-defined]
    return [r.header("ce_id") for part in log for r in part]


def _ping() -> PING:  # type: ignore[valid-type]
    return PING(ping_id=uuid.uuid4().hex, origin="dataset", sent_at=datetime.now(UTC))


@pytest.fixture
async def running(tmp_path: Path, unique: str):  # type: ignore[no-untyped-def]
    runtime = _runtime(tmp_path, unique)
    await runtime.db.migrate(REPO / "tests" / "support" / "migrations")
    assert runtime.relay.in_process_writers  # an embedded bus has no other publishers
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.relay.run(stop))
    await eventually(lambda: runtime.relay._loop is not None)
    await asyncio.sleep(0.1)  # past its first drain, into the long wait
    yield runtime
    stop.set()
    await task
    await runtime.db.dispose()


async def test_a_committed_event_is_published_without_waiting_for_a_poll(running) -> None:  # type: ignore[no-untyped-def]
    async with running.db.transaction() as session:
        event = await running.emit(session, _ping(), "s")
    await eventually(lambda: _published(running) == [event.id.encode()], timeout_s=5)


async def test_a_rolled_back_event_wakes_nothing_and_is_never_published(running) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError):
        async with running.db.transaction() as session:
            await running.emit(session, _ping(), "s")
            raise RuntimeError("the state change failed")
    async with running.db.transaction() as session:
        kept = await running.emit(session, _ping(), "s")
    await eventually(lambda: _published(running) == [kept.id.encode()], timeout_s=5)


async def test_a_commit_on_another_threads_loop_wakes_the_relay(running) -> None:  # type: ignore[no-untyped-def]
    """Training runs write from an event loop of their own, on their own thread."""
    ids: list[bytes] = []

    async def commit_elsewhere() -> None:
        async with running.db.transaction() as session:
            ids.append((await running.emit(session, _ping(), "s")).id.encode())

    thread = threading.Thread(target=lambda: asyncio.run(commit_elsewhere()))
    thread.start()
    await asyncio.to_thread(thread.join)
    assert len(ids) == 1
    await eventually(lambda: _published(running) == ids, timeout_s=5)


async def test_a_commit_through_another_runtime_of_the_service_wakes_its_relay(  # type: ignore[no-untyped-def]
    running, tmp_path: Path, unique: str
) -> None:
    """Celery tasks and training runs write through runtimes of their own, whose relays do not
    run: the service's running relay in this process is woken instead."""
    other = _runtime(tmp_path, unique)  # the same database and bus as ``running``
    try:
        async with other.db.transaction() as session:
            event = await other.emit(session, _ping(), "s")
        await eventually(lambda: _published(running) == [event.id.encode()], timeout_s=5)
    finally:
        await other.db.dispose()


def test_a_bus_other_processes_share_keeps_polling() -> None:
    from kiln_core.bus.kafka import KafkaBus

    assert open_bus("embedded://x").in_process
    assert not KafkaBus.in_process
