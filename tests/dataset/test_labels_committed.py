"""annotation's labels.committed event becomes a labelled dataset version, exactly once."""

from __future__ import annotations

import json

import httpx
from sqlmodel import select

from kiln_core.bus import Record
from kiln_core.catalog import LabelsCommitted
from kiln_core.events import new_event
from kiln_core.service import ServiceRuntime
from kiln_dataset.models import DatasetVersion
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import commit, make_dataset, upload

Service = tuple[httpx.AsyncClient, ServiceRuntime]


async def test_labels_commit_creates_a_labelled_version_once(dataset_service: Service) -> None:
    client, runtime = dataset_service
    ds = (await make_dataset(client, task_type="detection"))["id"]
    await commit(
        client,
        ds,
        (await upload(client, ds, {"a.png": png((1, 1, 1)), "b.png": png((2, 2, 2))}))["draft"],
    )
    labels = [
        {"item_id": "a.png", "labels": [{"type": "box", "label": "scratch", "bbox": [1, 2, 5, 6]}]}
    ]
    await runtime.store.put(
        "annotation/commits/c1.jsonl", "\n".join(json.dumps(r) for r in labels).encode()
    )
    event = new_event(
        LabelsCommitted(
            commit_id="c1",
            project_id="p1",
            dataset_id=ds,
            base_version=1,
            manifest_key="annotation/commits/c1.jsonl",
            item_count=1,
        ),
        subject="p1",
    )
    record = Record("kiln.annotation", 0, 0, event.to_bytes(), b"p1")
    await runtime.inbox.handle_record(record)
    await runtime.inbox.handle_record(record)  # redelivered: no second version
    async with runtime.db.session() as session:
        versions = (
            await session.exec(select(DatasetVersion).where(DatasetVersion.dataset_id == ds))
        ).all()
    assert sorted(v.number for v in versions) == [1, 2]
    v2 = (await client.get(f"/v1/datasets/{ds}/versions/2")).json()
    assert v2["labelled_count"] == 1 and v2["parent_version"] == 1
    assert v2["lineage"]["labels_commit_id"] == "c1"
    assert [c["name"] for c in v2["categories"]] == ["scratch"]


async def test_labels_for_unknown_items_are_dead_lettered(dataset_service: Service) -> None:
    client, runtime = dataset_service
    ds = (await make_dataset(client))["id"]
    await commit(client, ds, (await upload(client, ds, {"a.png": png((1, 1, 1))}))["draft"])
    await runtime.store.put(
        "annotation/commits/c2.jsonl", b'{"item_id": "ghost.png", "labels": []}\n'
    )
    event = new_event(
        LabelsCommitted(
            commit_id="c2",
            project_id="p1",
            dataset_id=ds,
            base_version=1,
            manifest_key="annotation/commits/c2.jsonl",
            item_count=1,
        ),
        subject="p1",
    )
    await runtime.inbox.handle_record(Record("kiln.annotation", 0, 0, event.to_bytes(), b"p1"))
    reader = runtime.bus.consumer(["kiln.annotation.dlq"], "test-dlq-reader")
    await reader.start()
    await reader.wait_assigned()
    dlq = []
    for _ in range(50):
        dlq += await reader.poll(timeout_s=0.2)
        if dlq:
            break
    await reader.stop()
    assert len(dlq) == 1 and b"ghost.png" in (dlq[0].header("kiln-dlq-reason") or b"")
    assert (await client.get(f"/v1/datasets/{ds}/versions")).json()["total"] == 1
