"""Archive imports through the API: formats, per-item problems, unsafe archives, exports."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import httpx

from kiln_core.service import ServiceRuntime
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import make_dataset
from tests.support.apps import wait_job

Service = tuple[httpx.AsyncClient, ServiceRuntime]


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


async def start_import(
    client: httpx.AsyncClient, ds: str, archive: bytes, fmt: str, name: str = "data.zip"
) -> httpx.Response:
    return await client.post(
        f"/v1/datasets/{ds}/imports",
        params={"format": fmt},
        files={"file": (name, archive, "application/zip")},
    )


async def test_imagefolder_import_reports_bad_items_and_creates_a_version(
    dataset_service: Service,
) -> None:
    client, runtime = dataset_service
    ds = (await make_dataset(client))["id"]
    archive = zip_of(
        {
            "train/cat/1.png": png((200, 10, 10)),
            "train/cat/2.png": png((210, 10, 10)),
            "train/dog/3.png": png((10, 10, 200)),
            "val/dog/4.png": png((10, 20, 200)),
            "val/dog/broken.png": png((1, 1, 1))[:30],
            "__MACOSX/._junk": b"junk",
        }
    )
    r = await start_import(client, ds, archive, "imagefolder")
    assert r.status_code == 202, r.text
    assert r.json()["status_url"] == f"/v1/imports/{r.json()['import_id']}"
    job = await wait_job(client, r.json()["status_url"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0
    result = job["result"]
    assert result["items_imported"] == 4 and result["version"] == 1
    assert [p["item"] for p in result["problems"]] == ["val/dog/broken.png"]
    version = (await client.get(f"/v1/datasets/{ds}/versions/1")).json()
    assert version["stats"]["items_per_label"] == {"cat": 2, "dog": 2}
    assert version["stats"]["items_per_split"] == {"train": 3, "val": 1}
    assert version["lineage"]["import_id"] == job["id"]
    assert not await runtime.store.exists(f"imports/{job['id']}/archive")  # cleaned up


async def test_unsafe_archives_are_refused_and_nothing_is_written(dataset_service: Service) -> None:
    client, runtime = dataset_service
    ds = (await make_dataset(client))["id"]
    before = await runtime.store.list()
    slip = zip_of({"ok.png": png((1, 2, 3)), "../../evil.png": png((3, 2, 1))})
    r = await start_import(client, ds, slip, "imagefolder")
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["kind"] == "path-traversal"

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        link = tarfile.TarInfo("images/link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    r = await start_import(client, ds, buf.getvalue(), "imagefolder", "data.tar.gz")
    assert r.status_code == 422 and r.json()["kind"] == "symlink"

    bomb = io.BytesIO()
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("images/zeros.png", "w") as f,
    ):
        for _ in range(64):  # 64 MiB of zeros deflate to about 64 KiB: a ratio near 1000
            f.write(bytes(1024 * 1024))
    r = await start_import(client, ds, bomb.getvalue(), "imagefolder")
    assert r.status_code == 422 and r.json()["kind"] == "compression-ratio"

    r = await start_import(client, ds, b"not an archive at all", "imagefolder")
    assert r.status_code == 422 and r.json()["kind"] == "not-an-archive"
    assert await runtime.store.list() == before
    jobs = (await client.get("/v1/jobs", params={"dataset_id": ds})).json()
    assert jobs["total"] == 0


async def test_export_streams_jsonl_and_zip_formats(dataset_service: Service) -> None:
    client, _ = dataset_service
    ds = (await make_dataset(client))["id"]
    archive = zip_of({f"cls{i % 2}/img{i}.png": png((i * 20, 0, 0)) for i in range(6)})
    job = await wait_job(
        client, (await start_import(client, ds, archive, "imagefolder")).json()["status_url"]
    )
    assert job["status"] == "succeeded", job
    r = await client.get(f"/v1/datasets/{ds}/versions/1/export", params={"format": "jsonl"})
    assert r.status_code == 200 and len(r.text.splitlines()) == 6
    r = await client.get(f"/v1/datasets/{ds}/versions/1/export", params={"format": "imagefolder"})
    assert r.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert sum(n.endswith(".png") for n in names) == 6
    r = await client.get(f"/v1/datasets/{ds}/versions/1/export", params={"format": "coco"})
    coco_name = next(
        n for n in zipfile.ZipFile(io.BytesIO(r.content)).namelist() if n.endswith(".json")
    )
    coco = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read(coco_name))
    assert len(coco["images"]) == 6
    bad = await client.get(f"/v1/datasets/{ds}/versions/1/export", params={"format": "psd"})
    assert bad.status_code == 422


async def test_quality_and_augmentation_jobs(dataset_service: Service) -> None:
    client, _ = dataset_service
    ds = (await make_dataset(client))["id"]
    red = png((200, 10, 10), (40, 30))
    archive = zip_of({"a/1.png": red, "a/2.png": red, "b/3.png": png((10, 10, 200), (40, 30))})
    job = await wait_job(
        client, (await start_import(client, ds, archive, "imagefolder")).json()["status_url"]
    )
    assert job["status"] == "succeeded", job
    q = await client.post(f"/v1/datasets/{ds}/versions/1/quality")
    assert q.status_code == 202
    assert (await wait_job(client, q.json()["status_url"]))["status"] == "succeeded"
    report = (await client.get(f"/v1/datasets/{ds}/versions/1/quality")).json()
    assert report["exact_duplicates"][0]["item_ids"] == ["a/1.png", "a/2.png"]
    recipe = {
        "steps": [{"strategy": "horizontal_flip", "probability": 1.0, "params": {}}],
        "copies_per_item": 2,
    }
    bad = await client.post(
        f"/v1/datasets/{ds}/versions/1/augmentations",
        json={"recipe": {"steps": [{"strategy": "melt", "params": {}}]}},
    )
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    a = await client.post(
        f"/v1/datasets/{ds}/versions/1/augmentations", json={"recipe": recipe, "seed": 3}
    )
    done = await wait_job(client, a.json()["status_url"])
    assert done["status"] == "succeeded", done
    v2 = (await client.get(f"/v1/datasets/{ds}/versions/{done['result']['version']}")).json()
    assert v2["item_count"] == 9 and v2["lineage"]["source"] == "augmentation"
    assert v2["lineage"]["recipe"]["copies_per_item"] == 2 and v2["lineage"]["seed"] == 3
