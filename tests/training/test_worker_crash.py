"""The real stack end to end: Celery on Redis with real `kiln worker training` processes,
PostgreSQL, MinIO and Kafka. A worker is killed with SIGKILL mid-run; the job is taken back
when its lease lapses and finishes on a new worker from its last checkpoint, with resources
accounted throughout, and `kiln.training.job.succeeded` reaches Kafka."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiln_core.events import decode_event
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings
from tests.conftest import REPO, eventually, require_service, stack_url
from tests.support.apps import running_service
from tests.training.conftest import (
    LONG_RUN,
    drop_schemas,
    known_to_training,
    make_image_version,
    make_team,
    stack_settings,
    wait_status,
)
from tests.training.test_jobs import job_body

pytestmark = pytest.mark.integration

Service = tuple[httpx.AsyncClient, ServiceRuntime]


@pytest.fixture
def redis_settings(request: pytest.FixtureRequest, unique: str) -> Settings:
    broker = stack_url("celery_broker_url")
    require_service("Redis", broker)
    # A Redis database of its own, so no other process's training worker takes these tasks.
    base = broker.rsplit("/", 1)[0]
    db = 2 + int(unique, 16) % 14
    return stack_settings(request, unique, f"{base}/{db}")


@pytest.fixture
async def stack_services(
    redis_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Service, Service]]:
    # The scheduler forgets a silent worker's capacity quickly.
    monkeypatch.setenv("KILN_TRAINING_WORKER_TTL_S", "2")
    async with AsyncExitStack() as stack:
        from kiln_dataset.service import SERVICE as DATASET
        from kiln_training.service import SERVICE as TRAINING

        dataset = await stack.enter_async_context(running_service(DATASET, redis_settings))
        training = await stack.enter_async_context(running_service(TRAINING, redis_settings))
        yield training, dataset
    await drop_schemas(redis_settings, "training", "dataset")


class Workers:
    """`kiln worker training` processes on the test's settings."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.env = {
            **os.environ,
            "KILN_DATABASE_URL": settings.database_url,
            "KILN_DB_SCHEMA_PREFIX": settings.db_schema_prefix,
            "KILN_BUS_URL": settings.bus_url,
            "KILN_STORAGE_URL": settings.storage_url,
            "KILN_CELERY_BROKER_URL": settings.celery_broker_url,
            "KILN_TRAINING_POOL": "cpu",
            "KILN_LOG_JSON": "false",
        }
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "kiln"), "worker", "training", "--concurrency", "1"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def workers(redis_settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(redis_settings, tmp_path)
    yield group
    group.stop_all()


async def capacity(client: httpx.AsyncClient) -> float:
    pool = (await client.get("/v1/queue")).json()["pools"]["cpu"]
    return float(pool["capacity"].get("cpu", 0))


async def test_a_job_survives_a_sigkilled_worker_and_its_success_reaches_kafka(
    stack_services: tuple[Service, Service], workers: Workers, tmp_path: Path
) -> None:
    training, dataset = stack_services
    client, runtime = training
    reader = runtime.bus.consumer(["kiln.training"], f"reader-{runtime.settings.db_schema_prefix}")
    await reader.start()
    seen: list[tuple[str, dict[str, Any]]] = []

    async def read() -> None:
        while True:
            for record in await reader.poll(timeout_s=0.5):
                event, data = decode_event(record.value)
                seen.append((event.type, data.model_dump(mode="json")))

    reading = asyncio.create_task(read())
    usage: list[float] = []
    sampling_done = asyncio.Event()

    async def sample_usage() -> None:
        while not sampling_done.is_set():
            pool = (await client.get("/v1/queue")).json()["pools"]["cpu"]
            usage.append(float(pool["used"].get("cpu", 0)))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample_usage())
    try:
        version = await make_image_version(dataset, "crashing")
        await known_to_training(training, version)
        await make_team(client)

        first = workers.start()
        await eventually(lambda: capacity(client), timeout_s=60)
        body = job_body(version, params=LONG_RUN, checkpoint_every_steps=5)
        job = (await client.post("/v1/jobs", json=body)).json()

        async def checkpointed() -> dict[str, Any] | None:
            row = (await client.get(f"/v1/jobs/{job['id']}")).json()
            ok = row["status"] == "running" and (row["checkpoint_step"] or 0) >= 5
            return row if ok else None

        before = await eventually(checkpointed, timeout_s=120, interval_s=0.1)
        assert before["attempts"] == 1
        first.send_signal(signal.SIGKILL)
        first.wait(10)

        async def requeued() -> bool:
            row = (await client.get(f"/v1/jobs/{job['id']}")).json()
            return row["status"] == "queued"

        await eventually(requeued, timeout_s=30, interval_s=0.1)
        pool = (await client.get("/v1/queue")).json()["pools"]["cpu"]
        assert pool["used"].get("cpu", 0) == 0  # the lost run's resources are free

        workers.start()
        done = await wait_status(client, job["id"], {"succeeded", "failed"}, timeout_s=180)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2

        async def published() -> bool:
            return any(t == "kiln.training.job.succeeded" for t, _ in seen)

        await eventually(published, timeout_s=30)
    finally:
        sampling_done.set()
        await sampler
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await reader.stop()

    # Resources: never more than the one job's cpu held, and none once it ended.
    assert usage and max(usage) <= 1.0
    pool = (await client.get("/v1/queue")).json()["pools"]["cpu"]
    assert pool["used"].get("cpu", 0) == 0 and pool["running"] == []
    starts = [d for t, d in seen if t == "kiln.training.job.started" and d["job_id"] == job["id"]]
    assert [s["attempt"] for s in starts] == [1, 2]
    assert starts[1]["resumed_from_step"] is not None
    assert starts[1]["resumed_from_step"] >= before["checkpoint_step"]
    succeeded = next(d for t, d in seen if t == "kiln.training.job.succeeded")
    assert succeeded["job_id"] == job["id"] and 0 <= succeeded["metrics"]["accuracy"] <= 1
    artifact = succeeded["artifact"]
    assert artifact["format"] == "torchscript" and artifact["size_bytes"] > 0
    assert await runtime.store.size(artifact["key"]) == artifact["size_bytes"]
    assert len([t for t, _ in seen if t == "kiln.training.job.progress"]) >= 1
