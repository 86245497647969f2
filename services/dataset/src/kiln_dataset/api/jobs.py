"""Long work: archive imports, the jobs that run them, and purges."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from pydantic import BaseModel
from pydantic import Field as PydField
from sqlalchemy import func
from sqlmodel import col, select

from kiln_core.auth import Admin, Reader
from kiln_core.errors import BadRequest, Conflict, NotFound
from kiln_core.http import Limit, Offset, SessionDep, get_runtime
from kiln_core.teams import visible_teams
from kiln_dataset.api.common import (
    Accepted,
    ImportFormat,
    Writer,
    job_public,
    readable_dataset_ids,
)
from kiln_dataset.models import DatasetStatus, Job, JobPublic, Page
from kiln_dataset.runners import validate_archive
from kiln_dataset.versions import get_dataset

router = APIRouter(prefix="/v1", tags=["datasets"])


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
    runtime.enqueue(job.id)
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
    who: Reader,
    limit: Limit = 50,
    offset: Offset = 0,
    dataset_id: str | None = None,
    kind: str | None = None,
    status_: Annotated[str | None, Query(alias="status")] = None,
) -> Page[JobPublic]:
    query = select(Job)
    teams = visible_teams(who)
    if teams is not None:  # the jobs of datasets the caller's teams own or were shared
        query = query.where(col(Job.dataset_id).in_(await readable_dataset_ids(session, teams)))
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


class PurgeRequest(BaseModel):
    grace_minutes: int = PydField(default=60, ge=0, le=7 * 24 * 60)


@router.post("/purge", status_code=202, response_model=Accepted, tags=["lifecycle"])
async def start_purge(body: PurgeRequest, request: Request, who: Admin) -> Accepted:
    """Expire datasets past retention and delete blobs no live version references."""
    runtime = get_runtime(request)
    job = Job(kind="purge", created_by=who.subject, params={"grace_minutes": body.grace_minutes})
    async with runtime.db.transaction() as session:
        session.add(job)
    runtime.enqueue(job.id)
    return Accepted(job_id=job.id, status=job.status, status_url=f"/v1/jobs/{job.id}")
