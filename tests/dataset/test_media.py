"""An item's image and thumbnail, by item and by blob id: bytes, caching headers, access."""

from __future__ import annotations

import hashlib
import io

import httpx
from PIL import Image

from kiln_core.auth import issue_token
from kiln_core.service import ServiceRuntime
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import commit, make_dataset, upload

Service = tuple[httpx.AsyncClient, ServiceRuntime]


async def one_item_version(client: httpx.AsyncClient) -> tuple[str, bytes]:
    ds = await make_dataset(client, "media")
    picture = png((200, 10, 10), (640, 480))
    draft = await upload(client, ds["id"], {"red.png": picture})
    await commit(client, ds["id"], draft["draft"])
    return ds["id"], picture


async def test_item_image_by_item_and_by_blob_with_immutable_caching(
    dataset_service: Service,
) -> None:
    client, _ = dataset_service
    ds, picture = await one_item_version(client)
    sha = hashlib.sha256(picture).hexdigest()
    by_item = await client.get(f"/v1/datasets/{ds}/versions/1/items/red.png/image")
    assert by_item.status_code == 200, by_item.text
    assert by_item.content == picture and by_item.headers["content-type"] == "image/png"
    assert by_item.headers["etag"] == f'"{sha}"'
    assert "immutable" in by_item.headers["cache-control"]
    by_blob = await client.get(f"/v1/datasets/{ds}/blobs/{sha}")
    assert by_blob.content == picture
    again = await client.get(
        f"/v1/datasets/{ds}/blobs/{sha}", headers={"if-none-match": f'"{sha}"'}
    )
    assert again.status_code == 304 and again.content == b""


async def test_thumbnail_is_small_cached_and_stored_once(dataset_service: Service) -> None:
    client, runtime = dataset_service
    ds, picture = await one_item_version(client)
    sha = hashlib.sha256(picture).hexdigest()
    thumb = await client.get(f"/v1/datasets/{ds}/versions/1/items/red.png/thumbnail?size=128")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert image.size == (128, 96)
    assert thumb.headers["etag"] == f'"{sha}-128"'
    stored = await runtime.store.list("thumbnails/")
    assert len(stored) == 1
    by_blob = await client.get(f"/v1/datasets/{ds}/blobs/{sha}/thumbnail?size=100")
    assert by_blob.content == thumb.content  # rounded up to the 128 size, read from the store
    assert len(await runtime.store.list("thumbnails/")) == 1


async def test_media_checks_access_like_the_item(dataset_service: Service) -> None:
    client, runtime = dataset_service
    ds, picture = await one_item_version(client)
    sha = hashlib.sha256(picture).hexdigest()
    other = await make_dataset(client, "other")
    # A blob of another dataset is not reachable through this one, nor an unknown one.
    assert (await client.get(f"/v1/datasets/{other['id']}/blobs/{sha}")).status_code == 404
    missing = await client.get(f"/v1/datasets/{ds}/blobs/{'0' * 64}/thumbnail")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/datasets/{ds}/blobs/not-a-hash")).status_code == 422
    gone = await client.get(f"/v1/datasets/{ds}/versions/1/items/nope.png/image")
    assert gone.status_code == 404
    anonymous = await client.get(f"/v1/datasets/{ds}/blobs/{sha}", headers={"authorization": ""})
    assert anonymous.status_code == 401
    member = issue_token("s", ["viewer"], runtime.settings, teams=["default"])
    viewer = await client.get(
        f"/v1/datasets/{ds}/blobs/{sha}", headers={"authorization": f"Bearer {member}"}
    )
    assert viewer.status_code == 200
    # The same viewer role in another team: the dataset's images are as absent as a missing one.
    stranger = issue_token("t", ["viewer"], runtime.settings, teams=["elsewhere"])
    other = await client.get(
        f"/v1/datasets/{ds}/blobs/{sha}", headers={"authorization": f"Bearer {stranger}"}
    )
    assert other.status_code == 404


async def test_a_large_uploads_preview_is_made_ahead_and_a_small_ones_is_not(
    dataset_service: Service,
) -> None:
    """The labelling workspace draws a large image from its 960-pixel preview first; the
    upload makes that preview on its own, so the first annotator does not wait for it."""
    from tests.conftest import eventually

    client, runtime = dataset_service
    ds = (await make_dataset(client, "previews"))["id"]
    large, small = png((10, 200, 10), (1600, 1200)), png((10, 10, 200), (640, 480))
    await upload(client, ds, {"large.png": large, "small.png": small})
    key = f"thumbnails/960/{hashlib.sha256(large).hexdigest()[:2]}"

    async def made() -> bool:
        return any(k.startswith(key) for k in await runtime.store.list("thumbnails/"))

    await eventually(made, timeout_s=30)
    stored = await runtime.store.list("thumbnails/")
    assert len(stored) == 1  # the small one's is made only if asked for
    with Image.open(io.BytesIO(await runtime.store.read_bytes(stored[0]))) as image:
        assert image.size == (960, 720)
