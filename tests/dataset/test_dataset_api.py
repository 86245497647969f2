"""The dataset service on the embedded defaults: datasets, uploads, versions, lifecycle."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from kiln_core.service import ServiceRuntime
from kiln_dataset.models import Blob
from tests.dataset.conftest import jpeg, png
from tests.support.apps import wait_job

Service = tuple[httpx.AsyncClient, ServiceRuntime]


async def make_dataset(client: httpx.AsyncClient, name: str = "parts", **extra: object) -> dict:
    body = {"name": name, "task_type": "classification", **extra}
    r = await client.post("/v1/datasets", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def upload(
    client: httpx.AsyncClient,
    ds: str,
    files: dict[str, bytes],
    labels: dict[str, str] | None = None,
) -> dict:
    draft = (await client.post(f"/v1/datasets/{ds}/drafts", json={})).json()
    r = await client.post(
        f"/v1/datasets/{ds}/drafts/{draft['id']}/items",
        files=[("files", (name, data, "application/octet-stream")) for name, data in files.items()],
        data={"labels": json.dumps(labels or {})},
    )
    assert r.status_code == 200, r.text
    return {"draft": draft["id"], **r.json()}


async def commit(client: httpx.AsyncClient, ds: str, draft: str) -> dict:
    r = await client.post(f"/v1/datasets/{ds}/drafts/{draft}/commit", json={"message": "m"})
    assert r.status_code == 201, r.text
    return r.json()


async def test_dataset_create_validate_filter(dataset_service: Service) -> None:
    client, _ = dataset_service
    ds = await make_dataset(
        client,
        "bolts",
        source_channel="line-3",
        usability="training",
        product_standard="non-standard",
        media_format="png",
        tags=["a"],
    )
    assert ds["owner"] == "tester" and ds["latest_version"] is None
    dup = await client.post("/v1/datasets", json={"name": "bolts", "task_type": "detection"})
    assert dup.status_code == 409 and dup.headers["content-type"] == "application/problem+json"
    bad = await client.post("/v1/datasets", json={"name": "x", "task_type": "poetry"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.task_type"
    await make_dataset(client, "nuts", source_channel="line-9")
    page = (await client.get("/v1/datasets", params={"source_channel": "line-3"})).json()
    assert [d["name"] for d in page["items"]] == ["bolts"] and page["total"] == 1
    page = (await client.get("/v1/datasets", params={"limit": 1, "offset": 1})).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    assert (await client.get("/v1/datasets", params={"tag": "a"})).json()["total"] == 1


async def test_upload_rejects_per_item_and_commits_an_immutable_version(
    dataset_service: Service,
) -> None:
    client, runtime = dataset_service
    ds = (await make_dataset(client))["id"]
    files = {
        "red.png": png((255, 0, 0)),
        "blue.jpg": jpeg((0, 0, 255)),
        "liar.jpg": png((0, 255, 0)),  # PNG bytes behind a .jpg name
        "broken.png": png((9, 9, 9))[:40],  # truncated
        "notes.txt": b"hello",
    }
    result = await upload(client, ds, files, labels={"red.png": "red", "blue.jpg": "blue"})
    assert sorted(a["file"] for a in result["accepted"]) == ["blue.jpg", "red.png"]
    reasons = {r["file"]: r["reason"] for r in result["rejected"]}
    assert set(reasons) == {"liar.jpg", "broken.png", "notes.txt"}
    assert "does not match" in reasons["liar.jpg"]
    version = await commit(client, ds, result["draft"])
    assert version["version"] == 1 and version["item_count"] == 2 and version["labelled_count"] == 2
    assert version["stats"]["items_per_label"] == {"blue": 1, "red": 1}
    assert [c["name"] for c in version["categories"]] == ["blue", "red"]
    again = await client.post(f"/v1/datasets/{ds}/drafts/{result['draft']}/commit", json={})
    assert again.status_code == 409
    manifest = (await client.get(f"/v1/datasets/{ds}/versions/1/manifest")).text.splitlines()
    assert [json.loads(line)["item_id"] for line in manifest] == ["blue.jpg", "red.png"]
    items = (
        await client.get(f"/v1/datasets/{ds}/versions/1/items", params={"label": "red"})
    ).json()
    assert items["total"] == 1 and items["items"][0]["width"] == 32


async def test_same_bytes_are_stored_once(dataset_service: Service) -> None:
    client, runtime = dataset_service
    ds = (await make_dataset(client))["id"]
    files = {f"img{i}.png": png((i, 2 * i, 3 * i)) for i in range(20)}
    await commit(client, ds, (await upload(client, ds, files))["draft"])
    renamed = {f"copy{i}.png": png((i, 2 * i, 3 * i)) for i in range(20)}
    await commit(client, ds, (await upload(client, ds, renamed))["draft"])
    blobs = [k for k in await runtime.store.list("blobs/")]
    assert len(blobs) == 20
    async with runtime.db.session() as session:
        from sqlmodel import func, select

        assert (await session.exec(select(func.count()).select_from(Blob))).one() == 20


async def test_versions_diff_split_and_lineage(dataset_service: Service) -> None:
    client, _ = dataset_service
    ds = (await make_dataset(client))["id"]
    files = {f"i{i}.png": png((i, 0, 0)) for i in range(30)}
    labels = {name: ("ok" if i % 3 else "scratch") for i, name in enumerate(files)}
    v1 = await commit(client, ds, (await upload(client, ds, files, labels))["draft"])
    draft = (await client.post(f"/v1/datasets/{ds}/drafts", json={"base_version": 1})).json()
    assert draft["item_count"] == 30
    await client.delete(f"/v1/datasets/{ds}/drafts/{draft['id']}/items/i0.png")
    r = await client.post(
        f"/v1/datasets/{ds}/drafts/{draft['id']}/items",
        files=[
            ("files", ("i1.png", png((1, 0, 0)), "image/png")),
            ("files", ("new.png", png((0, 9, 9)), "image/png")),
        ],
        data={"labels": json.dumps({"i1.png": "scratch", "new.png": "ok"})},
    )
    assert r.status_code == 200
    v2 = await commit(client, ds, draft["id"])
    assert v2["parent_version"] == 1 and v2["lineage"]["source"] == "upload"
    diff = (await client.get(f"/v1/datasets/{ds}/versions/2/diff", params={"against": 1})).json()
    assert diff["added"] == ["new.png"] and diff["removed"] == ["i0.png"]
    assert diff["relabelled"] == ["i1.png"]
    split = await client.post(
        f"/v1/datasets/{ds}/versions/2/splits", json={"ratios": [0.6, 0.2, 0.2], "seed": 7}
    )
    assert split.status_code == 201, split.text
    v3 = split.json()
    assert v3["lineage"] == {
        "source": "split",
        "parent_version": 2,
        "parent_version_id": v2["version_id"],
        "seed": 7,
    }
    assert sum(v3["stats"]["items_per_split"].values()) == 30
    again = (
        await client.post(
            f"/v1/datasets/{ds}/versions/2/splits", json={"ratios": [0.6, 0.2, 0.2], "seed": 7}
        )
    ).json()
    m3 = (await client.get(f"/v1/datasets/{ds}/versions/{v3['version']}/manifest")).text
    m4 = (await client.get(f"/v1/datasets/{ds}/versions/{again['version']}/manifest")).text
    assert m3 == m4  # same seed, same splits
    bad = await client.post(
        f"/v1/datasets/{ds}/versions/2/splits", json={"ratios": [0.9, 0.9, 0.1]}
    )
    assert bad.status_code == 422
    assert v1["version"] == 1


async def test_soft_delete_restore_and_purge_keep_referenced_blobs(
    dataset_service: Service,
) -> None:
    client, runtime = dataset_service
    keep = (await make_dataset(client, "keep"))["id"]
    drop = (await make_dataset(client, "drop"))["id"]
    shared = png((1, 2, 3))
    await commit(client, keep, (await upload(client, keep, {"a.png": shared}))["draft"])
    await commit(
        client,
        drop,
        (await upload(client, drop, {"b.png": shared, "c.png": png((7, 7, 7))}))["draft"],
    )
    r = await client.delete(f"/v1/datasets/{drop}", params={"retention_days": 0})
    assert r.json()["status"] == "deleted"
    assert (await client.get("/v1/datasets")).json()["total"] == 1
    job = (await client.post("/v1/purge", json={"grace_minutes": 0})).json()
    done = await wait_job(client, job["status_url"])
    assert done["status"] == "succeeded", done
    assert done["result"]["deleted_blobs"] == 1  # c.png only; the shared blob is still live
    assert len(await runtime.store.list("blobs/")) == 1
    items = (await client.get(f"/v1/datasets/{keep}/versions/1/items")).json()["items"]
    assert await runtime.store.exists(f"blobs/sha256/{items[0]['blob'][:2]}/{items[0]['blob'][2:]}")
    restore = await client.post(f"/v1/datasets/{drop}/restore")
    assert restore.status_code == 409  # retention already over


async def test_viewer_cannot_write_and_nothing_changes(dataset_service: Service) -> None:
    client, runtime = dataset_service
    from kiln_core.auth import issue_token

    viewer = issue_token("v", ["viewer"], runtime.settings, teams=["default"])
    r = await client.post(
        "/v1/datasets",
        json={"name": "x", "task_type": "detection"},
        headers={"authorization": f"Bearer {viewer}"},
    )
    assert r.status_code == 403
    assert (await client.get("/v1/datasets")).json()["total"] == 0


async def test_uploading_the_same_1000_images_twice_stores_1000_blobs(
    dataset_service: Service,
) -> None:
    import random

    from sqlmodel import func, select

    client, runtime = dataset_service
    ds = (await make_dataset(client))["id"]
    rng = random.Random(42)
    images = {
        f"img{i:04}.png": png((rng.randrange(256), rng.randrange(256), i % 256), (8 + i % 7, 8))
        for i in range(1000)
    }
    assert len(set(images.values())) == 1000
    names = list(images)
    for _round in range(2):
        draft = (await client.post(f"/v1/datasets/{ds}/drafts", json={})).json()["id"]
        for start in range(0, 1000, 250):
            batch = names[start : start + 250]
            r = await client.post(
                f"/v1/datasets/{ds}/drafts/{draft}/items",
                files=[("files", (n, images[n], "image/png")) for n in batch],
            )
            assert r.status_code == 200 and len(r.json()["accepted"]) == 250
        await commit(client, ds, draft)
    assert len(await runtime.store.list("blobs/")) == 1000
    async with runtime.db.session() as session:
        assert (await session.exec(select(func.count()).select_from(Blob))).one() == 1000
    versions = (await client.get(f"/v1/datasets/{ds}/versions")).json()
    assert [v["item_count"] for v in versions["items"]] == [1000, 1000]


async def test_openapi_documents_every_route_with_problem_responses(
    dataset_service: Service,
) -> None:
    client, _ = dataset_service
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/v1/datasets",
        "/v1/datasets/{dataset_id}/imports",
        "/v1/imports/{import_id}",
        "/v1/datasets/{dataset_id}/versions/{version}",
        "/v1/datasets/{dataset_id}/versions/{version}/export",
    ):
        assert path in paths, path
    export = paths["/v1/datasets/{dataset_id}/versions/{version}/export"]["get"]
    assert {p["name"] for p in export["parameters"]} >= {"format"}
    assert "4XX" in paths["/v1/datasets"]["post"]["responses"]


@pytest.mark.parametrize("parsed", [True, False], ids=["manifest-cached", "manifest-cold"])
async def test_a_draft_based_on_a_version_carries_its_items_unchanged(
    dataset_service: Service, parsed: bool
) -> None:
    """The draft's rows are the base manifest's records, whether the service has the manifest
    parsed already or reads it from the store."""
    from kiln_dataset import versions

    client, _ = dataset_service
    ds = (await make_dataset(client))["id"]
    files = {f"c{i}.png": png((i, 5, 0)) for i in range(12)}
    labels = {name: ("ok" if i % 2 else "scratch") for i, name in enumerate(files)}
    await commit(client, ds, (await upload(client, ds, files, labels))["draft"])
    if not parsed:
        versions._MANIFESTS.clear()
    draft = (await client.post(f"/v1/datasets/{ds}/drafts", json={"base_version": 1})).json()
    assert draft["item_count"] == 12
    await commit(client, ds, draft["id"])

    async def items(version: int) -> list[dict[str, Any]]:
        page = await client.get(f"/v1/datasets/{ds}/versions/{version}/items?limit=100")
        return sorted(page.json()["items"], key=lambda i: i["item_id"])

    assert await items(2) == await items(1)
