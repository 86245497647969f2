"""Which team owns what an annotation-service path names (kiln_core.teams): a project's team
owns its tasks and its jobs."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_annotation.models import PrelabelJob, Project, SelectionJob, Task
from kiln_core.teams import Owner, OwnerLookup


async def _project(session: AsyncSession, project_id: str, not_found: str) -> Owner | None:
    project = await session.get(Project, project_id)
    return None if project is None else Owner(project.team, not_found=not_found)


async def project_owner(session: AsyncSession, project_id: str) -> Owner | None:
    return await _project(session, project_id, f"no project {project_id!r}")


async def task_owner(session: AsyncSession, task_id: str) -> Owner | None:
    task = await session.get(Task, task_id)
    return (
        None if task is None else await _project(session, task.project_id, f"no task {task_id!r}")
    )


async def job_owner(session: AsyncSession, job_id: str) -> Owner | None:
    prelabel = await session.get(PrelabelJob, job_id)
    if prelabel is not None:
        return await _project(session, prelabel.project_id, f"no pre-labelling job {job_id!r}")
    selection = await session.get(SelectionJob, job_id)
    if selection is not None:
        return await _project(session, selection.project_id, f"no selection job {job_id!r}")
    return None


OWNERSHIP: dict[str, OwnerLookup] = {
    "project_id": project_owner,
    "task_id": task_owner,
    "job_id": job_owner,
}
