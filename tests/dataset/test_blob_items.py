"""Adding items by content hash (what lets a client resume an upload without sending bytes
again): only blobs this service stores join, the rest come back as missing, and bad names
or labels are refused one by one without touching the draft."""

from __future__ import annotations

import hashlib

import httpx

from kiln_core.service import ServiceRuntime
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import make_dataset, upload

Service = tuple[httpx.AsyncClient, ServiceRuntime]


async def test_known_blobs_join_a_draft_by_hash_and_unknown_ones_are_missing(
    dataset_service: Service,
) -> None:
    client, _ = dataset_service
    red, blue = png((200, 0, 0)), png((0, 0, 200))
    first = await make_dataset(client, "first")
    await upload(client, first["id"], {"red.png": red})
    second = await make_dataset(client, "second")
    draft = (await client.post(f"/v1/datasets/{second['id']}/drafts", json={})).json()["id"]
    url = f"/v1/datasets/{second['id']}/drafts/{draft}/blob-items"
    red_sha, blue_sha = hashlib.sha256(red).hexdigest(), hashlib.sha256(blue).hexdigest()
    items = [
        {
            "item_id": "a/red.png",
            "blob": red_sha,
            "split": "train",
            "labels": [{"type": "class", "label": "red"}],
        },
        {"item_id": "blue.png", "blob": blue_sha},
        {"item_id": "../escape.png", "blob": red_sha},
        {"item_id": "red.jpg", "blob": red_sha},
    ]
    answer = await client.post(url, json={"items": items})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [a["item_id"] for a in body["accepted"]] == ["a/red.png"]
    assert body["missing"] == [blue_sha]
    assert sorted(r["file"] for r in body["rejected"]) == ["../escape.png", "red.jpg"]
    # The same request again changes nothing; the committed version has the item by reference.
    assert (await client.post(url, json={"items": items})).json()["accepted"] == body["accepted"]
    version = await client.post(f"/v1/datasets/{second['id']}/drafts/{draft}/commit", json={})
    assert version.status_code == 201, version.text
    listed = (await client.get(f"/v1/datasets/{second['id']}/versions/1/items")).json()["items"]
    assert [(i["item_id"], i["blob"], i["split"], i["width"]) for i in listed] == [
        ("a/red.png", red_sha, "train", 32)
    ]
    assert [(lab["type"], lab["label"]) for lab in listed[0]["labels"]] == [("class", "red")]


async def test_malformed_blob_items_are_refused_as_problems(dataset_service: Service) -> None:
    client, _ = dataset_service
    ds = await make_dataset(client, "bad")
    draft = (await client.post(f"/v1/datasets/{ds['id']}/drafts", json={})).json()["id"]
    url = f"/v1/datasets/{ds['id']}/drafts/{draft}/blob-items"
    for body in (
        {"items": [{"item_id": "x.png", "blob": "not-a-hash"}]},
        {"items": [{"item_id": "", "blob": "0" * 64}]},
        {"items": "x"},
        {},
    ):
        answer = await client.post(url, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    gone = await client.post(
        f"/v1/datasets/{ds['id']}/drafts/no-draft/blob-items", json={"items": []}
    )
    assert gone.status_code == 404
    assert (await client.get(f"/v1/datasets/{ds['id']}/versions")).json()["items"] == []
