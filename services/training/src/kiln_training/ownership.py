"""Which team owns what a training-service path names (kiln_core.teams)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.teams import Owner, OwnerLookup, missing
from kiln_training.models import Team, TrainingJob, Trigger
from kiln_training.triggers import trigger_team


async def job_owner(session: AsyncSession, job_id: str) -> Owner:
    job = await session.get(TrainingJob, job_id)
    not_found = f"training job {job_id} does not exist"
    return missing(not_found) if job is None else Owner(job.team, not_found=not_found)


async def trigger_owner(session: AsyncSession, trigger_id: str) -> Owner:
    trigger = await session.get(Trigger, trigger_id)
    not_found = f"trigger {trigger_id} does not exist"
    return (
        missing(not_found) if trigger is None else Owner(trigger_team(trigger), not_found=not_found)
    )


async def team_owner(session: AsyncSession, name: str) -> Owner:
    """A team is its own members' business: others learn nothing of it."""
    not_found = f"team {name} does not exist"
    return (
        missing(not_found)
        if await session.get(Team, name) is None
        else Owner(name, not_found=not_found)
    )


OWNERSHIP: dict[str, OwnerLookup] = {
    "job_id": job_owner,
    "trigger_id": trigger_owner,
    # Only on the team routes: templates are named by ``name`` too and belong to everyone.
    "name@/v1/teams/": team_owner,
}
