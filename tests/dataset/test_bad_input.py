"""Bad input and leftovers, on the embedded defaults and on PostgreSQL: numbers past 64 bits,
nulls, timestamps without an offset, truncated images, failed imports' archives, 405s."""

from __future__ import annotations

import io
import re
import tarfile

import httpx
import numpy as np
from PIL import Image

from kiln_core.service import ServiceRuntime
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import commit, make_dataset, upload
from tests.dataset.test_imports import start_import, zip_of
from tests.support.apps import wait_job

Service = tuple[httpx.AsyncClient, ServiceRuntime]
PAST_INT64 = str(2**63)
PROBLEM = "application/problem+json"
# RFC 3339 date-time: the offset (Z or ±hh:mm) is not optional.
DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


async def test_numbers_past_64_bits_are_refused_with_a_problem(dataset_service: Service) -> None:
    client, _ = dataset_service
    ds = (await make_dataset(client))["id"]
    for url, params in [
        (f"/v1/datasets/{ds}/versions/{PAST_INT64}", {}),
        (f"/v1/datasets/{ds}/versions/{PAST_INT64}/items", {}),
        (f"/v1/datasets/{ds}/versions", {"offset": PAST_INT64}),
        ("/v1/jobs", {"offset": PAST_INT64}),
        ("/v1/datasets", {"offset": PAST_INT64}),
    ]:
        r = await client.get(url, params=params)
        assert r.status_code == 422, (url, r.status_code, r.text)
        assert r.headers["content-type"] == PROBLEM


async def test_patch_with_null_for_a_field_that_cannot_be_empty_is_refused(
    dataset_service: Service,
) -> None:
    client, _ = dataset_service
    ds = await make_dataset(client, tags=["a"], source_channel="line-1")
    for body in ({"tags": None}, {"description": None}, {"tags": [""]}, {"tags": ["x" * 101]}):
        r = await client.patch(f"/v1/datasets/{ds['id']}", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == PROBLEM
    unchanged = (await client.get(f"/v1/datasets/{ds['id']}")).json()
    assert unchanged["tags"] == ["a"] and unchanged["description"] == ds["description"]
    # An optional field takes null to clear it.
    cleared = await client.patch(f"/v1/datasets/{ds['id']}", json={"source_channel": None})
    assert cleared.status_code == 200 and cleared.json()["source_channel"] is None


async def test_every_timestamp_read_back_carries_its_offset(dataset_service: Service) -> None:
    client, _ = dataset_service
    ds = (await make_dataset(client))["id"]
    await commit(client, ds, (await upload(client, ds, {"a.png": png((1, 2, 3))}))["draft"])
    await client.patch(f"/v1/datasets/{ds}", json={"description": "changed"})
    stamps: list[str] = []
    dataset = (await client.get(f"/v1/datasets/{ds}")).json()
    stamps += [dataset["created_at"], dataset["updated_at"]]
    listed = (await client.get("/v1/datasets")).json()["items"][0]
    stamps += [listed["created_at"], listed["updated_at"]]
    stamps.append((await client.get(f"/v1/datasets/{ds}/versions/1")).json()["created_at"])
    r = await client.delete(f"/v1/datasets/{ds}", params={"retention_days": 1})
    stamps += [r.json()["deleted_at"], r.json()["purge_after"]]
    job = (await client.post("/v1/purge", json={"grace_minutes": 60})).json()
    finished = await wait_job(client, job["status_url"])
    stamps += [finished["created_at"], finished["updated_at"]]
    assert stamps and all(DATE_TIME.match(s) for s in stamps), stamps


def noisy_jpeg(size: tuple[int, int] = (96, 64)) -> bytes:
    pixels = np.random.default_rng(1).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return buf.getvalue()


async def test_truncated_jpeg_is_refused_by_a_draft_upload(dataset_service: Service) -> None:
    client, _ = dataset_service
    ds = (await make_dataset(client))["id"]
    whole = noisy_jpeg()
    cut = whole[: len(whole) * 2 // 3]  # header intact, body cut short
    result = await upload(client, ds, {"whole.jpg": whole, "cut.jpg": cut})
    assert [a["file"] for a in result["accepted"]] == ["whole.jpg"]
    (rejected,) = result["rejected"]
    assert rejected["file"] == "cut.jpg" and "truncated" in rejected["reason"]


async def test_failed_import_keeps_nothing_and_purge_clears_leftovers(
    dataset_service: Service,
) -> None:
    client, runtime = dataset_service
    ds = (await make_dataset(client))["id"]
    # A safe archive with no image in it: accepted, then the import fails.
    r = await start_import(client, ds, zip_of({"notes.txt": b"no images here"}), "auto")
    assert r.status_code == 202, r.text
    job = await wait_job(client, r.json()["status_url"])
    assert job["status"] == "failed", job
    key = f"imports/{job['id']}/archive"
    assert not await runtime.store.exists(key)
    # An archive a failed import left behind before this was fixed: purge removes it.
    await runtime.store.put(key, b"leftover")
    purge = (await client.post("/v1/purge", json={"grace_minutes": 60})).json()
    done = await wait_job(client, purge["status_url"])
    assert done["status"] == "succeeded" and done["result"]["deleted_archives"] == 1, done
    assert not await runtime.store.exists(key)
    assert await runtime.store.list("imports/") == []


async def test_tar_member_whose_name_is_not_utf8_is_reported_not_fatal(
    dataset_service: Service,
) -> None:
    client, _ = dataset_service
    ds = (await make_dataset(client))["id"]
    buf = io.BytesIO()
    latin1 = b"cat/caf\xe9.png".decode("utf-8", "surrogateescape")
    with tarfile.open(fileobj=buf, mode="w:gz", errors="surrogateescape") as tf:
        for name, data in (("cat/good.png", png((1, 1, 1))), (latin1, png((2, 2, 2)))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    r = await start_import(client, ds, buf.getvalue(), "imagefolder", name="data.tar.gz")
    assert r.status_code == 202, r.text
    job = await wait_job(client, r.json()["status_url"])
    assert job["status"] == "succeeded", job
    assert job["result"]["items_imported"] == 1
    assert [p["kind"] for p in job["result"]["problems"]] == ["bad-name"]


async def test_method_not_allowed_names_every_allowed_method(dataset_service: Service) -> None:
    client, _ = dataset_service
    r = await client.put("/v1/datasets")
    assert r.status_code == 405 and r.headers["content-type"] == PROBLEM
    assert r.headers["allow"] == "GET, POST"
