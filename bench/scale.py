"""Growth with size: how Kiln's costs grow with items, tasks and queued jobs.

At each size (default 1,000, 10,000 and 100,000) on fresh services in this process (the
dataset service's API over ASGI and the annotation service's workflow, on the embedded store
by default, ``--store stack`` for the local PostgreSQL + MinIO):

* ``commit``: a version of N generated small PNG items (manifest, version rows, blob
  references, event) — :func:`kiln_dataset.versions.create_version`, as a draft commit runs it;
* ``draft``: ``POST /datasets/{id}/drafts`` based on that version (one draft row per item);
* ``draft_commit``: committing that draft (``POST …/drafts/{id}/commit``) as version 2;
* ``stats``, ``diff`` (v2 against v1) and ``export`` (COCO zip, streamed and read to the end;
  ``export_items_per_s``);
* ``tasks``: annotation tasks for the new version (what the annotation service does on
  ``dataset.version.created``: the items not tasked yet, one task each), committed;
* ``lease``: one lease with N tasks waiting (p50/p99 of ``--leases`` leases, each by a new
  annotator, so each takes a fresh task);
* ``schedule``: one scheduling decision with N queued jobs (:func:`kiln_training.scheduler.plan`);
* ``relay``: the event relay publishing N pending outbox rows to the bus (``relay_events_per_s``).

For each operation the time at each size and the growth exponent: the slope of log(time) on
log(size) by least squares (``<op>_exponent``; 1 is linear, 2 quadratic). The item images are
drawn from a pool of ``--distinct`` generated PNGs (the store's content addressing makes a
bigger pool cost only seeding time, not the operations measured). Last line: one JSON object.

    .venv/bin/python bench/scale.py [--sizes 1000,10000,100000] [--store embedded|stack]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kiln_core.settings import Settings  # noqa: E402

OPS = (
    "commit",
    "draft",
    "draft_commit",
    "stats",
    "diff",
    "export",
    "tasks",
    "lease",
    "schedule",
    "relay",
)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def growth_exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Slope of log(seconds) against log(size), least squares; None under two points."""
    points = [(math.log(n), math.log(s)) for n, s in zip(sizes, seconds, strict=True) if s > 0]
    if len(points) < 2:
        return None
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    return round(float(np.polyfit(xs, ys, 1)[0]), 3)


def pngs(count: int, size: int = 8) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(24)
    out = []
    for _ in range(count):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def settings_for(store: str, tmp: Path, tag: str) -> Settings:
    if store == "embedded":
        return Settings(
            database_url=f"sqlite+aiosqlite:///{tmp}/{{service}}.db",
            bus_url=f"embedded://s{tag}",
            storage_url=f"file://{tmp}/store",
            celery_broker_url="memory://",
        )
    return Settings(
        database_url="postgresql+asyncpg://kiln:kiln@127.0.0.1:55432/kiln",
        db_schema_prefix=f"scale{tag}_",
        bus_url=f"kafka://127.0.0.1:59092?namespace=scale{tag}",
        storage_url=f"s3://kiln:kilnkilnkiln@127.0.0.1:59000/scale{tag}?secure=false",
        celery_broker_url="memory://",
    )


async def timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = await work
    return time.perf_counter() - started, answer


async def one_size(n: int, args: argparse.Namespace, images: list[bytes]) -> dict[str, float]:
    from kiln_annotation.handlers import untasked_items
    from kiln_annotation.models import Project
    from kiln_annotation.service import SERVICE as ANNOTATION
    from kiln_annotation.workflow import create_tasks, lease_next
    from kiln_core.catalog import VersionLineage
    from kiln_core.manifest import ClassLabel, ManifestItem
    from kiln_core.service import ServiceRuntime
    from kiln_dataset.service import SERVICE as DATASET
    from kiln_dataset.versions import create_version
    from tests.support.apps import running_service

    tag = uuid.uuid4().hex[:8]
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="kiln-scale-") as tmp:
        settings = settings_for(args.store, Path(tmp), tag)
        async with running_service(DATASET, settings) as (client, runtime):
            refs = [await runtime.store.put_blob(data) for data in images]
            names = ["cat", "dog", "bird"]
            items = [
                ManifestItem(
                    item_id=f"img/{k:07}.png",
                    blob=refs[k % len(refs)].sha256,
                    media_type="image/png",
                    size_bytes=refs[k % len(refs)].size,
                    width=8,
                    height=8,
                    split="train",
                    labels=[ClassLabel(type="class", label=names[k % 3])] if k % 2 else [],
                )
                for k in range(n)
            ]
            r = await client.post(
                "/v1/datasets", json={"name": f"scale-{tag}", "task_type": "classification"}
            )
            r.raise_for_status()
            dataset = r.json()["id"]
            async with runtime.db.transaction() as session:
                out["commit"], _ = await timed(
                    create_version(
                        session,
                        runtime,
                        dataset,
                        items,
                        lineage=VersionLineage(source="upload"),
                        categories=[],
                    )
                )
            base = f"/v1/datasets/{dataset}"
            out["draft"], r = await timed(client.post(f"{base}/drafts", json={"base_version": 1}))
            r.raise_for_status()
            draft = r.json()["id"]
            out["draft_commit"], r = await timed(
                client.post(f"{base}/drafts/{draft}/commit", json={"message": "same items"})
            )
            r.raise_for_status()
            out["stats"], r = await timed(client.get(f"{base}/versions/2/stats"))
            r.raise_for_status()
            out["diff"], r = await timed(client.get(f"{base}/versions/2/diff?against=1"))
            r.raise_for_status()

            async def export() -> int:
                total = 0
                async with client.stream("GET", f"{base}/versions/1/export?format=coco") as r:
                    r.raise_for_status()
                    async for chunk in r.aiter_bytes():
                        total += len(chunk)
                return total

            out["export"], _ = await timed(export())
            out["export_items_per_s"] = n / out["export"]

        annotation = ServiceRuntime(ANNOTATION, settings)
        await annotation.start()
        try:
            async with annotation.db.transaction() as session:
                project = Project(
                    name=f"scale-{tag}",
                    dataset_id=dataset,
                    label_schema={"kind": "classification", "labels": [{"name": x} for x in names]},
                )
                session.add(project)

            async def make_tasks() -> None:
                async with annotation.db.transaction() as session:
                    fresh = await untasked_items(session, project.id, items)
                    await create_tasks(session, project, 1, fresh)

            out["tasks"], _ = await timed(make_tasks())
            leases = []
            for k in range(args.leases):
                spent, task = await timed(lease_next(annotation, project.id, f"a{k}"))
                if task is None:
                    raise RuntimeError("lease found no task")
                leases.append(spent)
            out["lease"] = statistics.median(leases)
            out["lease_p99"] = float(np.percentile(leases, 99))
            out["relay"], sent = await timed(relay_drain(annotation, n))
            out["relay_events_per_s"] = sent / out["relay"]
        finally:
            await annotation.stop()
            await drop(settings, args.store)
    from bench.training import schedule_decision_ms

    out["schedule"] = schedule_decision_ms(n) / 1000
    return out


async def relay_drain(runtime: Any, n: int) -> int:
    """Stage ``n`` events in the outbox in one transaction, then run the relay until every
    one is published; returns how many it published."""
    from sqlalchemy import func, select

    from kiln_core.catalog import PING_EVENTS
    from kiln_core.db import utcnow
    from kiln_core.outbox import OutboxEvent as Outbox

    ping = PING_EVENTS["annotation"]
    async with runtime.db.transaction() as session:
        for k in range(n):
            data = ping(ping_id=f"scale-{k}", origin="annotation", sent_at=utcnow())
            await runtime.emit(session, data, subject="scale")
    stop = asyncio.Event()
    relay = asyncio.create_task(runtime.run_relay(stop))

    try:
        while True:
            async with runtime.db.session() as session:
                left = (
                    await session.execute(
                        select(func.count())
                        .select_from(Outbox)
                        .where(Outbox.published_at.is_(None))  # type: ignore[union-attr]
                    )
                ).scalar_one()
            if left == 0:
                return n
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await relay


async def drop(settings: Settings, store: str) -> None:
    if store == "embedded":
        return
    from sqlalchemy import text

    from kiln_core.db import Database

    db = Database(settings.database_url, schema="public")
    async with db.engine.begin() as conn:
        for name in ("dataset", "annotation"):
            await conn.execute(
                text(f'DROP SCHEMA IF EXISTS "{settings.db_schema_prefix}{name}" CASCADE')
            )
    await db.dispose()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    images = pngs(args.distinct)
    per_size: dict[int, dict[str, float]] = {}
    for n in sizes:
        log(f"size {n:,}")
        per_size[n] = await one_size(n, args, images)
        log("  " + ", ".join(f"{k} {v:.4g}" for k, v in per_size[n].items()))
    out: dict[str, Any] = {"sizes": sizes, "store": args.store}
    for op in OPS:
        times = [per_size[n][op] for n in sizes]
        for n, t in zip(sizes, times, strict=True):
            out[f"{op}_{n}_ms"] = round(t * 1000, 3)
        out[f"{op}_exponent"] = growth_exponent(sizes, times)
    for n in sizes:
        out[f"lease_p99_{n}_ms"] = round(per_size[n]["lease_p99"] * 1000, 3)
        out[f"export_items_per_s_{n}"] = round(per_size[n]["export_items_per_s"], 1)
        out[f"relay_events_per_s_{n}"] = round(per_size[n]["relay_events_per_s"], 1)
    exponents = [v for k, v in out.items() if k.endswith("_exponent") and v is not None]
    out["max_exponent"] = max(exponents) if exponents else None
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--store", choices=("embedded", "stack"), default="embedded")
    parser.add_argument("--leases", type=int, default=50)
    parser.add_argument("--distinct", type=int, default=500, help="distinct generated images")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args()))))
