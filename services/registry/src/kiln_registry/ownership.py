"""Which team owns what a registry path names (kiln_core.teams): a model's team owns its
versions, aliases, policy, log and compression jobs."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.teams import Owner, OwnerLookup, missing
from kiln_registry.models import Job, RegisteredModel


async def model_owner(session: AsyncSession, name: str) -> Owner:
    model = (
        await session.exec(select(RegisteredModel).where(RegisteredModel.name == name))
    ).first()
    not_found = f"model {name!r} does not exist"
    return missing(not_found) if model is None else Owner(model.team, not_found=not_found)


async def job_owner(session: AsyncSession, job_id: str) -> Owner:
    job = await session.get(Job, job_id)
    model = None if job is None else await session.get(RegisteredModel, job.model_id)
    not_found = f"job {job_id!r} does not exist"
    return missing(not_found) if model is None else Owner(model.team, not_found=not_found)


OWNERSHIP: dict[str, OwnerLookup] = {"name": model_owner, "job_id": job_owner}
