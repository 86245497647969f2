"""Which team owns what an annotation-service path names (kiln_core.teams): a project's team
owns its tasks and its jobs."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_annotation.models import PrelabelJob, Project, SelectionJob, Task
from kiln_core.teams import Owner, OwnerLookup, missing


async def _project(session: AsyncSession, project_id: str, not_found: str) -> Owner:
    project = await session.get(Project, project_id)
    return missing(not_found) if project is None else Owner(project.team, not_found=not_found)


async def project_owner(session: AsyncSession, project_id: str) -> Owner:
    return await _project(session, project_id, f"no project {project_id!r}")


async def task_owner(session: AsyncSession, task_id: str) -> Owner:
    task = await session.get(Task, task_id)
    if task is None:
        return missing(f"no task {task_id!r}")
    return await _project(session, task.project_id, f"no task {task_id!r}")


async def prelabel_job_owner(session: AsyncSession, job_id: str) -> Owner:
    job = await session.get(PrelabelJob, job_id)
    not_found = f"no pre-labelling job {job_id!r}"
    return missing(not_found) if job is None else await _project(session, job.project_id, not_found)


async def selection_job_owner(session: AsyncSession, job_id: str) -> Owner:
    job = await session.get(SelectionJob, job_id)
    not_found = f"no selection job {job_id!r}"
    return missing(not_found) if job is None else await _project(session, job.project_id, not_found)


OWNERSHIP: dict[str, OwnerLookup] = {
    "project_id": project_owner,
    "task_id": task_owner,
    "job_id@/v1/prelabel-jobs/": prelabel_job_owner,
    "job_id@/v1/selections/": selection_job_owner,
}
