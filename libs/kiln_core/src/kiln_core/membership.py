"""Every service's copy of who is in which team, kept from the training service's events
(kiln_core.teams explains why a copy)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import TeamMembershipChanged, TeamUpdated
from kiln_core.events import CloudEvent
from kiln_core.inbox import EventHandler
from kiln_core.teams import apply_limits, apply_membership


async def on_membership_changed(
    session: AsyncSession, event: CloudEvent, data: TeamMembershipChanged
) -> None:
    await apply_membership(session, data.team, data.subject, data.role)


async def on_team_updated(session: AsyncSession, event: CloudEvent, data: TeamUpdated) -> None:
    await apply_limits(session, data.team, data.limits)


def membership_handlers() -> dict[str, EventHandler]:
    """The handlers every service's event process registers: who is in which team, and each
    team's counted limits."""
    return {
        TeamMembershipChanged.event_type: on_membership_changed,
        TeamUpdated.event_type: on_team_updated,
    }
