"""The registry service under test, on the embedded defaults and on the real stack
(PostgreSQL in a throw-away schema, MinIO, Kafka in a throw-away namespace), plus tiny
TorchScript models and a stand-in for the training service's events."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from sqlalchemy import text
from torch import nn

from kiln_core.auth import issue_token
from kiln_core.bus import Record
from kiln_core.catalog import (
    ModelArtifact,
    ModelSignature,
    Preprocessing,
    TensorSpec,
    TrainingJobSucceeded,
)
from kiln_core.db import Database
from kiln_core.events import CloudEvent, decode_event, new_event
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings
from tests.conftest import eventually
from tests.support.apps import running_service

Service = tuple[httpx.AsyncClient, ServiceRuntime]

FEATURES = 64
LABELS = ["cat", "dog", "bird"]
SIGNATURE = ModelSignature(
    inputs=[TensorSpec(name="features", dtype="FP32", shape=[FEATURES])],
    outputs=[TensorSpec(name="logits", dtype="FP32", shape=[len(LABELS)])],
)
PREPROCESSING = Preprocessing(kind="tabular", mean=[0.0], std=[1.0])


class TinyClassifier(nn.Module):
    def __init__(self, hidden: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, hidden)
        self.fc2 = nn.Linear(hidden, len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def torchscript_bytes(seed: int = 0, module: nn.Module | None = None) -> bytes:
    """A small scripted classifier, saved as torch.jit.save writes it."""
    torch.manual_seed(seed)
    scripted = torch.jit.script((module or TinyClassifier()).eval())
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def import_metadata(**overrides: Any) -> str:
    meta: dict[str, Any] = {
        "signature": SIGNATURE.model_dump(),
        "label_map": LABELS,
        "preprocessing": PREPROCESSING.model_dump(exclude_none=True),
        "metrics": {"accuracy": 0.9},
        "evaluation_split": "val",
        "tags": ["imported"],
    }
    meta.update(overrides)
    return json.dumps(meta)


def auth(settings: Settings, subject: str, *roles: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {issue_token(subject, list(roles), settings, teams=[settings.default_team])}"
    }


async def make_model(client: httpx.AsyncClient, name: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/models", json={"name": name, **body})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def import_version(
    client: httpx.AsyncClient, name: str, raw: bytes | None = None, **meta: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/models/{name}/versions",
        files={
            "file": (
                "model.pt",
                raw if raw is not None else torchscript_bytes(),
                "application/octet-stream",
            )
        },
        data={"metadata": import_metadata(**meta)},
    )


async def training_event(
    runtime: ServiceRuntime,
    job_id: str,
    model_name: str,
    *,
    metrics: dict[str, float] | None = None,
    seed: int = 0,
    evaluation_split: str = "val",
    team: str = "default",  # the default team owns what the tokenless admin registers
    dataset_team: str | None = None,
) -> CloudEvent:
    """What the training service announces when a job succeeds, its artifact in the store."""
    raw = torchscript_bytes(seed)
    import hashlib

    key = f"training/jobs/{job_id}/model.pt"
    await runtime.store.put(key, raw)
    data = TrainingJobSucceeded(
        job_id=job_id,
        team=team,
        dataset_team=dataset_team,
        template="tabular-mlp",
        model_name=model_name,
        dataset_id="ds-1",
        dataset_version=3,
        dataset_version_id="dsv-3",
        evaluation_split=evaluation_split,
        params={"epochs": 2, "lr": 0.01},
        metrics=metrics or {"accuracy": 0.91, "loss": 0.2},
        artifact=ModelArtifact(
            uri=runtime.store.uri(key),
            key=key,
            sha256=hashlib.sha256(raw).hexdigest(),
            size_bytes=len(raw),
            signature=SIGNATURE,
            label_map=LABELS,
            preprocessing=PREPROCESSING,
        ),
    )
    return new_event(data, subject=job_id)


async def publish(runtime: ServiceRuntime, event: CloudEvent, key: str | None = None) -> None:
    """Deliver on the bus the registry consumes (Kafka on the stack), as training would; one
    ``key`` for several events keeps them in one partition, in order."""
    await runtime.bus.publish(event.topic, event.to_bytes(), key=(key or event.key).encode())


async def registry_events(
    runtime: ServiceRuntime, event_type: str, count: int, group: str
) -> list[tuple[CloudEvent, Any]]:
    """Read the registry's own topic until ``count`` events of ``event_type`` arrived."""
    reader = runtime.bus.consumer(["kiln.registry"], group)
    await reader.start()
    found: list[tuple[CloudEvent, Any]] = []
    try:
        await reader.wait_assigned()

        async def enough() -> bool:
            for record in await reader.poll(timeout_s=0.2):
                envelope, data = decode_event(record.value)
                if envelope.type == event_type:
                    found.append((envelope, data))
            return len(found) >= count

        await eventually(enough, timeout_s=30)
    finally:
        await reader.stop()
    return found


def as_record(event: CloudEvent) -> Record:
    return Record(event.topic, 0, 0, event.to_bytes(), event.key.encode())


@pytest.fixture(params=["embedded", pytest.param("stack", marks=pytest.mark.integration)])
def service_settings(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Settings:
    if request.param == "embedded":
        return Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
            bus_url=f"embedded://r{unique}",
            storage_url=f"file://{tmp_path}/store",
            celery_broker_url="memory://",
            auth_required=True,
        )
    return Settings(
        database_url=request.getfixturevalue("pg_url"),
        db_schema_prefix=f"t{unique}_",
        bus_url=request.getfixturevalue("kafka_url"),
        # A bucket of its own, so store listings in assertions see only this test's objects.
        storage_url=request.getfixturevalue("s3_url").replace("/kiln?", f"/t{unique}?"),
        celery_broker_url="memory://",
        auth_required=True,
    )


@pytest.fixture
async def registry_service(service_settings: Settings) -> AsyncIterator[Service]:
    from kiln_registry.service import SERVICE

    async with running_service(SERVICE, service_settings) as pair:
        yield pair
    if service_settings.db_schema_prefix:
        db = Database(service_settings.database_url, schema="public")
        async with db.engine.begin() as conn:
            await conn.execute(
                text(f'DROP SCHEMA IF EXISTS "{service_settings.db_schema_prefix}registry" CASCADE')
            )
        await db.dispose()
