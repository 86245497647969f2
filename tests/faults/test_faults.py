"""Fault scenarios on the private real stack (see harness.py): each one keeps work flowing,
injects a real fault (SIGKILL, SIGSTOP, a server stopped and restarted), recovers, and then
checks every invariant:

- every upload, annotation and event that got a success answer is present exactly once;
- no event is left unpublished and no job is left unfinished;
- the services are ready again on their own: processes the fault did not kill keep their pid.

Each scenario records its counts (accepted, present, duplicated, lost) before asserting, and
conftest.py prints them as a table at the end of the run.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx
import pytest

import kiln_cli.infra as infra
from tests.faults.harness import (
    LAYOUT,
    READY_TIMEOUT_S,
    Counts,
    Stack,
    component_up,
    wait_until,
)
from tests.faults.load import AnnotationLoad, PingLoad, UploadLoad, tiny_png

pytestmark = pytest.mark.integration

PING_CONSUMERS = ["annotation", "registry"]
DELIVERY_TIMEOUT_S = 90.0


def assert_clean(rows: list[Counts]) -> None:
    bad = [r for r in rows if r.lost or r.duplicated or r.present != r.accepted]
    assert not bad, "\n".join(str(r) for r in bad)
    assert all(r.accepted > 0 for r in rows), f"a scenario accepted no work at all: {rows}"


async def flowing(
    loads: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]],
    fault: Callable[[], Awaitable[None]],
    *,
    before_s: float = 2.0,
    after_s: float = 3.0,
) -> None:
    """Run the loads, inject the fault while they run, keep them running a while after."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(load(stop)) for load in loads]
    try:
        await asyncio.sleep(before_s)
        await fault()
        await asyncio.sleep(after_s)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def settle(
    check: Callable[[], Awaitable[bool]], timeout_s: float = DELIVERY_TIMEOUT_S
) -> bool:
    """Wait for the system to catch up; the counts, not this wait, decide pass or fail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            await asyncio.sleep(2)  # room for any late duplicate to show up before counting
            return True
        await asyncio.sleep(0.25)
    return False


async def start(stack: Stack, *names: str) -> None:
    """Start processes and wait until they work: APIs answer /readyz, and a warm-up ping from
    the dataset API has reached every running consumer (so each has joined its group)."""
    for name in names:
        stack.start(name)
    await stack.wait_ready([n.removesuffix("-api") for n in names if n.endswith("-api")])
    consumers = [n.removesuffix("-events") for n in stack.pids() if n.endswith("-events")]
    if consumers and "dataset" in stack.ports:
        warmup = PingLoad(stack.url("dataset"), "warm-up")
        async with httpx.AsyncClient(base_url=stack.url("dataset"), timeout=10) as client:
            body = (await client.post("/v1/pings", json={"message": "warm-up"})).json()
            warmup.accepted[body["ping_id"]] = body["event_id"]
        await wait_until(
            lambda: warmup.delivered(stack, consumers), READY_TIMEOUT_S, "warm-up ping delivered"
        )


async def new_draft(stack: Stack, name: str) -> tuple[str, str]:
    async with httpx.AsyncClient(base_url=stack.url("dataset"), timeout=10) as client:
        created = await client.post(
            "/v1/datasets", json={"name": name, "task_type": "classification"}
        )
        assert created.status_code == 201, created.text
        dataset_id = created.json()["id"]
        draft = await client.post(f"/v1/datasets/{dataset_id}/drafts", json={})
        assert draft.status_code == 201, draft.text
        return dataset_id, draft.json()["id"]


def unchanged(stack: Stack, before: dict[str, int], *, except_: tuple[str, ...] = ()) -> None:
    """The fault must not have needed a restart of any Kiln process it did not kill."""
    now = stack.pids()
    changed = {
        n: (p, now.get(n)) for n, p in before.items() if n not in except_ and now.get(n) != p
    }
    assert not changed, f"processes died or were restarted: {changed}\n{stack.tail(changed)}"


# --- Kafka broker SIGKILLed mid-stream ------------------------------------------------------------


async def test_kafka_killed_mid_stream(stack: Stack, report: list[Counts]) -> None:
    await start(stack, "dataset-api", "annotation-events", "registry-events")
    pings = PingLoad(stack.url("dataset"), "kafka-sigkill")
    before = stack.pids()

    async def fault() -> None:
        infra.signal_component("kafka", signal.SIGKILL, LAYOUT)
        await asyncio.sleep(4)  # work keeps arriving while the broker is gone
        await asyncio.to_thread(component_up, "kafka")

    await flowing([pings.run], fault)
    await settle(lambda: pings.delivered(stack, PING_CONSUMERS))
    report.extend(await pings.check(stack, "dataset", PING_CONSUMERS))
    await stack.wait_ready(["dataset"])
    unchanged(stack, before)
    assert_clean(report)


# --- An event consumer SIGKILLed inside a handler -------------------------------------------------


async def handler_blocked(stack: Stack, schema: str) -> bool:
    """True while a backend of the consumer waits on the lock the test holds on ping_received."""
    rows = await stack.fetch(
        "SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
        "WHERE NOT l.granted AND l.relation = $1::regclass",
        f'"{schema}".ping_received',
    )
    return bool(rows[0]["n"])


async def test_consumer_killed_inside_handler(stack: Stack, report: list[Counts]) -> None:
    """Deterministic: the test locks the table the ping handler writes, so the consumer is
    provably inside its handler's transaction (inbox row claimed, effect not committed) when it
    is SIGKILLed. Then more kills at random points of a busy stream."""
    import asyncpg

    await start(stack, "dataset-api", "annotation-events", "registry-events")
    pings = PingLoad(stack.url("dataset"), "consumer-sigkill", interval_s=0.01)
    schema = stack.schema("annotation")
    kills = 0

    async def fault() -> None:
        nonlocal kills
        for _ in range(2):  # killed provably mid-handler
            conn = await asyncpg.connect(
                host=infra.HOST,
                port=LAYOUT.pg_port,
                user=infra.PG_USER,
                password=infra.PG_PASSWORD,
                database=infra.PG_DB,
            )
            try:
                async with conn.transaction():
                    await conn.execute(f'LOCK TABLE "{schema}".ping_received IN EXCLUSIVE MODE')
                    await wait_until(
                        lambda: handler_blocked(stack, schema), 60, "consumer inside its handler"
                    )
                    stack.kill("annotation-events")
                    kills += 1
            finally:
                await conn.close()
            stack.start("annotation-events")
        applied = f'SELECT count(*) AS n FROM "{schema}".ping_received'
        for _ in range(2):  # and at random points of a busy stream, once it is consuming again
            seen = (await stack.fetch(applied))[0]["n"]

            async def consuming(seen: int = seen) -> bool:
                return bool((await stack.fetch(applied))[0]["n"] > seen)

            await wait_until(consuming, 60, "the restarted consumer applying events")
            await asyncio.sleep(random.uniform(0.0, 0.5))
            stack.kill("annotation-events")
            kills += 1
            stack.start("annotation-events")

    await flowing([pings.run], fault)
    await settle(lambda: pings.delivered(stack, PING_CONSUMERS))
    rows = await pings.check(stack, "dataset", PING_CONSUMERS)
    for row in rows:
        if row.kind.endswith("annotation"):
            row.notes = f"consumer SIGKILLed {kills} times (2 inside the handler)"
    report.extend(rows)
    assert_clean(report)


# --- PostgreSQL stopped and restarted during uploads and annotation -------------------------------


async def annotation_queue(stack: Stack, items: int) -> tuple[str, int]:
    """A project with auto-annotation on a new dataset, and its tasks for a committed version
    of ``items`` unlabelled images (created by the annotation consumer from the event)."""
    dataset_id, draft_id = await new_draft(stack, "to-label")
    async with httpx.AsyncClient(timeout=30) as client:
        files = [("files", (f"item-{i:03d}.png", tiny_png(), "image/png")) for i in range(items)]
        r = await client.post(
            f"{stack.url('dataset')}/v1/datasets/{dataset_id}/drafts/{draft_id}/items", files=files
        )
        assert r.status_code == 200 and len(r.json()["accepted"]) == items, r.text
        r = await client.post(
            f"{stack.url('annotation')}/v1/projects",
            json={
                "name": "faults",
                "dataset_id": dataset_id,
                "label_schema": {"kind": "classification", "labels": [{"name": "dot"}]},
                "batch_size": 1,
                "review_levels": 0,
            },
        )
        assert r.status_code == 201, r.text
        project_id = r.json()["id"]
        r = await client.post(
            f"{stack.url('dataset')}/v1/datasets/{dataset_id}/drafts/{draft_id}/commit", json={}
        )
        assert r.status_code == 201, r.text
        version = int(r.json()["version"])
    tasks = f'SELECT count(*) AS n FROM "{stack.schema("annotation")}".tasks WHERE project_id = $1'

    async def tasked() -> bool:
        return bool((await stack.fetch(tasks, project_id))[0]["n"] == items)

    await wait_until(tasked, DELIVERY_TIMEOUT_S, "tasks created from the version event")
    return project_id, version


async def test_postgres_restarted_during_uploads_and_annotation(
    stack: Stack, report: list[Counts]
) -> None:
    await start(stack, "dataset-api", "annotation-api", "annotation-events", "registry-events")
    project_id, version = await annotation_queue(stack, items=40)
    dataset_id, draft_id = await new_draft(stack, "pg-restart")
    uploads = UploadLoad(stack, dataset_id, draft_id, "pg-restart")
    pings = PingLoad(stack.url("dataset"), "pg-restart", interval_s=0.05)
    labelling = AnnotationLoad(stack, project_id, "pg-restart")
    before = stack.pids()

    async def fault() -> None:
        await asyncio.to_thread(infra.stop_component, "postgres", LAYOUT)
        await asyncio.sleep(4)
        await asyncio.to_thread(component_up, "postgres")

    await flowing([uploads.run, pings.run, labelling.run], fault, before_s=1.5, after_s=3)
    await stack.wait_ready(["dataset", "annotation"])
    # The annotator finishes the queue, so the version's labels must be committed once.
    finish = asyncio.Event()
    await asyncio.wait_for(labelling.run(finish), timeout=DELIVERY_TIMEOUT_S)
    await settle(lambda: pings.delivered(stack, PING_CONSUMERS))
    await settle(lambda: labels_committed(stack, project_id, version))
    report.append(await uploads.check())
    report.extend(await pings.check(stack, "dataset", PING_CONSUMERS))
    report.extend(await labelling.check(version))
    unchanged(stack, before)
    assert_clean(report)


async def labels_committed(stack: Stack, project_id: str, version: int) -> bool:
    rows = await stack.fetch(
        f'SELECT count(*) AS n FROM "{stack.schema("annotation")}".commits '
        "WHERE project_id = $1 AND dataset_version = $2",
        project_id,
        version,
    )
    return bool(rows[0]["n"])


# --- MinIO unavailable during uploads -------------------------------------------------------------


async def test_minio_unavailable_during_uploads(stack: Stack, report: list[Counts]) -> None:
    await start(stack, "dataset-api")
    dataset_id, draft_id = await new_draft(stack, "minio-down")
    frozen = UploadLoad(stack, dataset_id, draft_id, "minio-sigstop")
    before = stack.pids()

    async def freeze() -> None:
        # SIGSTOP: the server holds its connections open and never answers (a hung store).
        infra.signal_component("minio", signal.SIGSTOP, LAYOUT)
        try:
            await asyncio.sleep(6)
        finally:
            infra.signal_component("minio", signal.SIGCONT, LAYOUT)

    await flowing([frozen.run], freeze)
    report.append(await frozen.check("uploads (MinIO frozen)"))

    killed = UploadLoad(stack, dataset_id, draft_id, "minio-sigkill")

    async def crash() -> None:
        infra.signal_component("minio", signal.SIGKILL, LAYOUT)
        await asyncio.sleep(3)
        await asyncio.to_thread(component_up, "minio")

    await flowing([killed.run], crash)
    report.append(await killed.check("uploads (MinIO killed)"))
    await stack.wait_ready(["dataset"])
    unchanged(stack, before)
    assert_clean(report)
