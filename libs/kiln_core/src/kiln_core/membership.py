"""Every service's copy of who is in which team, kept from the training service's events
(kiln_core.teams explains why a copy)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import TeamMembershipChanged
from kiln_core.events import CloudEvent
from kiln_core.inbox import EventHandler
from kiln_core.teams import apply_membership


async def on_membership_changed(
    session: AsyncSession, event: CloudEvent, data: TeamMembershipChanged
) -> None:
    await apply_membership(session, data.team, data.subject, data.role)


def membership_handlers() -> dict[str, EventHandler]:
    """The handler every service's event process registers."""
    return {TeamMembershipChanged.event_type: on_membership_changed}
