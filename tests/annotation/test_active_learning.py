"""Active learning: a flagged prediction's input joins its dataset as a new version and becomes
an urgent annotation task carrying the model's guess; pre-label acceptance is counted."""

from __future__ import annotations

import uuid
from typing import Any

from kiln_core.catalog import PredictionFlagged
from kiln_core.events import new_event
from kiln_core.service import ServiceRuntime
from tests.annotation.test_workflow import as_user
from tests.conftest import eventually
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import commit, make_dataset, upload

SCHEMA = {"kind": "classification", "labels": [{"name": "dark"}, {"name": "light"}]}


async def flag(
    runtime: ServiceRuntime, dataset_id: str, data: bytes, *, prediction_id: str | None = None
) -> str:
    """What serving does for a low-confidence prediction: store the input, announce it."""
    blob = await runtime.store.put_blob(data)
    prediction_id = prediction_id or uuid.uuid4().hex
    event = new_event(
        PredictionFlagged(
            prediction_id=prediction_id,
            endpoint="shades",
            model_name="shades",
            version=3,
            version_id="mv3",
            dataset_id=dataset_id,
            input_key=blob.key,
            input_uri=runtime.store.uri(blob.key),
            content_type="image/png",
            predicted_label="light",
            confidence=0.41,
            threshold=0.6,
        ),
        subject=prediction_id,
    )
    await runtime.bus.ensure_topics([event.topic])
    await runtime.bus.publish(event.topic, event.to_bytes(), event.key.encode())
    return prediction_id


async def project_with_tasks(services: dict[str, Any], images: int) -> tuple[str, str]:
    data, ann = services["dataset"], services["annotation"]
    ds = (await make_dataset(data, task_type="classification"))["id"]
    r = await ann.post(
        "/v1/projects",
        json={"name": f"al-{ds}", "dataset_id": ds, "label_schema": SCHEMA},
    )
    assert r.status_code == 201, r.text
    files = {f"img{i}.png": png((10 * i, 10 * i, 10 * i)) for i in range(images)}
    await commit(data, ds, (await upload(data, ds, files))["draft"])
    pid = r.json()["id"]

    async def tasks_created() -> bool:
        counts = (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"]
        return counts.get("queued") == images

    await eventually(tasks_created, timeout_s=30)
    return ds, pid


async def test_flagged_input_becomes_an_urgent_task_with_the_model_guess(
    services: dict[str, Any],
) -> None:
    ann, data, settings = services["annotation"], services["dataset"], services["settings"]
    runtime: ServiceRuntime = services["annotation_runtime"]
    ds, pid = await project_with_tasks(services, images=2)

    first = await flag(runtime, ds, png((250, 250, 250)))
    await flag(runtime, ds, png((250, 250, 250)), prediction_id=first)  # redelivered
    await flag(runtime, ds, png((240, 240, 240)))

    async def active_version() -> dict[str, Any] | None:
        versions = (await data.get(f"/v1/datasets/{ds}/versions")).json()["items"]
        found = [v for v in versions if v["lineage"]["source"] == "active-learning"]
        return found[0] if found else None

    version = await eventually(active_version, timeout_s=30)
    # both flagged inputs (the redelivered one once) joined the two uploaded images
    assert version["item_count"] == 4 and version["lineage"]["parent_version"] == 1
    items = (await data.get(f"/v1/datasets/{ds}/versions/{version['version']}/items")).json()
    flagged = [i for i in items["items"] if i["item_id"].startswith("flagged/")]
    assert sorted(i["item_id"] for i in flagged)[0].startswith("flagged/")
    assert {i["metadata"]["source"] for i in flagged} == {"active-learning"}

    async def urgent_tasks() -> bool:
        counts = (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"]
        return counts.get("queued") == 4  # the old items were not tasked again

    await eventually(urgent_tasks, timeout_s=30)
    alice = as_user(settings, "alice", "annotator")
    task = (await ann.post(f"/v1/projects/{pid}/lease", headers=alice)).json()
    assert task["source"] == "active-learning" and task["priority"] > 0
    item = task["items"][0]["item_id"]
    assert item.startswith("flagged/")
    suggestion = task["prelabels"][item]
    assert suggestion["labels"] == [{"type": "class", "label": "light"}]
    assert suggestion["confidence"] == 0.41

    r = await ann.post(
        f"/v1/tasks/{task['id']}/submission",
        headers=alice,
        json={"labels": {item: [{"type": "class", "label": "light"}]}},
    )
    assert r.status_code == 200, r.text
    task2 = (await ann.post(f"/v1/projects/{pid}/lease", headers=alice)).json()
    item2 = task2["items"][0]["item_id"]
    assert task2["source"] == "active-learning"
    await ann.post(
        f"/v1/tasks/{task2['id']}/submission",
        headers=alice,
        json={"labels": {item2: [{"type": "class", "label": "dark"}]}},
    )
    stats = (await ann.get(f"/v1/projects/{pid}/prelabels")).json()
    assert (stats["offered"], stats["accepted"], stats["acceptance_rate"]) == (2, 1, 0.5)


async def test_an_input_that_is_not_an_image_is_refused_and_makes_no_version(
    services: dict[str, Any],
) -> None:
    data = services["dataset"]
    runtime: ServiceRuntime = services["annotation_runtime"]
    ds, _pid = await project_with_tasks(services, images=1)
    await flag(runtime, ds, b"not an image at all")
    good = await flag(runtime, ds, png((1, 2, 3)))

    async def versions() -> list[dict[str, Any]] | None:
        found = (await data.get(f"/v1/datasets/{ds}/versions")).json()["items"]
        return found if len(found) == 2 else None

    found = await eventually(versions, timeout_s=30)
    latest = max(found, key=lambda v: v["version"])
    assert latest["item_count"] == 2  # the image joined, the text did not
    items = (await data.get(f"/v1/datasets/{ds}/versions/{latest['version']}/items")).json()
    assert f"flagged/{good}" in {i["item_id"] for i in items["items"]}
