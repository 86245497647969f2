"""Restarts recover without manual steps: Triton killed and started again under a running
serving service, serving restarted over a Triton that lost its models, and the embedded
(``managed://``) Triton that serving owns."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from kiln_core.settings import Settings
from kiln_serving.triton import ManagedTriton
from tests.conftest import eventually
from tests.serving.conftest import (
    create_endpoint,
    drop_schema,
    predict,
    promote,
    serving,
    stack_settings,
    torchscript,
    unload_all,
    wait_serving,
)

ROW = [[0.2, 0.1, 0.4, 0.3]]


async def _answers(client: httpx.AsyncClient, name: str, version: int) -> bool:
    r = await predict(client, name, ROW)
    return r.status_code == 200 and r.json()["version"] == version


@pytest.mark.integration
async def test_killing_triton_or_restarting_serving_recovers_the_endpoint(
    request: pytest.FixtureRequest, unique: str
) -> None:
    triton = ManagedTriton()  # a private Triton: killing the shared one would hurt others
    triton.start()
    settings: Settings = stack_settings(request, unique, f"grpc://{triton.url}")
    name, model = f"ep-{unique}", f"m-{unique}"
    try:
        await triton.wait_ready()
        async with serving(settings) as (client, runtime):
            await create_endpoint(client, name, model)
            await promote(runtime, model, 1, torchscript(favour=2))
            await wait_serving(client, name, 1)
            assert await _answers(client, name, 1)

            triton.kill()
            down = await predict(client, name, ROW)
            assert down.status_code == 503
            assert down.headers["content-type"].startswith("application/problem+json")
            triton = ManagedTriton(triton.grpc_port, triton.http_port)
            triton.start()
            await triton.wait_ready()
            # Serving notices Triton is back and reloads the version from its artifact.
            await eventually(lambda: _answers(client, name, 1), timeout_s=120, interval_s=0.5)

        # Serving stopped; Triton restarts empty meanwhile; serving starts again.
        triton.kill()
        triton = ManagedTriton(triton.grpc_port, triton.http_port)
        triton.start()
        await triton.wait_ready()
        async with serving(settings) as (client, _):
            await eventually(lambda: _answers(client, name, 1), timeout_s=120, interval_s=0.5)
            r = await predict(client, name, ROW)
            assert r.json()["predictions"][0]["label"] == "bird"

        # And a plain serving restart with Triton untouched serves at once from the table.
        async with serving(settings) as (client, _):
            await eventually(lambda: _answers(client, name, 1), timeout_s=30, interval_s=0.2)
    finally:
        await unload_all(settings, triton.url)
        triton.stop()
        await drop_schema(settings)


async def test_managed_triton_serves_and_a_restart_reloads_from_the_database(
    tmp_path: Path, unique: str
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
        bus_url=f"embedded://s{unique}",
        storage_url=f"file://{tmp_path}/store",
        triton_url="managed://",
        celery_broker_url="memory://",
        auth_required=True,
    )
    name, model = f"ep-{unique}", f"m-{unique}"
    async with serving(settings) as (client, runtime):
        await create_endpoint(client, name, model)
        await promote(runtime, model, 1, torchscript(favour=1))
        await wait_serving(client, name, 1)
        r = await predict(client, name, ROW)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "dog"
        managed = client._transport.app.state.controller.triton.managed  # type: ignore[attr-defined]
        assert managed is not None and managed.alive()
    assert not managed.alive()  # serving stops the Triton it started

    # A new process gets a new, empty Triton: start-up reconciliation reloads the version.
    async with serving(settings) as (client, _):
        await eventually(lambda: _answers(client, name, 1), timeout_s=120, interval_s=0.5)
    await asyncio.sleep(0)
