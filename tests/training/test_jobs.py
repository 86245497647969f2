"""Training jobs end to end through the API, on the embedded defaults and the real stack."""

from __future__ import annotations

import httpx
import pytest

from kiln_core.service import ServiceRuntime
from tests.training.conftest import (
    known_to_training,
    make_image_version,
    make_team,
    wait_status,
)

Service = tuple[httpx.AsyncClient, ServiceRuntime]

SMALL_CNN = {"epochs": 2, "batch_size": 8, "image_size": 8, "width": 4, "lr": 0.01}


def job_body(version: dict, **extra: object) -> dict:
    return {
        "template": "image-cnn",
        "params": SMALL_CNN,
        "team": "vision",
        "dataset": {"dataset_id": version["dataset_id"], "version": version["version"]},
        "resources": {"cpu": 1, "memory": 1},
        "seed": 3,
        **extra,
    }


async def test_a_job_goes_from_queued_to_succeeded_with_metrics_and_an_artifact(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, runtime = training
    version = await make_image_version(dataset, "shapes")
    await known_to_training(training, version)
    await make_team(client)

    r = await client.post("/v1/jobs", json=job_body(version))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["params"]["epochs"] == 2
    assert job["params"]["optimizer"] == "adamw"  # defaults filled in from the template

    done = await wait_status(client, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and done["epoch"] == 2
    assert 0.0 <= done["metrics"]["accuracy"] <= 1.0

    history = (await client.get(f"/v1/jobs/{job['id']}/metrics")).json()
    epochs = [p for p in history if p["kind"] == "epoch"]
    assert [p["epoch"] for p in epochs] in ([1, 2], [0, 1]), history
    steps = (await client.get(f"/v1/jobs/{job['id']}/metrics", params={"kind": "step"})).json()
    assert steps and all("loss" in p["metrics"] for p in steps)

    evaluation = (await client.get(f"/v1/jobs/{job['id']}/evaluation")).json()
    assert evaluation["labels"] == ["blue", "green", "red"]
    assert len(evaluation["confusion"]) == 3
    bad = (await client.get(f"/v1/jobs/{job['id']}/bad-cases")).json()
    assert bad["total"] == evaluation["bad_case_count"]

    artifact = (await client.get(f"/v1/jobs/{job['id']}/artifact")).json()
    assert artifact["format"] == "torchscript" and artifact["label_map"] == ["blue", "green", "red"]
    stored = await runtime.store.read_bytes(artifact["key"])
    import hashlib

    assert hashlib.sha256(stored).hexdigest() == artifact["sha256"]
    assert len(stored) == artifact["size_bytes"]

    # Resources are free again: nothing runs, nothing waits.
    queue = (await client.get("/v1/queue")).json()
    assert queue["pools"]["cpu"]["running"] == [] and queue["pools"]["cpu"]["waiting"] == []


@pytest.mark.parametrize("service_settings", ["embedded"], indirect=True)
async def test_an_incremental_job_warm_starts_from_a_finished_job_of_the_same_template(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, _ = training
    version = await make_image_version(dataset, "warm")
    await known_to_training(training, version)
    await make_team(client)
    first = (await client.post("/v1/jobs", json=job_body(version))).json()
    early = await client.post(
        "/v1/jobs", json=job_body(version, mode="incremental", warm_start_job_id=first["id"])
    )
    assert early.status_code == 422  # no weights yet: nothing to start from
    assert (await wait_status(client, first["id"], {"succeeded", "failed"}))["status"] == (
        "succeeded"
    )
    other = job_body(version, template="image-resnet18", params={"epochs": 1, "image_size": 8})
    r = await client.post(
        "/v1/jobs", json={**other, "mode": "incremental", "warm_start_job_id": first["id"]}
    )
    assert r.status_code == 422 and "trained template image-cnn" in r.json()["detail"]
    body = job_body(version, mode="incremental", warm_start_job_id=first["id"])
    warm = (await client.post("/v1/jobs", json=body)).json()
    assert warm["mode"] == "incremental"
    done = await wait_status(client, warm["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert done["metrics"]["accuracy"] >= 0.0
