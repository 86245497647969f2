"""REST API of the dataset service, under ``/v1``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, status
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from pydantic import Field as PydField
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.auth import Principal, require_roles
from kiln_core.catalog import VersionLineage
from kiln_core.db import INT32_MAX, MAX_PARAM_INT, aware, utcnow
from kiln_core.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, ValidationFailed
from kiln_core.http import SessionDep, get_runtime
from kiln_core.manifest import Category, Label, ManifestItem
from kiln_core.service import ServiceRuntime
from kiln_dataset import jobs
from kiln_dataset.augment import Recipe
from kiln_dataset.lifecycle import delete_version, store_blobs
from kiln_dataset.models import (
    Dataset,
    DatasetCreate,
    DatasetPublic,
    DatasetStatus,
    DatasetUpdate,
    DatasetVersion,
    Draft,
    DraftItem,
    Job,
    JobPublic,
    Page,
    VersionPublic,
)
from kiln_dataset.runners import validate_archive
from kiln_dataset.versions import (
    create_version,
    diff_versions,
    get_dataset,
    get_version,
    latest_version,
    version_items,
)

router = APIRouter(prefix="/v1", tags=["datasets"])

WRITERS = ("data-engineer", "admin")
READERS = ("viewer", "data-engineer", "ml-engineer", "annotator", "reviewer", "admin")
Writer = Annotated[Principal, require_roles(*WRITERS)]
Reader = Annotated[Principal, require_roles(*READERS)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_PARAM_INT, description="items to skip")]
VersionNumber = Annotated[int, PathParam(ge=1, le=INT32_MAX, description="version number")]
ImportFormat = Literal["coco", "yolo", "voc", "imagefolder", "csv", "jsonl", "auto"]
ExportFormat = Literal["coco", "yolo", "voc", "imagefolder", "jsonl"]

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_FILES_PER_REQUEST = 2000
UPLOAD_CONCURRENCY = 8


async def _datasets_public(session: AsyncSession, datasets: list[Dataset]) -> list[DatasetPublic]:
    """API views of datasets, with every latest version number from one query."""
    latest: dict[str, int] = {}
    if datasets:
        rows = await session.exec(
            select(DatasetVersion.dataset_id, func.max(DatasetVersion.number))
            .where(
                col(DatasetVersion.dataset_id).in_([d.id for d in datasets]),
                DatasetVersion.status == "live",
            )
            .group_by(col(DatasetVersion.dataset_id))
        )
        latest = {dataset_id: number for dataset_id, number in rows.all()}
    return [
        DatasetPublic(**d.model_dump(exclude={"next_version"}), latest_version=latest.get(d.id))
        for d in datasets
    ]


async def _dataset_public(session: AsyncSession, dataset: Dataset) -> DatasetPublic:
    return (await _datasets_public(session, [dataset]))[0]


def _version_public(version: DatasetVersion, parent_number: int | None) -> VersionPublic:
    return VersionPublic(
        dataset_id=version.dataset_id,
        version=version.number,
        version_id=version.id,
        parent_version=parent_number,
        manifest_key=version.manifest_key,
        manifest_sha256=version.manifest_sha256,
        item_count=version.item_count,
        labelled_count=version.labelled_count,
        total_bytes=version.total_bytes,
        categories=[Category.model_validate(c) for c in version.categories or []],
        stats=version.stats or {},
        lineage=version.lineage or {},
        has_quality_report=version.quality is not None,
        message=version.message,
        created_by=version.created_by,
        status=version.status,
        created_at=version.created_at,
    )


async def _version_out(session: AsyncSession, version: DatasetVersion) -> VersionPublic:
    parent_number = None
    if version.parent_id:
        parent = await session.get(DatasetVersion, version.parent_id)
        parent_number = parent.number if parent else None
    return _version_public(version, parent_number)


def job_public(job: Job) -> JobPublic:
    progress = 1.0 if job.status == "succeeded" else (job.done / job.total if job.total else 0.0)
    return JobPublic(
        id=job.id,
        kind=job.kind,
        dataset_id=job.dataset_id,
        status=job.status,
        progress=round(min(progress, 1.0), 4),
        done=job.done,
        total=job.total,
        message=job.message,
        result=job.result,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


# --- datasets -----------------------------------------------------------------------------------


@router.post("/datasets", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic)
async def create_dataset(body: DatasetCreate, request: Request, who: Writer) -> DatasetPublic:
    """Create a dataset. Names are unique among datasets that are not deleted."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        clash = (
            await session.exec(
                select(Dataset).where(Dataset.name == body.name, Dataset.status != "deleted")
            )
        ).first()
        if clash is not None:
            raise Conflict(f"a dataset named {body.name!r} already exists", dataset_id=clash.id)
        dataset = Dataset(**body.model_dump(mode="json"), owner=who.subject)
        session.add(dataset)
    async with runtime.db.session() as session:
        return await _dataset_public(session, dataset)


@router.get("/datasets", response_model=Page[DatasetPublic])
async def list_datasets(
    session: SessionDep,
    _who: Reader,
    limit: Limit = 50,
    offset: Offset = 0,
    task_type: str | None = None,
    source_channel: str | None = None,
    product_standard: str | None = None,
    media_format: str | None = None,
    usability: str | None = None,
    owner: str | None = None,
    tag: Annotated[str | None, Query(description="datasets carrying this tag")] = None,
    q: Annotated[str | None, Query(max_length=200, description="name contains")] = None,
    status_: Annotated[
        Literal["active", "archived", "deleted"] | None, Query(alias="status")
    ] = None,
) -> Page[DatasetPublic]:
    """Datasets, newest first, filtered by task type and tags."""
    query = select(Dataset)
    if status_:
        query = query.where(Dataset.status == status_)
    else:
        query = query.where(Dataset.status != DatasetStatus.deleted)
    for column, value in (
        (Dataset.task_type, task_type),
        (Dataset.source_channel, source_channel),
        (Dataset.product_standard, product_standard),
        (Dataset.media_format, media_format),
        (Dataset.usability, usability),
        (Dataset.owner, owner),
    ):
        if value is not None:
            query = query.where(column == value)
    if q:
        # autoescape: a '%' or '_' in the search is that character, not a wildcard.
        query = query.where(col(Dataset.name).contains(q, autoescape=True))
    rows = list((await session.exec(query.order_by(col(Dataset.created_at).desc()))).all())
    if tag:
        rows = [d for d in rows if tag in (d.tags or [])]
    page = rows[offset : offset + limit]
    return Page(
        items=await _datasets_public(session, page),
        total=len(rows),
        limit=limit,
        offset=offset,
    )


@router.get("/datasets/{dataset_id}", response_model=DatasetPublic)
async def read_dataset(dataset_id: str, session: SessionDep, _who: Reader) -> DatasetPublic:
    dataset = await session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    return await _dataset_public(session, dataset)


@router.patch("/datasets/{dataset_id}", response_model=DatasetPublic)
async def update_dataset(
    dataset_id: str, body: DatasetUpdate, request: Request, _who: Writer
) -> DatasetPublic:
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        dataset = await get_dataset(session, dataset_id)
        for field, value in body.model_dump(exclude_unset=True, mode="json").items():
            setattr(dataset, field, sorted(set(value)) if field == "tags" else value)
        dataset.updated_at = utcnow()
        session.add(dataset)
    async with runtime.db.session() as session:
        return await _dataset_public(session, dataset)


@router.delete("/datasets/{dataset_id}", response_model=DatasetPublic)
async def delete_dataset(
    dataset_id: str,
    request: Request,
    _who: Writer,
    retention_days: Annotated[int, Query(ge=0, le=3650)] = 7,
) -> DatasetPublic:
    """Soft delete: restorable until the retention period ends; a purge then removes it."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        dataset = await get_dataset(session, dataset_id, lock=True)
        dataset.status = DatasetStatus.deleted
        dataset.deleted_at = utcnow()
        dataset.purge_after = dataset.deleted_at + timedelta(days=retention_days)
        session.add(dataset)
    async with runtime.db.session() as session:
        return await _dataset_public(session, dataset)


async def _set_status(request: Request, dataset_id: str, new: str, allowed: set[str]) -> Dataset:
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        dataset = await session.get(Dataset, dataset_id, with_for_update=runtime.db.is_postgres)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id!r}")
        if dataset.status not in allowed:
            raise Conflict(f"dataset is {dataset.status}; cannot become {new}")
        if (
            dataset.status == DatasetStatus.deleted
            and dataset.purge_after
            and (aware(dataset.purge_after) <= utcnow())
        ):
            raise Conflict("the retention period has ended; the dataset is being purged")
        if new == DatasetStatus.active and dataset.status == DatasetStatus.deleted:
            clash = (
                await session.exec(
                    select(Dataset).where(
                        Dataset.name == dataset.name,
                        Dataset.status != "deleted",
                        Dataset.id != dataset.id,
                    )
                )
            ).first()
            if clash is not None:
                raise Conflict(f"another dataset is now named {dataset.name!r}")
        dataset.status = new
        dataset.deleted_at = None
        dataset.purge_after = None
        dataset.updated_at = utcnow()
        session.add(dataset)
    return dataset


@router.post("/datasets/{dataset_id}/archive", response_model=DatasetPublic)
async def archive_dataset(
    dataset_id: str, request: Request, session: SessionDep, _who: Writer
) -> DatasetPublic:
    """Archive: read-only, kept, hidden from default lists only by status filter."""
    dataset = await _set_status(request, dataset_id, DatasetStatus.archived, {"active"})
    return await _dataset_public(session, dataset)


@router.post("/datasets/{dataset_id}/restore", response_model=DatasetPublic)
async def restore_dataset(
    dataset_id: str, request: Request, session: SessionDep, _who: Writer
) -> DatasetPublic:
    """Undo an archive or a soft delete (within its retention period)."""
    dataset = await _set_status(request, dataset_id, DatasetStatus.active, {"archived", "deleted"})
    return await _dataset_public(session, dataset)


# --- drafts and uploads -------------------------------------------------------------------------


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
            for item in await version_items(runtime.store, base):
                session.add(
                    DraftItem(
                        draft_id=draft.id,
                        item_id=item.item_id,
                        blob=item.blob,
                        record=item.model_dump(mode="json", exclude_none=True),
                    )
                )
                count += 1
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
    from kiln_core.storage import SMALL_BLOB, SpooledBlob
    from kiln_dataset.media import UnreadableImage, extension_matches, sniff, verify_image

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
            ids = [item.item_id for item, _ in good]
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
            for item, _ in good:
                record = item.model_dump(mode="json", exclude_none=True)
                existing = current.get(item.item_id)
                if existing is not None:
                    existing.blob, existing.record = item.blob, record
                    session.add(existing)
                else:
                    session.add(
                        DraftItem(
                            draft_id=draft_id, item_id=item.item_id, blob=item.blob, record=record
                        )
                    )
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
    message: str = PydField(default="", max_length=2000)


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
        return await _version_out(session, version)


# --- imports and jobs ---------------------------------------------------------------------------


class Accepted(BaseModel):
    import_id: str | None = None
    job_id: str
    status: str
    status_url: str


@router.post("/datasets/{dataset_id}/imports", status_code=202, response_model=Accepted)
async def import_archive(
    dataset_id: str,
    request: Request,
    who: Writer,
    file: Annotated[UploadFile, File(description="zip or tar.gz archive")],
    format: Annotated[ImportFormat, Query(description="layout inside the archive")] = "auto",
    message: Annotated[str, Form(max_length=2000)] = "",
    mode: Annotated[
        Literal["append", "replace"],
        Query(description="append to the latest version's items, or replace them"),
    ] = "append",
) -> Accepted:
    """Check and store the archive, then import it on a worker; poll ``status_url``."""
    runtime = get_runtime(request)
    async with runtime.db.session() as session:
        dataset = await get_dataset(session, dataset_id)
        if dataset.status != DatasetStatus.active:
            raise Conflict(f"dataset is {dataset.status}")
    job = Job(
        kind="import",
        dataset_id=dataset_id,
        created_by=who.subject,
        params={
            "format": format,
            "filename": file.filename or "",
            "message": message,
            "mode": mode,
        },
    )
    with tempfile.NamedTemporaryFile(prefix="kiln-upload-") as spool:
        await asyncio.to_thread(shutil.copyfileobj, file.file, spool, 1024 * 1024)
        spool.flush()
        if spool.tell() == 0:
            raise BadRequest("the uploaded archive is empty")
        # Unsafe archives (traversal, links, bombs) are refused now, before anything is kept.
        await asyncio.to_thread(validate_archive, Path(spool.name))
        spool.seek(0)
        key = f"imports/{job.id}/archive"
        size = await runtime.store.put(key, spool)
    job.params["archive_key"] = key
    job.params["archive_bytes"] = size
    async with runtime.db.transaction() as session:
        session.add(job)
    jobs.enqueue(runtime, job)
    return Accepted(
        import_id=job.id, job_id=job.id, status=job.status, status_url=f"/v1/imports/{job.id}"
    )


@router.get("/imports/{import_id}", response_model=JobPublic)
async def read_import(import_id: str, session: SessionDep, _who: Reader) -> JobPublic:
    job = await session.get(Job, import_id)
    if job is None or job.kind != "import":
        raise NotFound(f"no import {import_id!r}")
    return job_public(job)


@router.get("/jobs/{job_id}", response_model=JobPublic)
async def read_job(job_id: str, session: SessionDep, _who: Reader) -> JobPublic:
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    return job_public(job)


@router.get("/jobs", response_model=Page[JobPublic])
async def list_jobs(
    session: SessionDep,
    _who: Reader,
    limit: Limit = 50,
    offset: Offset = 0,
    dataset_id: str | None = None,
    kind: str | None = None,
    status_: Annotated[str | None, Query(alias="status")] = None,
) -> Page[JobPublic]:
    query = select(Job)
    if dataset_id:
        query = query.where(Job.dataset_id == dataset_id)
    if kind:
        query = query.where(Job.kind == kind)
    if status_:
        query = query.where(Job.status == status_)
    total = int((await session.exec(select(func.count()).select_from(query.subquery()))).one())
    rows = (
        await session.exec(query.order_by(col(Job.created_at).desc()).offset(offset).limit(limit))
    ).all()
    return Page(items=[job_public(j) for j in rows], total=total, limit=limit, offset=offset)


# --- versions -----------------------------------------------------------------------------------


@router.get("/datasets/{dataset_id}/versions", response_model=Page[VersionPublic])
async def list_versions(
    dataset_id: str, session: SessionDep, _who: Reader, limit: Limit = 50, offset: Offset = 0
) -> Page[VersionPublic]:
    await get_dataset(session, dataset_id)
    query = select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset_id, DatasetVersion.status == "live"
    )
    total = int((await session.exec(select(func.count()).select_from(query.subquery()))).one())
    rows = (
        await session.exec(
            query.order_by(col(DatasetVersion.number).desc()).offset(offset).limit(limit)
        )
    ).all()
    return Page(
        items=[await _version_out(session, v) for v in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/datasets/{dataset_id}/versions/{version}", response_model=VersionPublic)
async def read_version(
    dataset_id: str, version: VersionNumber, session: SessionDep, _who: Reader
) -> VersionPublic:
    return await _version_out(session, await get_version(session, dataset_id, version))


@router.get("/datasets/{dataset_id}/versions/{version}/items", response_model=Page[ManifestItem])
async def list_items(
    dataset_id: str,
    version: VersionNumber,
    request: Request,
    session: SessionDep,
    _who: Reader,
    limit: Limit = 100,
    offset: Offset = 0,
    split: Literal["train", "val", "test", "unassigned"] | None = None,
    label: str | None = None,
) -> Page[ManifestItem]:
    row = await get_version(session, dataset_id, version)
    items = await version_items(get_runtime(request).store, row)
    if split:
        items = [i for i in items if (i.split or "unassigned") == split]
    if label:
        items = [i for i in items if any(x.label == label for x in i.labels)]
    return Page(items=items[offset : offset + limit], total=len(items), limit=limit, offset=offset)


@router.get(
    "/datasets/{dataset_id}/versions/{version}/manifest",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def download_manifest(
    dataset_id: str, version: VersionNumber, request: Request, session: SessionDep, _who: Reader
) -> StreamingResponse:
    """The version's JSONL manifest, streamed."""
    row = await get_version(session, dataset_id, version)
    store = get_runtime(request).store
    return StreamingResponse(
        store.stream(row.manifest_key),
        media_type="application/x-ndjson",
        headers={"etag": f'"{row.manifest_sha256}"'},
    )


@router.get("/datasets/{dataset_id}/versions/{version}/diff")
async def diff_version(
    dataset_id: str,
    version: VersionNumber,
    request: Request,
    session: SessionDep,
    _who: Reader,
    against: Annotated[
        int, Query(ge=1, le=INT32_MAX, description="the other version (the 'before')")
    ],
) -> dict[str, Any]:
    """Items added, removed, relabelled between ``against`` and this version."""
    store = get_runtime(request).store
    new = await get_version(session, dataset_id, version)
    old = await get_version(session, dataset_id, against)
    diff = diff_versions(await version_items(store, old), await version_items(store, new))
    return {"from_version": against, "to_version": version, **diff}


class SplitRequest(BaseModel):
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    stratify: bool = True
    message: str = PydField(default="", max_length=2000)


@router.post(
    "/datasets/{dataset_id}/versions/{version}/splits",
    status_code=201,
    response_model=VersionPublic,
)
async def split_version(
    dataset_id: str, version: VersionNumber, body: SplitRequest, request: Request, who: Writer
) -> VersionPublic:
    """A derived version whose items carry deterministic train/val/test splits."""
    from kiln_dataset.splits import assign_splits

    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        parent = await get_version(session, dataset_id, version)
        items = await version_items(runtime.store, parent)
        try:
            assignment = assign_splits(
                items, ratios=body.ratios, seed=body.seed, stratify=body.stratify
            )
        except ValueError as exc:
            raise ValidationFailed(str(exc), field="ratios") from None
        items = [i.model_copy(update={"split": assignment[i.item_id]}) for i in items]
        created = await create_version(
            session,
            runtime,
            dataset_id,
            items,
            parent=parent,
            categories=[Category.model_validate(c) for c in parent.categories or []],
            lineage=VersionLineage(
                source="split",
                parent_version=parent.number,
                parent_version_id=parent.id,
                seed=body.seed,
            ),
            created_by=who.subject,
            message=body.message or f"splits {body.ratios} seed {body.seed}",
        )
        return await _version_out(session, created)


@router.get("/datasets/{dataset_id}/versions/{version}/stats")
async def version_stats(
    dataset_id: str, version: VersionNumber, session: SessionDep, _who: Reader
) -> dict[str, Any]:
    """Items per label and split, image sizes, media types."""
    return (await get_version(session, dataset_id, version)).stats or {}


@router.get(
    "/datasets/{dataset_id}/versions/{version}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}, "application/x-ndjson": {}}}},
)
async def export_version(
    dataset_id: str,
    version: VersionNumber,
    request: Request,
    session: SessionDep,
    _who: Reader,
    format: Annotated[ExportFormat, Query(description="output layout")] = "jsonl",
) -> StreamingResponse:
    """The version in a standard layout, streamed (zip for image formats)."""
    from kiln_dataset.formats import export_stream

    runtime = get_runtime(request)
    row = await get_version(session, dataset_id, version)
    dataset = await get_dataset(session, dataset_id)
    items = await version_items(runtime.store, row)
    categories = [Category.model_validate(c) for c in row.categories or []]

    def read_blob(sha: str) -> AsyncIterator[bytes]:
        from kiln_core.storage import blob_key

        return runtime.store.stream(blob_key(sha))

    media = "application/x-ndjson" if format == "jsonl" else "application/zip"
    suffix = "jsonl" if format == "jsonl" else "zip"
    name = f"{dataset.name}-v{row.number}-{format}.{suffix}".replace(" ", "_")
    return StreamingResponse(
        export_stream(format, items, categories, read_blob),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.delete("/datasets/{dataset_id}/versions/{version}", status_code=204)
async def delete_dataset_version(
    dataset_id: str,
    version: VersionNumber,
    request: Request,
    _who: Writer,
    reason: Annotated[str, Query(max_length=500)] = "",
) -> None:
    """Soft-delete a version; its blobs are purged later unless another version uses them."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        row = await get_version(session, dataset_id, version)
        await delete_version(session, runtime, row, reason or "deleted by request")


class AugmentRequest(BaseModel):
    recipe: Recipe  # its steps and keys are in the document, so clients know them
    seed: int = PydField(default=0, ge=0, le=MAX_PARAM_INT)
    message: str = PydField(default="", max_length=2000)


@router.post(
    "/datasets/{dataset_id}/versions/{version}/augmentations",
    status_code=202,
    response_model=Accepted,
)
async def augment_version(
    dataset_id: str, version: VersionNumber, body: AugmentRequest, request: Request, who: Writer
) -> Accepted:
    """Start a job producing a derived, augmented version (reproducible by seed)."""
    recipe = body.recipe
    return await _start_job(
        request,
        who,
        dataset_id,
        version,
        "augmentation",
        {"recipe": recipe.model_dump(mode="json"), "seed": body.seed, "message": body.message},
    )


@router.post(
    "/datasets/{dataset_id}/versions/{version}/quality", status_code=202, response_model=Accepted
)
async def evaluate_quality(
    dataset_id: str, version: VersionNumber, request: Request, who: Writer
) -> Accepted:
    """Start a quality evaluation; the report is stored with the version."""
    return await _start_job(request, who, dataset_id, version, "quality", {})


@router.get("/datasets/{dataset_id}/versions/{version}/quality")
async def read_quality(
    dataset_id: str, version: VersionNumber, session: SessionDep, _who: Reader
) -> dict[str, Any]:
    row = await get_version(session, dataset_id, version)
    if row.quality is None:
        raise NotFound("no quality report yet; POST to this path to evaluate")
    return row.quality


async def _start_job(
    request: Request,
    who: Principal,
    dataset_id: str,
    version: VersionNumber,
    kind: str,
    params: dict[str, Any],
) -> Accepted:
    runtime: ServiceRuntime = get_runtime(request)
    async with runtime.db.transaction() as session:
        row = await get_version(session, dataset_id, version)
        job = Job(
            kind=kind,
            dataset_id=dataset_id,
            created_by=who.subject,
            params={**params, "version": row.number},
        )
        session.add(job)
    jobs.enqueue(runtime, job)
    return Accepted(job_id=job.id, status=job.status, status_url=f"/v1/jobs/{job.id}")


class PurgeRequest(BaseModel):
    grace_minutes: int = PydField(default=60, ge=0, le=7 * 24 * 60)


@router.post("/purge", status_code=202, response_model=Accepted, tags=["lifecycle"])
async def start_purge(
    body: PurgeRequest, request: Request, who: Annotated[Principal, require_roles("admin")]
) -> Accepted:
    """Expire datasets past retention and delete blobs no live version references."""
    runtime = get_runtime(request)
    job = Job(kind="purge", created_by=who.subject, params={"grace_minutes": body.grace_minutes})
    async with runtime.db.transaction() as session:
        session.add(job)
    jobs.enqueue(runtime, job)
    return Accepted(job_id=job.id, status=job.status, status_url=f"/v1/jobs/{job.id}")


__all__ = ["router", "Label"]
