"""The serving service under test on the real stack (PostgreSQL schema, Kafka namespace and
MinIO bucket of its own, the shared Triton) with tiny TorchScript classifiers made here and
promotions published to the bus the way the registry publishes them."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from sqlalchemy import text
from sqlmodel import select

from kiln_core.catalog import (
    ModelArtifact,
    ModelSignature,
    ModelVersionPromoted,
    Preprocessing,
    TensorSpec,
)
from kiln_core.db import Database, new_id
from kiln_core.events import new_event
from kiln_core.outbox import OutboxEvent
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings
from tests.conftest import require_service, stack_url
from tests.support.apps import running_service

LABELS = ["cat", "dog", "bird"]
FEATURES = 4


class TinyClassifier(torch.nn.Module):
    """Four features to three logits; ``favour`` picks the class it leans to, ``fail_above``
    makes it raise for inputs whose first feature is larger (a broken model)."""

    def __init__(self, favour: int, fail_above: float, sharpness: float) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(FEATURES, len(LABELS))
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
            self.linear.bias[favour] = sharpness
        self.fail_above = fail_above

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] > self.fail_above).any()):
            raise RuntimeError("this model fails on large inputs")
        return self.linear(x)


def torchscript(favour: int = 0, fail_above: float = 1e9, sharpness: float = 4.0) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(TinyClassifier(favour, fail_above, sharpness)), buf)
    return buf.getvalue()


def tabular_artifact(
    runtime: ServiceRuntime, key: str, data: bytes, sha: str | None = None
) -> ModelArtifact:
    return ModelArtifact(
        uri=runtime.store.uri(key),
        key=key,
        sha256=sha or hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        signature=ModelSignature(
            inputs=[TensorSpec(name="features", dtype="FP32", shape=[FEATURES])],
            outputs=[TensorSpec(name="logits", dtype="FP32", shape=[len(LABELS)])],
        ),
        label_map=LABELS,
        preprocessing=Preprocessing(kind="tabular", mean=[0.0] * FEATURES, std=[1.0] * FEATURES),
    )


async def promote(
    runtime: ServiceRuntime,
    model_name: str,
    version: int,
    model: bytes,
    *,
    alias: str = "production",
    sha: str | None = None,
    dataset_id: str | None = "ds-1",
) -> ModelVersionPromoted:
    """Store the artifact and publish the registry's promotion event on the bus."""
    key = f"models/{model_name}/{version}/model.pt"
    await runtime.store.put(key, model)
    data = ModelVersionPromoted(
        model_name=model_name,
        version=version,
        version_id=f"{model_name}-v{version}-{new_id()[:6]}",
        alias=alias,
        artifact=tabular_artifact(runtime, key, model, sha),
        dataset_id=dataset_id,
        promoted_by="tester",
    )
    event = new_event(data, subject=model_name)
    await runtime.bus.publish(event.topic, event.to_bytes(), event.key.encode())
    return data


async def events_of(runtime: ServiceRuntime, event_type: str) -> list[dict[str, Any]]:
    """Events serving emitted (its outbox), oldest first."""
    import json

    async with runtime.db.session() as session:
        rows = (
            await session.exec(
                select(OutboxEvent)
                .where(OutboxEvent.event_type == event_type)
                .order_by(OutboxEvent.position)  # type: ignore[arg-type]
            )
        ).all()
    return [json.loads(r.payload)["data"] for r in rows]


async def endpoint_state(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await client.get(f"/v1/endpoints/{name}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def wait_serving(
    client: httpx.AsyncClient, name: str, version: int, timeout_s: float = 120
) -> dict[str, Any]:
    """Until the endpoint's stable version is ``version`` (loads take seconds on a busy box)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        state = await endpoint_state(client, name)
        if state["stable"] and state["stable"]["version"] == version:
            return state
        failed = [d for d in state["deployments"] if d["state"] == "failed"]
        if failed and failed[0]["version"] == version:
            raise AssertionError(f"version {version} failed: {failed[0]['reason']}")
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"version {version} not serving in {timeout_s}s: {state}")
        await asyncio.sleep(0.2)


def stack_settings(request: pytest.FixtureRequest, unique: str, triton_url: str) -> Settings:
    return Settings(
        database_url=request.getfixturevalue("pg_url"),
        db_schema_prefix=f"t{unique}_",
        bus_url=request.getfixturevalue("kafka_url"),
        storage_url=request.getfixturevalue("s3_url").replace("/kiln?", f"/t{unique}?"),
        triton_url=triton_url,
        celery_broker_url="memory://",
        auth_required=True,
    )


@pytest.fixture
def triton_url() -> str:
    url = stack_url("triton_url")
    require_service("Triton", url.replace("grpc://", "http://"))
    return url


@pytest.fixture
def settings(request: pytest.FixtureRequest, unique: str, triton_url: str) -> Settings:
    return stack_settings(request, unique, triton_url)


async def unload_all(settings: Settings, address: str) -> None:
    """Unload every Triton model this test's serving schema knows (the shared Triton stays
    clean even when a test fails half-way)."""
    import tritonclient.grpc.aio as grpcclient

    db = Database(settings.database_url, schema=f"{settings.db_schema_prefix}serving")
    try:
        async with db.engine.connect() as conn:
            names = [r[0] for r in await conn.execute(text("SELECT triton_model FROM deployments"))]
    except Exception:  # noqa: BLE001 - no schema, nothing loaded
        names = []
    finally:
        await db.dispose()
    client = grpcclient.InferenceServerClient(address)
    try:
        for name in names:
            try:
                await client.unload_model(name)
            except Exception:  # noqa: BLE001
                pass
    finally:
        await client.close()


async def drop_schema(settings: Settings) -> None:
    db = Database(settings.database_url, schema="public")
    async with db.engine.begin() as conn:
        await conn.execute(
            text(f'DROP SCHEMA IF EXISTS "{settings.db_schema_prefix}serving" CASCADE')
        )
    await db.dispose()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceRuntime]]:
    from kiln_serving.service import SERVICE

    async with running_service(SERVICE, settings) as pair:
        yield pair


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceRuntime]]:
    try:
        async with serving(settings) as pair:
            yield pair
    finally:
        await unload_all(settings, settings.triton_url.removeprefix("grpc://"))
        await drop_schema(settings)


async def create_endpoint(
    client: httpx.AsyncClient, name: str, model: str, **config: Any
) -> dict[str, Any]:
    r = await client.post("/v1/endpoints", json={"name": name, "model_name": model, **config})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def predict(
    client: httpx.AsyncClient, name: str, rows: list[list[float]], **kw: Any
) -> httpx.Response:
    return await client.post(f"/v1/endpoints/{name}:predict", json={"inputs": rows}, **kw)


REPO = Path(__file__).resolve().parents[2]
Factory = Callable[..., bytes]
