"""Pause, resume, cancel, the queue's reasons, and refused input."""

from __future__ import annotations

import io

import httpx
import pytest
import torch

from kiln_core.service import ServiceRuntime
from kiln_training.models import TrainingJob
from tests.conftest import eventually
from tests.training.conftest import (
    LONG_RUN,
    known_to_training,
    make_image_version,
    make_team,
    wait_status,
)
from tests.training.test_jobs import job_body

Service = tuple[httpx.AsyncClient, ServiceRuntime]


async def weights(runtime: ServiceRuntime, job_id: str) -> dict[str, torch.Tensor]:
    async with runtime.db.session() as session:
        job = await session.get(TrainingJob, job_id)
        assert job is not None and job.artifact is not None
        key = job.artifact["state_dict_key"]
    data = await runtime.store.read_bytes(key)
    return torch.load(io.BytesIO(data), weights_only=True)  # type: ignore[no-any-return]


async def test_pause_then_resume_ends_with_the_same_weights_and_metrics_as_an_uninterrupted_run(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, runtime = training
    version = await make_image_version(dataset, "pausing")
    await known_to_training(training, version)
    await make_team(client)
    body = job_body(version, params=LONG_RUN, checkpoint_every_steps=5)

    straight = (await client.post("/v1/jobs", json=body)).json()
    paused = (await client.post("/v1/jobs", json=body)).json()

    async def mid_run() -> bool:
        job = (await client.get(f"/v1/jobs/{paused['id']}")).json()
        return job["status"] == "running" and job["step"] > 0

    await eventually(mid_run, timeout_s=60, interval_s=0.05)
    r = await client.post(f"/v1/jobs/{paused['id']}/pause")
    assert r.status_code == 200, r.text
    held = await wait_status(client, paused["id"], {"paused", "succeeded"})
    assert held["status"] == "paused", "the run ended before the pause reached it"
    assert held["checkpoint_step"] is not None and held["checkpoint_step"] > 0
    queue = (await client.get("/v1/queue")).json()["pools"]["cpu"]
    assert paused["id"] not in [j["job_id"] for j in queue["running"]]  # resources freed

    r = await client.post(f"/v1/jobs/{paused['id']}/resume")
    assert r.status_code == 200 and r.json()["status"] == "queued"
    a = await wait_status(client, straight["id"], {"succeeded", "failed"}, timeout_s=180)
    b = await wait_status(client, paused["id"], {"succeeded", "failed"}, timeout_s=180)
    assert a["status"] == b["status"] == "succeeded", (a["error"], b["error"])
    assert b["attempts"] == 2
    timing = {"train_seconds", "samples_per_s"}  # wall-clock, not results
    assert {k: v for k, v in a["metrics"].items() if k not in timing} == {
        k: v for k, v in b["metrics"].items() if k not in timing
    }
    assert "loss" in a["metrics"] or "accuracy" in a["metrics"]
    wa, wb = await weights(runtime, a["id"]), await weights(runtime, b["id"])
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


async def test_cancel_stops_a_running_job_within_seconds_and_frees_its_resources(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, _ = training
    version = await make_image_version(dataset, "cancelling")
    await known_to_training(training, version)
    await make_team(client)
    big = {**LONG_RUN, "epochs": 400}
    job = (await client.post("/v1/jobs", json=job_body(version, params=big))).json()
    await wait_status(client, job["id"], {"running"})
    r = await client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["requested"] == "cancel"
    done = await wait_status(client, job["id"], {"cancelled", "succeeded", "failed"}, 20)
    assert done["status"] == "cancelled"
    queue = (await client.get("/v1/queue")).json()["pools"]["cpu"]
    assert queue["running"] == [] and queue["used"].get("cpu", 0) == 0
    again = await client.post(f"/v1/jobs/{job['id']}/resume")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_the_queue_says_why_a_job_waits_and_a_waiting_job_pauses_and_cancels_at_once(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, _ = training
    version = await make_image_version(dataset, "waiting")
    await known_to_training(training, version)
    await make_team(client, "small", quota={"cpu": 1})
    body = job_body(version, team="small", resources={"cpu": 2, "memory": 1})
    job = (await client.post("/v1/jobs", json=body)).json()

    async def reason() -> str | None:
        waiting = (await client.get("/v1/queue")).json()["pools"]["cpu"]["waiting"]
        return next((w["reason"] for w in waiting if w["job_id"] == job["id"]), None)

    assert await eventually(reason) == "exceeds_quota"
    paused = (await client.post(f"/v1/jobs/{job['id']}/pause")).json()
    assert paused["status"] == "paused"
    assert await reason() is None  # a paused job is not in line
    cancelled = (await client.post(f"/v1/jobs/{job['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None


async def test_bad_submissions_are_refused_with_problems_and_create_nothing(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, _ = training
    version = await make_image_version(dataset, "refusing")
    await known_to_training(training, version)
    await make_team(client)
    cases = [
        (job_body(version, params={"lr": 5.0}), 422, "invalid-hyperparameters"),
        (job_body(version, params={"nope": 1}), 422, "invalid-hyperparameters"),
        (job_body(version, template="gpt-9"), 422, "unknown-template"),
        (job_body(version, team="ghosts"), 422, "validation-failed"),
        (
            job_body(version, dataset={"dataset_id": version["dataset_id"], "version": 99}),
            422,
            "unknown-dataset-version",
        ),
        (job_body(version, resources={"cpu": -1}), 422, "validation-failed"),
        (job_body(version, mode="incremental"), 422, "validation-failed"),
    ]
    for body, status, slug in cases:
        r = await client.post("/v1/jobs", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith(slug), r.json()
    from kiln_core.auth import issue_token

    viewer = issue_token("v", ["viewer"], training[1].settings, teams=["default"])
    r = await client.post(
        "/v1/jobs", json=job_body(version), headers={"authorization": f"Bearer {viewer}"}
    )
    assert r.status_code == 403
    assert (await client.get("/v1/jobs")).json()["total"] == 0


@pytest.mark.parametrize("service_settings", ["embedded"], indirect=True)
async def test_a_job_whose_worker_keeps_dying_fails_after_max_attempts(
    services: tuple[Service, Service],
) -> None:
    from datetime import timedelta

    from kiln_core.db import utcnow
    from kiln_training.lifecycle import reclaim_expired

    training, _ = services
    client, runtime = training
    # A quota of nothing: the scheduler never restarts the job between the simulated losses.
    await make_team(client, "doomed", quota={"cpu": 0})
    job = TrainingJob(
        team="doomed",
        model_name="m",
        dataset_id="d",
        dataset_version=1,
        dataset_version_id="v",
        manifest_key="k",
        template="image-cnn",
        resources={"cpu": 1, "memory": 1},
        max_attempts=2,
    )

    async def lose_worker() -> str:
        async with runtime.db.transaction() as session:
            row = await session.get(TrainingJob, job.id) or job
            row.status, row.attempts = "running", row.attempts + 1
            row.worker_id = "cpu@gone:1/1"
            row.lease_expires_at = utcnow() - timedelta(seconds=1)
            session.add(row)
        async with runtime.db.transaction() as session:
            await reclaim_expired(session, runtime, utcnow())
        return str((await client.get(f"/v1/jobs/{job.id}")).json()["status"])

    assert await lose_worker() == "queued"
    assert await lose_worker() == "failed"
    failed = (await client.get(f"/v1/jobs/{job.id}")).json()
    assert failed["worker_losses"] == 2 and "lost 2 times" in failed["error"]
    queue = (await client.get("/v1/queue")).json()["pools"]["cpu"]
    assert queue["running"] == [] and queue["waiting"] == []
