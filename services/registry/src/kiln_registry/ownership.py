"""Which team owns what a registry path names (kiln_core.teams): a model's team owns its
versions, aliases, policy, log and compression jobs."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.teams import Owner, OwnerLookup
from kiln_registry.models import Job, RegisteredModel


async def model_owner(session: AsyncSession, name: str) -> Owner | None:
    model = (
        await session.exec(select(RegisteredModel).where(RegisteredModel.name == name))
    ).first()
    return None if model is None else Owner(model.team, not_found=f"model {name!r} does not exist")


async def job_owner(session: AsyncSession, job_id: str) -> Owner | None:
    job = await session.get(Job, job_id)
    model = None if job is None else await session.get(RegisteredModel, job.model_id)
    if model is None:
        return None
    return Owner(model.team, not_found=f"job {job_id!r} does not exist")


OWNERSHIP: dict[str, OwnerLookup] = {"name": model_owner, "job_id": job_owner}
