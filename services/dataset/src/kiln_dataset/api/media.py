"""The bytes behind items: an item's image and a cached thumbnail, by item or by blob id.

Blobs are content-addressed, so an answer never changes for its URL: it carries the blob's
hash as ETag and may be cached for a year (privately: every request is access-checked like
the item it belongs to — the caller must be able to read the dataset, and the blob must be in
one of its live versions).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from PIL import Image
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.auth import Reader
from kiln_core.errors import NotFound
from kiln_core.http import SessionDep, get_runtime
from kiln_core.manifest import ManifestItem
from kiln_core.storage import ObjectNotFound, ObjectStore, blob_key
from kiln_dataset.models import DatasetVersion
from kiln_dataset.versions import get_dataset, get_version, version_items

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["media"])

Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes")]
ThumbSize = Annotated[
    int,
    Query(
        ge=32,
        le=960,
        description="longest side of the thumbnail, in pixels (rounded up to 128, 256, 512 or "
        "960; 960 is the labelling workspace's first rendition of a large image)",
    ),
]
# Content-addressed: the bytes behind a URL never change; only the access check may.
IMMUTABLE = "private, max-age=31536000, immutable"
IMAGE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"image/*": {}}, "description": "the bytes"},
    304: {"description": "the caller's cached copy (If-None-Match) is current"},
}


@dataclass(frozen=True)
class _ManifestIndex:
    """A version's items by id and its blobs' media types: a request for one image looks it up
    instead of scanning (and copying) the whole manifest."""

    items: dict[str, ManifestItem]
    media_types: dict[str, str]


# Indexes of the manifests already read (immutable, like the manifests themselves).
_INDEXES: OrderedDict[tuple[str, str], _ManifestIndex] = OrderedDict()
_INDEXES_KEPT = 64


async def _index(store: ObjectStore, version: DatasetVersion) -> _ManifestIndex:
    key = (store.url, version.manifest_key)
    index = _INDEXES.get(key)
    if index is None:
        items = await version_items(store, version)
        index = _ManifestIndex(
            items={i.item_id: i for i in items}, media_types={i.blob: i.media_type for i in items}
        )
        _INDEXES[key] = index
        while len(_INDEXES) > _INDEXES_KEPT:
            _INDEXES.popitem(last=False)
    else:
        _INDEXES.move_to_end(key)
    return index


def _not_modified(request: Request, etag: str) -> Response | None:
    tags = request.headers.get("if-none-match", "")
    if etag in (t.strip() for t in tags.split(",")) or tags.strip() == "*":
        return Response(status_code=304, headers={"etag": etag, "cache-control": IMMUTABLE})
    return None


async def _blob_in_dataset(
    session: AsyncSession, store: ObjectStore, dataset_id: str, sha256: str
) -> str:
    """The blob's media type, if a live version of the dataset holds it; else NotFound (the
    same answer as for a blob that does not exist, so ids cannot be probed)."""
    await get_dataset(session, dataset_id)
    versions = (
        await session.exec(
            select(DatasetVersion)
            .where(DatasetVersion.dataset_id == dataset_id, DatasetVersion.status == "live")
            .order_by(col(DatasetVersion.number).desc())
        )
    ).all()
    for version in versions:
        media_type = (await _index(store, version)).media_types.get(sha256)
        if media_type is not None:
            return media_type
    raise NotFound(f"dataset {dataset_id!r} holds no blob {sha256}")


async def _item(
    request: Request, session: AsyncSession, dataset_id: str, version: int, item_id: str
) -> ManifestItem:
    row = await get_version(session, dataset_id, version)
    item = (await _index(get_runtime(request).store, row)).items.get(item_id)
    if item is not None:
        return item
    raise NotFound(f"dataset {dataset_id!r} version {version} has no item {item_id!r}")


async def _image(request: Request, sha256: str, media_type: str) -> Response:
    etag = f'"{sha256}"'
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    store = get_runtime(request).store
    return StreamingResponse(
        store.stream(blob_key(sha256)),
        media_type=media_type,
        headers={
            "etag": etag,
            "cache-control": IMMUTABLE,
            "x-content-type-options": "nosniff",
            "content-length": str(await store.size(blob_key(sha256))),
        },
    )


def render_thumbnail(data: bytes, size: int) -> bytes:
    """A JPEG at most ``size`` pixels on its longest side (small images are not enlarged)."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        scale = min(1.0, size / max(width, height))
        # JPEG decodes at a fraction of full size, far faster: the largest fraction that still
        # covers the thumbnail's own box (not size×size, which would decode twice as large).
        image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        picture = image.convert("RGB")
        picture.thumbnail((size, size))
        out = io.BytesIO()
        picture.save(out, format="JPEG", quality=82, optimize=True)
        return out.getvalue()


# A few sizes, so callers cannot fill the store with variants. 960 (not 1024): a 4000-pixel
# photo decodes at a quarter of its size for it, twice as fast as at half.
THUMB_SIZES = (128, 256, 512, 960)


def thumbnail_key(sha256: str, size: int) -> str:
    return f"thumbnails/{size}/{sha256[:2]}/{sha256}.jpg"


async def thumbnail_bytes(store: ObjectStore, sha256: str, size: int) -> bytes:
    """The stored thumbnail, rendered and stored on first use."""
    key = thumbnail_key(sha256, size)
    try:
        return await store.read_bytes(key)
    except (ObjectNotFound, FileNotFoundError):
        original = await store.read_bytes(blob_key(sha256))
        body = await asyncio.to_thread(render_thumbnail, original, size)
        await store.put(key, body)  # the same bytes whoever writes first: a race is harmless
        return body


# The labelling workspace draws a large image from this rendition first (web/src/features/
# labelling/images.ts: PREVIEW_SIZE and wantsPreview say the same).
PREVIEW_SIZE = 960
_warming: set[asyncio.Task[None]] = set()


def warm_previews(store: ObjectStore, items: list[ManifestItem]) -> None:
    """Render the previews of an upload's large images now, one after another, after the
    upload has answered: the first annotator to open one need not wait for it. Best effort;
    a preview not made here is made on first use."""
    large = [i.blob for i in items if max(i.width or 0, i.height or 0) > PREVIEW_SIZE * 1.25]
    if not large:
        return

    async def warm() -> None:
        for blob in dict.fromkeys(large):
            try:
                await thumbnail_bytes(store, blob, PREVIEW_SIZE)
            except Exception:  # noqa: BLE001 - made on first use instead
                log.debug("preview of %s not made ahead", blob, exc_info=True)

    task = asyncio.get_running_loop().create_task(warm())
    _warming.add(task)  # held, so the task is not collected before it ends
    task.add_done_callback(_warming.discard)


async def _thumbnail(request: Request, sha256: str, asked: int) -> Response:
    size = next(s for s in THUMB_SIZES if s >= asked)
    etag = f'"{sha256}-{size}"'
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    body = await thumbnail_bytes(get_runtime(request).store, sha256, size)
    return Response(
        body, media_type="image/jpeg", headers={"etag": etag, "cache-control": IMMUTABLE}
    )


@router.get(
    "/datasets/{dataset_id}/versions/{version}/items/{item_id:path}/image",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def read_item_image(
    dataset_id: str, version: int, item_id: str, request: Request, session: SessionDep, _who: Reader
) -> Response:
    """An item's original image bytes."""
    item = await _item(request, session, dataset_id, version, item_id)
    return await _image(request, item.blob, item.media_type)


@router.get(
    "/datasets/{dataset_id}/versions/{version}/items/{item_id:path}/thumbnail",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def read_item_thumbnail(
    dataset_id: str,
    version: int,
    item_id: str,
    request: Request,
    session: SessionDep,
    _who: Reader,
    size: ThumbSize = 256,
) -> Response:
    """An item's thumbnail (JPEG), made once and kept in the object store."""
    item = await _item(request, session, dataset_id, version, item_id)
    return await _thumbnail(request, item.blob, size)


@router.get(
    "/datasets/{dataset_id}/blobs/{sha256}", response_class=Response, responses=IMAGE_RESPONSES
)
async def read_blob_image(
    dataset_id: str, sha256: Sha256, request: Request, session: SessionDep, _who: Reader
) -> Response:
    """A blob's bytes, by its id (what annotation tasks carry), if the dataset holds it."""
    media_type = await _blob_in_dataset(session, get_runtime(request).store, dataset_id, sha256)
    return await _image(request, sha256, media_type)


@router.get(
    "/datasets/{dataset_id}/blobs/{sha256}/thumbnail",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def read_blob_thumbnail(
    dataset_id: str,
    sha256: Sha256,
    request: Request,
    session: SessionDep,
    _who: Reader,
    size: ThumbSize = 256,
) -> Response:
    """A blob's thumbnail (JPEG), if the dataset holds the blob."""
    await _blob_in_dataset(session, get_runtime(request).store, dataset_id, sha256)
    return await _thumbnail(request, sha256, size)
