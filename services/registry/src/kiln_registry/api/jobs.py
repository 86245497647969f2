"""Compression jobs: start one on a version and follow it."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from kiln_core.auth import Reader
from kiln_core.errors import Conflict, NotFound
from kiln_core.http import SessionDep, get_runtime
from kiln_registry.api.common import (
    ModelName,
    VersionNumber,
    Writer,
)
from kiln_registry.models import (
    Accepted,
    CompressBody,
    Job,
    JobPublic,
    ModelVersion,
    RegisteredModel,
    VersionStatus,
)
from kiln_registry.versions import (
    get_model,
    get_version,
    log_operation,
)

router = APIRouter(prefix="/v1", tags=["registry"])


def _job_public(job: Job, model: RegisteredModel, number: int | None) -> JobPublic:
    return JobPublic(
        id=job.id,
        kind=job.kind,
        model_name=model.name,
        version=number,
        status=job.status,
        message=job.message,
        params=job.params,
        result=job.result,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


@router.post(
    "/models/{name}/versions/{version}/compress",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
)
async def compress_version(
    name: ModelName,
    version: VersionNumber,
    request: Request,
    who: Writer,
    body: CompressBody | None = None,
) -> Accepted:
    """Start a compression job (dynamic int8 quantisation of the Linear layers); it registers
    a derived version and reports the size change and top-1 agreement with this one."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        model = await get_model(session, name, lock=True)
        row = await get_version(session, model, version)
        if row.status == VersionStatus.archived:
            raise Conflict(f"version {version} is archived")
        job = Job(
            kind="compression",
            model_id=model.id,
            version_id=row.id,
            params=(body or CompressBody()).model_dump(mode="json"),
            created_by=who.subject,
        )
        session.add(job)
        await log_operation(
            session, model, "compression.requested", who.subject, {"job_id": job.id}, row
        )
    runtime.enqueue(job.id)
    return Accepted(job_id=job.id, status_url=f"/v1/jobs/{job.id}")


@router.get("/jobs/{job_id}", response_model=JobPublic)
async def read_job(job_id: str, session: SessionDep, _who: Reader) -> JobPublic:
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id!r} does not exist")
    model = await session.get(RegisteredModel, job.model_id)
    version = await session.get(ModelVersion, job.version_id)
    if model is None:
        raise NotFound(f"job {job_id!r} belongs to a model that no longer exists")
    return _job_public(job, model, version.number if version else None)
