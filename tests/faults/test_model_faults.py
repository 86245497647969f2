"""Fault scenarios of the model side on the private real stack: a Celery training worker
SIGKILLed mid-training, and Triton SIGKILLed while predictions flow. The trained versions of
the first scenario are what the second one serves."""

from __future__ import annotations

import asyncio
import io
import json
import random
import signal
import time
from typing import Any

import httpx
import pytest
from PIL import Image

import kiln_cli.infra as infra
from tests.faults.harness import LAYOUT, Counts, Stack, component_up, wait_until
from tests.faults.test_faults import assert_clean, settle, start, unchanged

pytestmark = pytest.mark.integration

MODEL = "faults-shapes"
CLASSES = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
# Slow enough that a kill lands mid-run (360 steps, many checkpoints, over a second of
# training), small enough for two cores.
PARAMS = {"epochs": 40, "batch_size": 2, "image_size": 16, "width": 8, "lr": 0.01}
JOBS = 2
TRAINING = ("dataset-api", "training-api", "training-events", "registry-api", "registry-events")


def shape_png(color: tuple[int, int, int], rng: random.Random) -> bytes:
    """A noisy solid colour: items differ (distinct blobs) yet the classes stay learnable."""
    img = Image.new("RGB", (16, 16))
    img.putdata(
        [tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in color) for _ in range(256)]
    )  # type: ignore[misc]
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def labelled_version(stack: Stack) -> dict[str, Any]:
    """A small labelled, split image dataset made through the dataset API."""
    rng = random.Random(11)
    files = {
        f"{label}-{i}.png": (label, shape_png(c, rng))
        for label, c in CLASSES.items()
        for i in range(10)
    }
    async with httpx.AsyncClient(base_url=stack.url("dataset"), timeout=30) as client:
        ds = (
            await client.post(
                "/v1/datasets", json={"name": "shapes", "task_type": "classification"}
            )
        ).json()["id"]
        draft = (await client.post(f"/v1/datasets/{ds}/drafts", json={})).json()["id"]
        r = await client.post(
            f"/v1/datasets/{ds}/drafts/{draft}/items",
            files=[("files", (n, data, "image/png")) for n, (_, data) in files.items()],
            data={"labels": json.dumps({n: label for n, (label, _) in files.items()})},
        )
        assert r.status_code == 200, r.text
        r = await client.post(f"/v1/datasets/{ds}/drafts/{draft}/commit", json={"message": "m"})
        assert r.status_code == 201, r.text
        r = await client.post(
            f"/v1/datasets/{ds}/versions/1/splits", json={"ratios": [0.6, 0.4, 0.0], "seed": 1}
        )
        assert r.status_code == 201, r.text
        version: dict[str, Any] = r.json()
    known = f'SELECT 1 FROM "{stack.schema("training")}".known_versions WHERE version_id = $1'
    await wait_until(
        lambda: stack.fetch(known, version["version_id"]), 60, "training knows the version"
    )
    return version


async def job_rows(stack: Stack, ids: list[str]) -> dict[str, Any]:
    rows = await stack.fetch(
        f'SELECT id, status, attempts, error FROM "{stack.schema("training")}".training_jobs WHERE id = ANY($1::text[])',
        ids,
    )
    return {row["id"]: row for row in rows}


async def test_celery_worker_killed_mid_training(stack: Stack, report: list[Counts]) -> None:
    await start(stack, *TRAINING, "training-worker")
    version = await labelled_version(stack)
    async with httpx.AsyncClient(base_url=stack.url("training"), timeout=30) as client:
        r = await client.post("/v1/teams", json={"name": "faults"})
        assert r.status_code in (201, 409), r.text
        accepted: list[str] = []
        for seed in range(JOBS):
            body = {
                "template": "image-cnn",
                "params": PARAMS,
                "team": "faults",
                "model_name": MODEL,
                "dataset": {"dataset_id": version["dataset_id"], "version": version["version"]},
                "resources": {"cpu": 1, "memory": 1},
                "seed": seed,
                "checkpoint_every_steps": 5,
            }
            r = await client.post("/v1/jobs", json=body)
            if r.status_code == 201:
                accepted.append(r.json()["id"])
    assert len(accepted) == JOBS

    killed: set[tuple[str, int]] = set()  # (job, attempt) of the runs cut short

    async def fresh_run_with_checkpoint() -> tuple[str, int] | None:
        rows = await stack.fetch(
            f'SELECT id, attempts FROM "{stack.schema("training")}".training_jobs '
            "WHERE id = ANY($1::text[]) AND status = 'running' AND checkpoint_step >= 5",
            accepted,
        )
        runs = [(r["id"], r["attempts"]) for r in rows if (r["id"], r["attempts"]) not in killed]
        return runs[0] if runs else None

    for _ in range(2):  # two runs cut short, each after it has checkpointed at least once
        run = await wait_until(fresh_run_with_checkpoint, 180, "a run with a checkpoint", 0.1)
        stack.kill("training-worker")
        killed.add(run)
        stack.start("training-worker")  # what a supervisor (k8s, systemd) does
    kills = len(killed)

    async def finished() -> bool:
        rows = await job_rows(stack, accepted)
        return all(r["status"] in ("succeeded", "failed", "cancelled") for r in rows.values())

    await settle(finished, timeout_s=240)
    rows = await job_rows(stack, accepted)
    succeeded = [i for i in accepted if rows[i]["status"] == "succeeded"]
    await settle(lambda: registered_all(stack, succeeded), timeout_s=60)
    registered = await stack.fetch(
        f'SELECT training_job_id, count(*) AS n FROM "{stack.schema("registry")}".model_versions '
        "WHERE training_job_id = ANY($1::text[]) GROUP BY training_job_id",
        accepted,
    )
    per_job = {row["training_job_id"]: row["n"] for row in registered}
    states = {i: (rows[i]["status"], rows[i]["attempts"]) for i in accepted}
    report.append(
        Counts(
            scenario="celery-sigkill",
            kind="training jobs succeeded",
            accepted=len(accepted),
            present=len(succeeded),
            duplicated=0,
            lost=len(accepted) - len(succeeded),
            notes=f"worker SIGKILLed {kills} times; attempts "
            + ",".join(str(a) for _, a in states.values()),
        )
    )
    report.append(
        Counts(
            scenario="celery-sigkill",
            kind="model versions registered",
            accepted=len(accepted),
            present=len(per_job),
            duplicated=sum(n - 1 for n in per_job.values()),
            lost=len(set(accepted) - set(per_job)),
        )
    )
    assert_clean(report)
    assert sum(a for _, a in states.values()) >= JOBS + kills, f"no run was cut short: {states}"


async def registered_all(stack: Stack, jobs: list[str]) -> bool:
    rows = await stack.fetch(
        f'SELECT count(DISTINCT training_job_id) AS n FROM "{stack.schema("registry")}".model_versions '
        "WHERE training_job_id = ANY($1::text[])",
        jobs,
    )
    return bool(rows[0]["n"] >= len(jobs))


# --- Triton SIGKILLed during predictions ----------------------------------------------------------


async def test_triton_killed_during_predictions(stack: Stack, report: list[Counts]) -> None:
    await start(stack, "registry-api", "registry-events", "serving-api", "serving-events")
    versions = await stack.fetch(
        f'SELECT v.number FROM "{stack.schema("registry")}".model_versions v '
        f'JOIN "{stack.schema("registry")}".registered_models m ON m.id = v.model_id '
        "WHERE m.name = $1 ORDER BY v.number",
        MODEL,
    )
    assert versions, "no trained model to serve: the training scenario must run first"
    number = versions[0]["number"]
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            f"{stack.url('serving')}/v1/endpoints",
            json={"name": "faults-shapes", "model_name": MODEL, "alias": "production"},
        )
        assert r.status_code in (201, 409), r.text
        r = await client.post(
            f"{stack.url('registry')}/v1/models/{MODEL}/aliases/production",
            json={"version": number, "reason": "fault suite"},
        )
        assert r.status_code in (200, 201), r.text

        async def serving() -> bool:
            endpoint = (
                await client.get(f"{stack.url('serving')}/v1/endpoints/faults-shapes")
            ).json()
            return (endpoint.get("stable") or {}).get("version") == number

        await wait_until(serving, 120, "the endpoint serves the trained version")

    rng = random.Random(5)
    images = [shape_png(c, rng) for c in CLASSES.values()]
    answered: list[dict[str, Any]] = []
    failures: dict[str, int] = {}
    before = stack.pids()
    recovered_after: float | None = None
    killed_at = 0.0

    async def predictions(stop: asyncio.Event) -> None:
        nonlocal recovered_after
        url = f"{stack.url('serving')}/v1/endpoints/faults-shapes:predict"
        async with httpx.AsyncClient(timeout=5) as client:
            while not stop.is_set():
                try:
                    r = await client.post(
                        url, content=rng.choice(images), headers={"content-type": "image/png"}
                    )
                except httpx.HTTPError as exc:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                else:
                    if r.status_code == 200:
                        answered.append(r.json())
                        if killed_at and recovered_after is None and not stack_triton_down[0]:
                            recovered_after = time.monotonic() - killed_at
                    else:
                        failures[str(r.status_code)] = failures.get(str(r.status_code), 0) + 1
                await asyncio.sleep(0.02)

    stack_triton_down = [False]

    async def fault() -> None:
        nonlocal killed_at
        stack_triton_down[0] = True
        killed_at = time.monotonic()
        infra.signal_component("triton", signal.SIGKILL, LAYOUT)
        await asyncio.sleep(3)
        await asyncio.to_thread(component_up, "triton")
        stack_triton_down[0] = False

        async def served_again() -> bool:
            return recovered_after is not None

        await settle(served_again, timeout_s=90)

    stop = asyncio.Event()
    load = asyncio.create_task(predictions(stop))
    try:
        await asyncio.sleep(2)
        await fault()
        await asyncio.sleep(2)
    finally:
        stop.set()
        await load
    valid = [a for a in answered if a.get("version") == number and a.get("predictions")]
    report.append(
        Counts(
            scenario="triton-sigkill",
            kind="predictions answered 2xx",
            accepted=len(answered),
            present=len(valid),
            duplicated=0,
            lost=len(answered) - len(valid),
            notes=f"refused while down {failures}; served again "
            + (f"{recovered_after:.1f}s after the kill" if recovered_after else "NEVER"),
        )
    )
    unchanged(stack, before)
    assert recovered_after is not None, "predictions never succeeded again after Triton restarted"
    assert_clean(report)
