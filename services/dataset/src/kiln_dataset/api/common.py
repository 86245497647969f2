"""What the dataset API's route modules share: the writer role, formats, the public
views of rows and starting a job on a version."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path as PathParam
from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.auth import Principal, require_roles
from kiln_core.db import INT32_MAX
from kiln_core.http import get_runtime
from kiln_core.manifest import Category
from kiln_core.service import ServiceRuntime
from kiln_dataset.models import (
    Dataset,
    DatasetPublic,
    DatasetVersion,
    Job,
    JobPublic,
    VersionPublic,
)
from kiln_dataset.versions import get_version

WRITERS = ("data-engineer", "admin")
Writer = Annotated[Principal, require_roles(*WRITERS)]
ImportFormat = Literal["coco", "yolo", "voc", "imagefolder", "csv", "jsonl", "auto"]
ExportFormat = Literal["coco", "yolo", "voc", "imagefolder", "jsonl"]
VersionNumber = Annotated[int, PathParam(ge=1, le=INT32_MAX, description="version number")]


async def datasets_public(session: AsyncSession, datasets: list[Dataset]) -> list[DatasetPublic]:
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


async def dataset_public(session: AsyncSession, dataset: Dataset) -> DatasetPublic:
    return (await datasets_public(session, [dataset]))[0]


def version_public(version: DatasetVersion, parent_number: int | None) -> VersionPublic:
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


async def version_out(session: AsyncSession, version: DatasetVersion) -> VersionPublic:
    parent_number = None
    if version.parent_id:
        parent = await session.get(DatasetVersion, version.parent_id)
        parent_number = parent.number if parent else None
    return version_public(version, parent_number)


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


class Accepted(BaseModel):
    import_id: str | None = None
    job_id: str
    status: str
    status_url: str


async def start_version_job(
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
    runtime.enqueue(job.id)
    return Accepted(job_id=job.id, status=job.status, status_url=f"/v1/jobs/{job.id}")


async def readable_dataset_ids(session: AsyncSession, teams: frozenset[str]) -> list[str]:
    """Ids of the datasets ``teams`` own or were shared (for filtering lists)."""
    rows = await session.exec(select(Dataset.id, Dataset.team, Dataset.shared_with))
    return [
        i for i, team, shared in rows.all() if team in teams or teams.intersection(shared or [])
    ]
