"""Drafts: a version being assembled from uploads, then committed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import VersionLineage
from kiln_core.db import INT32_MAX
from kiln_core.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from kiln_core.http import get_runtime
from kiln_core.manifest import Category, ManifestItem
from kiln_core.storage import SMALL_BLOB, SpooledBlob, blob_key
from kiln_dataset.api.common import Writer, version_out
from kiln_dataset.api.media import warm_previews
from kiln_dataset.lifecycle import record_blobs, store_blobs
from kiln_dataset.media import UnreadableImage, extension_matches, sniff, verify_image
from kiln_dataset.models import Blob, DatasetStatus, Draft, DraftItem, VersionPublic
from kiln_dataset.quotas import check_storage
from kiln_dataset.versions import (
    copy_into_draft,
    create_version,
    get_dataset,
    get_version,
    latest_version,
)

router = APIRouter(prefix="/v1", tags=["datasets"])

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_FILES_PER_REQUEST = 2000
UPLOAD_CONCURRENCY = 8


class DraftCreate(BaseModel):
    base_version: int | None = PydField(
        default=None, ge=1, le=INT32_MAX, description="start from a version"
    )


class DraftPublic(BaseModel):
    id: str
    dataset_id: str
    base_version: int | None
    status: str
    item_count: int


class UploadResult(BaseModel):
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]


async def _open_draft(session: AsyncSession, dataset_id: str, draft_id: str) -> Draft:
    draft = await session.get(Draft, draft_id)
    if draft is None or draft.dataset_id != dataset_id:
        raise NotFound(f"no draft {draft_id!r} in dataset {dataset_id!r}")
    if draft.status != "open":
        raise Conflict(f"draft {draft_id!r} is {draft.status}")
    return draft


async def _draft_count(session: AsyncSession, draft_id: str) -> int:
    return int(
        (
            await session.exec(
                select(func.count()).select_from(DraftItem).where(DraftItem.draft_id == draft_id)
            )
        ).one()
    )


@router.post("/datasets/{dataset_id}/drafts", status_code=201, response_model=DraftPublic)
async def create_draft(
    dataset_id: str, body: DraftCreate, request: Request, who: Writer
) -> DraftPublic:
    """Open a draft; uploads land in it and committing it creates a new version."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        dataset = await get_dataset(session, dataset_id)
        if dataset.status != DatasetStatus.active:
            raise Conflict(f"dataset is {dataset.status}")
        draft = Draft(dataset_id=dataset_id, base_version=body.base_version, created_by=who.subject)
        session.add(draft)
        count = 0
        if body.base_version is not None:
            base = await get_version(session, dataset_id, body.base_version)
            await session.flush()  # the draft's row before its items' rows
            count = await copy_into_draft(
                session, runtime.store, draft.id, base, postgres=runtime.db.is_postgres
            )
    return DraftPublic(
        id=draft.id,
        dataset_id=dataset_id,
        base_version=draft.base_version,
        status=draft.status,
        item_count=count,
    )


def _parse_label_map(raw: str | None) -> dict[str, list[Any]]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValidationFailed(f"labels: not JSON ({exc})", field="labels") from None
    if not isinstance(value, dict):
        raise ValidationFailed(
            "labels: must map file names to a label or list of labels", field="labels"
        )
    out: dict[str, list[Any]] = {}
    for name, labels in value.items():
        labels = labels if isinstance(labels, list) else [labels]
        out[name] = [{"type": "class", "label": x} if isinstance(x, str) else x for x in labels]
    return out


@router.post(
    "/datasets/{dataset_id}/drafts/{draft_id}/items",
    response_model=UploadResult,
    summary="Upload files into a draft (multipart, streamed to the object store)",
)
async def upload_items(
    dataset_id: str,
    draft_id: str,
    request: Request,
    _who: Writer,
    files: Annotated[list[UploadFile], File(description="image files")],
    labels: Annotated[str | None, Form(description='JSON: {"file.jpg": "cat"}')] = None,
    split: Annotated[Literal["train", "val", "test"] | None, Form()] = None,
) -> UploadResult:
    """Each file is checked on its own: a file whose bytes are not the image type its name
    claims, or that cannot be decoded, is rejected with a reason; the others are kept.

    Files are checked and stored concurrently; the database work is one transaction for the
    blobs (recorded before their bytes land, so a purge never races them) and one for the
    draft items."""
    runtime = get_runtime(request)
    if len(files) > MAX_FILES_PER_REQUEST:
        raise PayloadTooLarge(f"at most {MAX_FILES_PER_REQUEST} files per request")
    label_map = _parse_label_map(labels)
    async with runtime.db.session() as session:
        await _open_draft(session, dataset_id, draft_id)
    limit = asyncio.Semaphore(UPLOAD_CONCURRENCY)

    async def check(upload: UploadFile) -> tuple[ManifestItem, SpooledBlob] | dict[str, Any]:
        name = upload.filename or "unnamed"
        if not _plain_upload_name(name):
            return {
                "file": name,
                "reason": "file name must not be a path that climbs or is absolute",
            }
        async with limit:
            head = await upload.read(64)
            await upload.seek(0)
            media_type = sniff(head)
            if media_type is None:
                return {"file": name, "reason": "not a supported image type"}
            if not extension_matches(name, media_type):
                return {
                    "file": name,
                    "reason": f"file name does not match its bytes ({media_type})",
                }
            try:
                # Small files are already in memory (Starlette spools only large ones to disk).
                small = upload.size is not None and upload.size <= SMALL_BLOB
                source = await upload.read() if small else upload.file
                spooled = await runtime.store.spool(source, max_bytes=MAX_FILE_BYTES)
            except PayloadTooLarge:
                return {"file": name, "reason": f"larger than {MAX_FILE_BYTES} bytes"}
            try:
                # Fully decoded, so a truncated or corrupt body is refused now, not in a version.
                width, height = await asyncio.to_thread(
                    verify_image, spooled.data or Path(spooled.path)
                )
                item = ManifestItem(
                    item_id=name,
                    blob=spooled.sha256,
                    media_type=media_type,
                    size_bytes=spooled.size,
                    width=width,
                    height=height,
                    source_name=name,
                    split=split,
                    labels=label_map.get(name, []),
                )
            except (UnreadableImage, ValueError) as exc:
                if spooled.path:
                    _discard(spooled.path)
                reason = (
                    f"unreadable image: {exc}"
                    if isinstance(exc, UnreadableImage)
                    else (f"labels: {exc}")
                )
                return {"file": name, "reason": reason}
            return item, spooled

    checked = await asyncio.gather(*(check(f) for f in files))
    rejected = [c for c in checked if isinstance(c, dict)]
    good = [c for c in checked if not isinstance(c, dict)]
    if good:
        await store_blobs(runtime, [(spooled, item.media_type) for item, spooled in good])
        async with runtime.db.transaction() as session:
            await _open_draft(session, dataset_id, draft_id)
            await check_storage(session, dataset_id, [item for item, _ in good])
            await _put_draft_items(session, draft_id, [item for item, _ in good])
        warm_previews(runtime.store, [item for item, _ in good])
    accepted = [
        {
            "file": item.item_id,
            "item_id": item.item_id,
            "blob": item.blob,
            "size_bytes": item.size_bytes,
            "width": item.width,
            "height": item.height,
        }
        for item, _ in good
    ]
    return UploadResult(accepted=accepted, rejected=rejected)


class StoredBlob(NamedTuple):
    sha256: str
    size: int


class BlobItem(BaseModel):
    item_id: str = PydField(min_length=1, max_length=1000)
    blob: str = PydField(pattern="^[0-9a-f]{64}$", description="SHA-256 of the file's bytes")
    split: Literal["train", "val", "test"] | None = None
    labels: list[dict[str, Any]] = PydField(default_factory=list)


class BlobItems(BaseModel):
    items: list[BlobItem] = PydField(max_length=MAX_FILES_PER_REQUEST)


class BlobItemsResult(BaseModel):
    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    missing: list[str] = PydField(description="blobs this service does not hold: upload them")


@router.post(
    "/datasets/{dataset_id}/drafts/{draft_id}/blob-items",
    response_model=BlobItemsResult,
    summary="Add items by content hash, for blobs the service already stores",
)
async def add_blob_items(
    dataset_id: str, draft_id: str, body: BlobItems, request: Request, _who: Writer
) -> BlobItemsResult:
    """What makes uploads resumable: a client names each file by its SHA-256; items whose
    bytes are already stored join the draft without being sent again, and the answer lists
    the hashes still ``missing`` (upload those files as usual)."""
    runtime = get_runtime(request)
    async with runtime.db.session() as session:
        await _open_draft(session, dataset_id, draft_id)
        shas = sorted({item.blob for item in body.items})
        known = {
            row.sha256: row
            for row in (
                await session.exec(select(Blob).where(col(Blob.sha256).in_(shas), col(Blob.stored)))
            ).all()
        }
    rejected: list[dict[str, Any]] = []
    good: list[ManifestItem] = []
    sizes: dict[str, tuple[int, int]] = {}
    for ref in body.items:
        blob = known.get(ref.blob)
        if blob is None:
            continue
        if not _plain_upload_name(ref.item_id):
            rejected.append({"file": ref.item_id, "reason": "file name must be a plain path"})
            continue
        if not extension_matches(ref.item_id, blob.media_type):
            reason = f"file name does not match its bytes ({blob.media_type})"
            rejected.append({"file": ref.item_id, "reason": reason})
            continue
        if ref.blob not in sizes:
            data = await runtime.store.read_bytes(blob_key(ref.blob))
            sizes[ref.blob] = await asyncio.to_thread(verify_image, data)
        width, height = sizes[ref.blob]
        try:
            # Validated from plain data: the labels are checked as an upload's are.
            good.append(
                ManifestItem.model_validate(
                    {
                        "item_id": ref.item_id,
                        "blob": ref.blob,
                        "media_type": blob.media_type,
                        "size_bytes": blob.size_bytes,
                        "width": width,
                        "height": height,
                        "source_name": ref.item_id,
                        "split": ref.split,
                        "labels": ref.labels,
                    }
                )
            )
        except ValueError as exc:
            rejected.append({"file": ref.item_id, "reason": f"labels: {exc}"})
    if good:
        async with runtime.db.transaction() as session:
            await _open_draft(session, dataset_id, draft_id)
            # Seen again now, so a purge running meanwhile keeps these blobs.
            seen = {i.blob: known[i.blob] for i in good}.values()
            await record_blobs(
                session, [(StoredBlob(b.sha256, b.size_bytes), b.media_type) for b in seen]
            )
            await check_storage(session, dataset_id, good)
            await _put_draft_items(session, draft_id, good)
    accepted = [
        {"file": i.item_id, "item_id": i.item_id, "blob": i.blob, "size_bytes": i.size_bytes}
        for i in good
    ]
    missing = sorted({ref.blob for ref in body.items} - set(known))
    return BlobItemsResult(accepted=accepted, rejected=rejected, missing=missing)


async def _put_draft_items(session: AsyncSession, draft_id: str, items: list[ManifestItem]) -> None:
    """Add items to a draft, replacing those with the same item id."""
    ids = [item.item_id for item in items]
    current = {
        row.item_id: row
        for row in (
            await session.exec(
                select(DraftItem).where(
                    DraftItem.draft_id == draft_id, col(DraftItem.item_id).in_(ids)
                )
            )
        ).all()
    }
    for item in items:
        record = item.model_dump(mode="json", exclude_none=True)
        existing = current.get(item.item_id)
        if existing is not None:
            existing.blob, existing.record = item.blob, record
            session.add(existing)
        else:
            session.add(
                DraftItem(draft_id=draft_id, item_id=item.item_id, blob=item.blob, record=record)
            )


def _plain_upload_name(name: str) -> bool:
    """Whether an uploaded file's name is safe as an item id: relative, no '..' component, no
    backslash or control character (exports and downstream tools treat ids as paths)."""
    if not name or name.startswith("/") or "\\" in name:
        return False
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return False
    return ".." not in name.split("/")


def _discard(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@router.delete("/datasets/{dataset_id}/drafts/{draft_id}/items/{item_id:path}", status_code=204)
async def remove_draft_item(
    dataset_id: str, draft_id: str, item_id: str, request: Request, _who: Writer
) -> None:
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        await _open_draft(session, dataset_id, draft_id)
        row = await session.get(DraftItem, (draft_id, item_id))
        if row is None:
            raise NotFound(f"no item {item_id!r} in draft {draft_id!r}")
        await session.delete(row)


class CommitRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"message": "first 500 photos"}]})

    message: str = PydField(default="", max_length=2000, description="the version's message")


@router.post(
    "/datasets/{dataset_id}/drafts/{draft_id}/commit", status_code=201, response_model=VersionPublic
)
async def commit_draft(
    dataset_id: str, draft_id: str, body: CommitRequest, request: Request, who: Writer
) -> VersionPublic:
    """Turn the draft into the next immutable version of the dataset."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        draft = await _open_draft(session, dataset_id, draft_id)
        rows = (
            await session.exec(
                select(DraftItem)
                .where(DraftItem.draft_id == draft_id)
                .order_by(col(DraftItem.item_id))
            )
        ).all()
        if not rows:
            raise ValidationFailed("the draft has no items")
        items = [ManifestItem.model_validate(r.record) for r in rows]
        parent = (
            await get_version(session, dataset_id, draft.base_version)
            if draft.base_version
            else await latest_version(session, dataset_id)
        )
        categories = [Category.model_validate(c) for c in (parent.categories if parent else [])]
        version = await create_version(
            session,
            runtime,
            dataset_id,
            items,
            parent=parent,
            categories=categories,
            lineage=VersionLineage(
                source="upload",
                parent_version=parent.number if parent else None,
                parent_version_id=parent.id if parent else None,
            ),
            created_by=who.subject,
            message=body.message,
        )
        draft.status = "committed"
        session.add(draft)
        return await version_out(session, version)
