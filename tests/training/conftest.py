"""The training service under test, on the embedded defaults and on the real stack, beside the
dataset service (same bus and object store) so dataset versions reach it as events."""

from __future__ import annotations

import io
import json
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import text

from kiln_core.db import Database
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings
from tests.conftest import eventually
from tests.support.apps import running_service

Service = tuple[httpx.AsyncClient, ServiceRuntime]


@pytest.fixture(autouse=True)
def fast_training_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests want quick heartbeats and a worker loss noticed within seconds.
    monkeypatch.setenv("KILN_TRAINING_HEARTBEAT_S", "0.3")
    monkeypatch.setenv("KILN_TRAINING_LEASE_S", "5")
    monkeypatch.setenv("KILN_TRAINING_SCHEDULE_INTERVAL_S", "0.2")
    monkeypatch.setenv("KILN_TRAINING_STEP_SAMPLE_S", "0.05")
    monkeypatch.setenv("KILN_TRAINING_CAPACITY", "cpu=2,memory=8")


def stack_settings(request: pytest.FixtureRequest, unique: str, broker: str) -> Settings:
    return Settings(
        database_url=request.getfixturevalue("pg_url"),
        db_schema_prefix=f"t{unique}_",
        bus_url=request.getfixturevalue("kafka_url"),
        storage_url=request.getfixturevalue("s3_url").replace("/kiln?", f"/t{unique}?"),
        celery_broker_url=broker,
        auth_required=True,
    )


@pytest.fixture(params=["embedded", pytest.param("stack", marks=pytest.mark.integration)])
def service_settings(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Settings:
    if request.param == "embedded":
        return Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
            bus_url=f"embedded://t{unique}",
            storage_url=f"file://{tmp_path}/store",
            celery_broker_url="memory://",
            auth_required=True,
        )
    return stack_settings(request, unique, "memory://")


async def drop_schemas(settings: Settings, *services: str) -> None:
    if not settings.db_schema_prefix:
        return
    db = Database(settings.database_url, schema="public")
    async with db.engine.begin() as conn:
        for name in services:
            await conn.execute(
                text(f'DROP SCHEMA IF EXISTS "{settings.db_schema_prefix}{name}" CASCADE')
            )
    await db.dispose()


@pytest.fixture
async def services(service_settings: Settings) -> AsyncIterator[tuple[Service, Service]]:
    """(training, dataset), each an httpx client and its runtime."""
    async with AsyncExitStack() as stack:
        from kiln_dataset.service import SERVICE as DATASET
        from kiln_training.service import SERVICE as TRAINING

        dataset = await stack.enter_async_context(running_service(DATASET, service_settings))
        training = await stack.enter_async_context(running_service(TRAINING, service_settings))
        yield training, dataset
    await drop_schemas(service_settings, "training", "dataset")


def image(color: tuple[int, int, int], size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def noisy_image(base: tuple[int, int, int], rng: random.Random, size: int = 16) -> bytes:
    """A solid colour with per-pixel noise, so items differ (distinct blobs) yet stay easy."""
    img = Image.new("RGB", (size, size))
    img.putdata(
        [
            tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in base)  # type: ignore[misc]
            for _ in range(size * size)
        ]
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


CLASSES = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
# A run long enough that a pause or a kill lands mid-run: 1,100 steps, about 4 s on one CPU
# thread. A run reports its step and reads requests once per heartbeat (0.3 s in these tests),
# so a run of half a second (12 epochs) could end before a request reached it.
LONG_RUN = {"epochs": 100, "batch_size": 2, "image_size": 16, "width": 8, "lr": 0.01}


async def make_image_version(dataset: Service, name: str, per_class: int = 12) -> dict[str, Any]:
    """A tiny labelled image dataset through the dataset API, split train/val/test; returns
    the split version (which the training service learns of through its event)."""
    client, _ = dataset
    r = await client.post("/v1/datasets", json={"name": name, "task_type": "classification"})
    assert r.status_code == 201, r.text
    ds = r.json()["id"]
    rng = random.Random(7)
    files: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    for label, color in CLASSES.items():
        for i in range(per_class):
            file_name = f"{label}-{i}.png"
            files[file_name] = noisy_image(color, rng)
            labels[file_name] = label
    draft = (await client.post(f"/v1/datasets/{ds}/drafts", json={})).json()
    r = await client.post(
        f"/v1/datasets/{ds}/drafts/{draft['id']}/items",
        files=[("files", (n, data, "image/png")) for n, data in files.items()],
        data={"labels": json.dumps(labels)},
    )
    assert r.status_code == 200, r.text
    r = await client.post(f"/v1/datasets/{ds}/drafts/{draft['id']}/commit", json={"message": "m"})
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/v1/datasets/{ds}/versions/1/splits", json={"ratios": [0.6, 0.4, 0.0], "seed": 1}
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def known_to_training(training: Service, version: dict[str, Any]) -> None:
    """Wait until the training service has consumed the version's created event."""
    from kiln_training.models import KnownVersion

    _, runtime = training

    async def seen() -> bool:
        async with runtime.db.session() as session:
            return await session.get(KnownVersion, version["version_id"]) is not None

    await eventually(seen, timeout_s=30)


async def make_team(client: httpx.AsyncClient, name: str = "vision", **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/teams", json={"name": name, **body})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def wait_status(
    client: httpx.AsyncClient, job_id: str, statuses: set[str], timeout_s: float = 120
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        return job if job["status"] in statuses else None

    return await eventually(check, timeout_s=timeout_s, interval_s=0.1)  # type: ignore[no-any-return]
