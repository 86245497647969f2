"""The scheduler wakes on committed changes instead of waiting for its poll: in-process through
session events, across processes through PostgreSQL NOTIFY. A worker's heartbeat wakes nobody."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings
from kiln_training.executor import register_worker
from kiln_training.models import Team
from kiln_training.service import SERVICE
from kiln_training.wake import Wake, channel, register, unregister
from tests.training.conftest import (
    drop_schemas,
    known_to_training,
    make_image_version,
    make_team,
    wait_status,
)
from tests.training.test_jobs import job_body

Service = tuple[httpx.AsyncClient, ServiceRuntime]


@pytest.fixture
def no_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    # An hour between polled rounds: within a test only a wake-up can start a job.
    monkeypatch.setenv("KILN_TRAINING_SCHEDULE_INTERVAL_S", "3600")


async def test_a_submit_and_a_finished_run_each_start_the_next_job_without_a_polled_round(
    no_poll: None, services: tuple[Service, Service]
) -> None:
    training, dataset = services
    client, _ = training
    version = await make_image_version(dataset, "wake")
    await known_to_training(training, version)
    await make_team(client)

    # Each job takes the whole capacity (cpu=2), so the second starts only once the first ended.
    whole = {"resources": {"cpu": 2, "memory": 1}}
    first = (await client.post("/v1/jobs", json=job_body(version, **whole))).json()
    second = (await client.post("/v1/jobs", json=job_body(version, **whole))).json()

    done = [await wait_status(client, j["id"], {"succeeded", "failed"}) for j in (first, second)]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], done
    assert done[1]["started_at"] >= done[0]["finished_at"]


@pytest.fixture
async def runtime(service_settings: Settings) -> AsyncIterator[ServiceRuntime]:
    """The training service's database with no scheduler or worker of its own running."""
    rt = ServiceRuntime(SERVICE, service_settings)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()
        await drop_schemas(service_settings, "training")


async def woken_after(wake: Wake) -> bool:
    await asyncio.sleep(0.05)  # the wake-up is handed to this loop with call_soon_threadsafe
    was = wake.event.is_set()
    wake.event.clear()
    return was


async def test_plan_changes_wake_the_scheduler_and_heartbeats_do_not(
    runtime: ServiceRuntime,
) -> None:
    wake = Wake()
    register(wake)
    try:
        await register_worker(runtime, "w1", "cpu", {"cpu": 2.0})
        assert await woken_after(wake), "a new worker's capacity is news"
        await register_worker(runtime, "w1", "cpu", {"cpu": 2.0})
        assert not await woken_after(wake), "a heartbeat alone is not"
        await register_worker(runtime, "w1", "cpu", {"cpu": 4.0})
        assert await woken_after(wake), "changed capacity is"

        async with runtime.db.transaction() as session:
            session.add(Team(name="t"))
        assert await woken_after(wake)

        # A rolled-back change wakes nobody.
        with pytest.raises(RuntimeError):
            async with runtime.db.transaction() as session:
                session.add(Team(name="u"))
                await session.flush()
                raise RuntimeError("abort")
        assert not await woken_after(wake)
    finally:
        unregister(wake)


@pytest.mark.parametrize("service_settings", ["stack"], indirect=True)
async def test_on_postgres_a_committed_change_notifies_other_processes(
    runtime: ServiceRuntime,
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    schedule = channel(runtime.db.schema)
    conn = await runtime.db.listen(schedule, lambda: heard.put_nowait(schedule))
    assert conn is not None, "LISTEN on the scheduling channel failed"
    try:
        await register_worker(runtime, "w1", "cpu", {"cpu": 2.0})
        await asyncio.wait_for(heard.get(), 10)
        await register_worker(runtime, "w1", "cpu", {"cpu": 2.0})
        async with runtime.db.transaction() as session:
            session.add(Team(name="t"))
        # Exactly one more notification: the team's, not the heartbeat's.
        await asyncio.wait_for(heard.get(), 10)
        await asyncio.sleep(0.3)
        assert heard.empty()
    finally:
        await conn.close()
