"""Which team owns what a training-service path names (kiln_core.teams)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.teams import Owner, OwnerLookup
from kiln_training.api import trigger_team
from kiln_training.models import Team, TrainingJob, Trigger


async def job_owner(session: AsyncSession, job_id: str) -> Owner | None:
    job = await session.get(TrainingJob, job_id)
    return (
        None if job is None else Owner(job.team, not_found=f"training job {job_id} does not exist")
    )


async def trigger_owner(session: AsyncSession, trigger_id: str) -> Owner | None:
    trigger = await session.get(Trigger, trigger_id)
    if trigger is None:
        return None
    return Owner(trigger_team(trigger), not_found=f"trigger {trigger_id} does not exist")


async def team_owner(session: AsyncSession, name: str) -> Owner | None:
    """A team is its own members' business: others learn nothing of it."""
    team = await session.get(Team, name)
    return None if team is None else Owner(name, not_found=f"team {name} does not exist")


OWNERSHIP: dict[str, OwnerLookup] = {
    "job_id": job_owner,
    "trigger_id": trigger_owner,
    # Only on the team routes: templates are named by ``name`` too and belong to everyone.
    "name@/v1/teams/": team_owner,
}
