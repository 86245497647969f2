"""Pre-labelling on the real stack: a Celery job asks a served model (serving over HTTP, the
model in the shared Triton) for suggestions on waiting tasks; annotators accept or correct
them and the acceptance rate is counted."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import torch
import uvicorn
from sqlalchemy import text

from kiln_core.catalog import (
    ModelArtifact,
    ModelSignature,
    ModelVersionPromoted,
    Preprocessing,
    TensorSpec,
)
from kiln_core.db import Database
from kiln_core.events import new_event
from kiln_core.http import create_app
from kiln_core.service import ServiceRuntime
from tests.annotation.test_workflow import as_user
from tests.conftest import eventually
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import commit, make_dataset, upload
from tests.serving.conftest import stack_settings, triton_url, unload_all, wait_serving  # noqa: F401
from tests.support.apps import free_port, running_service

pytestmark = pytest.mark.integration


class Brightness(torch.nn.Module):
    """3×8×8 images to "dark" / "bright" by mean pixel (after normalisation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-4 * m, 4 * m], dim=1)


@pytest.fixture
async def stack(
    request: pytest.FixtureRequest,
    unique: str,
    triton_url: str,  # noqa: F811
) -> AsyncIterator[dict[str, Any]]:
    from kiln_annotation.service import SERVICE as ANNOTATION
    from kiln_dataset.service import SERVICE as DATASET
    from kiln_serving.service import SERVICE as SERVING

    port = free_port()
    settings = stack_settings(request, unique, triton_url).model_copy(
        update={"serving_url": f"http://127.0.0.1:{port}"}
    )
    serving_runtime = ServiceRuntime(SERVING, settings)
    app = create_app(serving_runtime, background=[serving_runtime.run_events])
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    try:
        async with AsyncExitStack() as exits:
            dataset = await exits.enter_async_context(running_service(DATASET, settings))
            annotation = await exits.enter_async_context(running_service(ANNOTATION, settings))
            serving = await exits.enter_async_context(
                httpx.AsyncClient(base_url=settings.serving_url, timeout=60)
            )
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
                await asyncio.sleep(0.05)
            serving.headers.update(as_user(settings, "mia", "admin"))
            yield {
                "dataset": dataset[0],
                "annotation": annotation[0],
                "serving": serving,
                "serving_runtime": serving_runtime,
                "settings": settings,
            }
    finally:
        server.should_exit = True
        await task
        await unload_all(settings, triton_url.removeprefix("grpc://"))
        db = Database(settings.database_url, schema="public")
        async with db.engine.begin() as conn:
            for name in ("dataset", "annotation", "serving"):
                await conn.execute(
                    text(f'DROP SCHEMA IF EXISTS "{settings.db_schema_prefix}{name}" CASCADE')
                )
        await db.dispose()


async def serve_brightness_model(stack: dict[str, Any], name: str) -> None:
    runtime: ServiceRuntime = stack["serving_runtime"]
    client: httpx.AsyncClient = stack["serving"]
    r = await client.post("/v1/endpoints", json={"name": name, "model_name": name})
    assert r.status_code == 201, r.text
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Brightness()), buf)
    data = buf.getvalue()
    key = f"models/{name}/1/model.pt"
    await runtime.store.put(key, data)
    promoted = ModelVersionPromoted(
        model_name=name,
        version=1,
        version_id=f"{name}-1",
        alias="production",
        artifact=ModelArtifact(
            uri=runtime.store.uri(key),
            key=key,
            sha256=hashlib.sha256(data).hexdigest(),
            size_bytes=len(data),
            signature=ModelSignature(
                inputs=[TensorSpec(name="image", dtype="FP32", shape=[3, 8, 8])],
                outputs=[TensorSpec(name="logits", dtype="FP32", shape=[2])],
            ),
            label_map=["dark", "bright"],
            preprocessing=Preprocessing(
                kind="image", size=[8, 8], mode="RGB", mean=[0.5] * 3, std=[0.25] * 3
            ),
        ),
    )
    event = new_event(promoted, subject=name)
    await runtime.bus.publish(event.topic, event.to_bytes(), event.key.encode())
    await wait_serving(client, name, 1)


async def test_prelabel_job_attaches_model_suggestions_and_acceptance_is_counted(
    stack: dict[str, Any], unique: str
) -> None:
    data, ann, settings = stack["dataset"], stack["annotation"], stack["settings"]
    endpoint = f"bright-{unique}"
    await serve_brightness_model(stack, endpoint)
    ds = (await make_dataset(data, task_type="classification"))["id"]
    r = await ann.post(
        "/v1/projects",
        json={
            "name": f"pre-{ds}",
            "dataset_id": ds,
            "prelabel_endpoint": endpoint,
            "label_schema": {
                "kind": "classification",
                "labels": [{"name": "dark"}, {"name": "bright"}],
            },
        },
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    files = {"white.png": png((250, 250, 250)), "black.png": png((5, 5, 5))}
    await commit(data, ds, (await upload(data, ds, files))["draft"])

    async def tasks() -> bool:
        counts = (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"]
        return counts.get("queued") == 2

    await eventually(tasks, timeout_s=30)
    job = await ann.post(f"/v1/projects/{pid}/prelabel-jobs", json={})
    assert job.status_code == 202, job.text

    async def finished() -> dict[str, Any] | None:
        state = (await ann.get(f"/v1/prelabel-jobs/{job.json()['id']}")).json()
        return state if state["status"] in ("succeeded", "failed") else None

    state = await eventually(finished, timeout_s=60)
    assert state["status"] == "succeeded", state
    assert (state["done"], state["total"], state["failed_items"]) == (2, 2, 0)

    alice = as_user(settings, "alice", "annotator")
    for _ in range(2):
        task = (await ann.post(f"/v1/projects/{pid}/lease", headers=alice)).json()
        item = task["items"][0]["item_id"]
        suggestion = task["prelabels"][item]
        expected = "bright" if item == "white.png" else "dark"
        assert suggestion["labels"] == [{"type": "class", "label": expected}]
        assert suggestion["confidence"] > 0.5 and suggestion["source"] == f"model:{endpoint}@v1"
        # alice keeps the suggestion for the white image and overrules it for the black one
        r = await ann.post(
            f"/v1/tasks/{task['id']}/submission",
            headers=alice,
            json={"labels": {item: [{"type": "class", "label": "bright"}]}},
        )
        assert r.status_code == 200, r.text
    stats = (await ann.get(f"/v1/projects/{pid}/prelabels")).json()
    assert (stats["offered"], stats["accepted"], stats["acceptance_rate"]) == (2, 1, 0.5)


async def test_prelabelling_without_an_endpoint_is_refused(stack: dict[str, Any]) -> None:
    data, ann = stack["dataset"], stack["annotation"]
    ds = (await make_dataset(data, task_type="classification"))["id"]
    r = await ann.post(
        "/v1/projects",
        json={
            "name": f"nope-{ds}",
            "dataset_id": ds,
            "label_schema": {"kind": "classification", "labels": [{"name": "a"}]},
        },
    )
    pid = r.json()["id"]
    refused = await ann.post(f"/v1/projects/{pid}/prelabel-jobs", json={})
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    bad = await ann.post(f"/v1/projects/{pid}/prelabel-jobs", json={"endpoint": "../x"})
    assert bad.status_code == 422
