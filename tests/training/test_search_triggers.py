"""Hyperparameter search through the scheduler, retraining triggers, and the progress stream."""

from __future__ import annotations

import json

import httpx
import pytest

from kiln_core.catalog import DatasetVersionCreated, VersionLineage
from kiln_core.events import new_event
from kiln_core.service import ServiceRuntime
from kiln_training.handlers import on_version_created
from tests.training.conftest import known_to_training, make_image_version, make_team, wait_status
from tests.training.test_jobs import SMALL_CNN, job_body

Service = tuple[httpx.AsyncClient, ServiceRuntime]
embedded_only = pytest.mark.parametrize("service_settings", ["embedded"], indirect=True)


@embedded_only
async def test_a_grid_search_runs_its_trials_through_the_queue_and_names_the_best(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, _ = training
    version = await make_image_version(dataset, "searching")
    await known_to_training(training, version)
    await make_team(client)
    base = job_body(version, params={**SMALL_CNN, "epochs": 1})
    r = await client.post(
        "/v1/searches",
        json={"base": base, "space": {"lr": [0.03, 0.0001], "width": [4]}, "target": "accuracy"},
    )
    assert r.status_code == 201, r.text
    parent = r.json()
    assert parent["kind"] == "search" and parent["search"]["trials"] == 2
    done = await wait_status(client, parent["id"], {"succeeded", "failed"}, timeout_s=180)
    assert done["status"] == "succeeded", done["error"]
    view = (await client.get(f"/v1/searches/{parent['id']}")).json()
    trials = view["trials"]
    assert sorted(t["params"]["lr"] for t in trials) == [0.0001, 0.03]
    assert all(t["status"] == "succeeded" and t["parent_id"] == parent["id"] for t in trials)
    ranking = done["search"]["ranking"]
    values = [entry["value"] for entry in ranking]
    assert values == sorted(values, reverse=True) and len(ranking) == 2
    best = next(t for t in trials if t["id"] == done["search"]["best_trial_id"])
    assert best["metrics"]["accuracy"] == max(t["metrics"]["accuracy"] for t in trials)
    assert done["metrics"] == best["metrics"] and done["artifact"] == best["artifact"]

    bad = await client.post(
        "/v1/searches", json={"base": base, "space": {"lr": [5.0]}, "target": "accuracy"}
    )
    assert bad.status_code == 422 and bad.json()["type"].endswith("invalid-hyperparameters")
    assert (await client.get("/v1/jobs", params={"kind": "search"})).json()["total"] == 1


@embedded_only
async def test_a_trigger_trains_once_per_labelled_version(
    services: tuple[Service, Service],
) -> None:
    training, _ = services
    client, runtime = training
    await make_team(client)
    spec = {"template": "image-cnn", "params": SMALL_CNN, "team": "vision"}
    r = await client.post(
        "/v1/triggers", json={"name": "retrain", "dataset_id": "ds1", "job": spec}
    )
    assert r.status_code == 201, r.text
    trigger = r.json()
    off = await client.post(
        "/v1/triggers",
        json={"name": "off", "dataset_id": "ds1", "job": spec, "enabled": False},
    )
    assert off.status_code == 201
    refused = await client.post(
        "/v1/triggers",
        json={"name": "bad", "dataset_id": "ds1", "job": {**spec, "params": {"lr": -1}}},
    )
    assert refused.status_code == 422

    def created(
        version: int, labelled: bool, labelled_count: int | None = None
    ) -> DatasetVersionCreated:
        return DatasetVersionCreated(
            dataset_id="ds1",
            dataset_name="parts",
            task_type="classification",
            version=version,
            version_id=f"v{version}",
            manifest_key=f"m/{version}.jsonl",
            manifest_uri=f"file:///m/{version}.jsonl",
            manifest_sha256="0" * 64,
            item_count=3,
            labelled_count=labelled_count if labelled_count is not None else 3 if labelled else 0,
            labelled=labelled,
            lineage=VersionLineage(source="upload"),
        )

    partly = created(3, True, labelled_count=2)  # new inputs still waiting for labels
    for data in (created(1, False), created(2, True), created(2, True), partly):
        async with runtime.db.transaction() as session:
            await on_version_created(session, new_event(data, "ds1"), data)
    jobs = (await client.get("/v1/jobs")).json()["items"]
    assert len(jobs) == 1  # unlabelled v1, partly labelled v3: nothing; v2 twice: one job
    assert jobs[0]["trigger_id"] == trigger["id"] and jobs[0]["dataset_version"] == 2
    assert jobs[0]["created_by"] == f"trigger:{trigger['id']}"
    await client.post(f"/v1/jobs/{jobs[0]['id']}/cancel")

    r = await client.patch(f"/v1/triggers/{trigger['id']}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert len((await client.get("/v1/triggers", params={"dataset_id": "ds1"})).json()) == 2
    assert (await client.delete(f"/v1/triggers/{trigger['id']}")).status_code == 204
    assert (await client.get(f"/v1/triggers/{trigger['id']}")).status_code == 404


@embedded_only
async def test_progress_streams_as_server_sent_events_until_the_job_ends(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, _ = training
    version = await make_image_version(dataset, "streaming")
    await known_to_training(training, version)
    await make_team(client)
    job = (await client.post("/v1/jobs", json=job_body(version))).json()
    events: list[tuple[str, dict]] = []
    async with client.stream("GET", f"/v1/jobs/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    statuses = [data["status"] for kind, data in events if kind == "status"]
    assert statuses[0] in ("queued", "running") and statuses[-1] == "succeeded"
    progress = [data for kind, data in events if kind == "progress"]
    assert any(p["kind"] == "epoch" for p in progress)
    assert all("loss" in p["metrics"] or p["kind"] == "epoch" for p in progress)


async def test_openapi_documents_the_training_api(services: tuple[Service, Service]) -> None:
    client, _ = services[0]
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/v1/templates",
        "/v1/teams",
        "/v1/jobs",
        "/v1/jobs/{job_id}/pause",
        "/v1/jobs/{job_id}/resume",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/metrics",
        "/v1/jobs/{job_id}/evaluation",
        "/v1/jobs/{job_id}/bad-cases",
        "/v1/jobs/{job_id}/artifact",
        "/v1/jobs/{job_id}/events",
        "/v1/searches",
        "/v1/triggers",
        "/v1/queue",
    ):
        assert path in spec["paths"], path
    templates = (await client.get("/v1/templates")).json()["items"]
    names = {t["name"] for t in templates}
    assert {"image-cnn", "image-resnet18", "tabular-mlp", "text-embeddingbag"} <= names
    lr = next(t for t in templates if t["name"] == "image-cnn")["params"]["lr"]
    assert lr["type"] == "float" and lr["min"] > 0
