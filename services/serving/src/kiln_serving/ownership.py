"""Which team owns what a serving path names (kiln_core.teams): endpoints, by name, on the
REST routes and the Open Inference Protocol's model routes alike."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.teams import Owner, OwnerLookup, missing
from kiln_serving.models import Endpoint


async def endpoint_owner(session: AsyncSession, name: str) -> Owner:
    endpoint = await session.get(Endpoint, name)
    not_found = f"no endpoint {name!r}"
    return missing(not_found) if endpoint is None else Owner(endpoint.team, not_found=not_found)


OWNERSHIP: dict[str, OwnerLookup] = {
    "name@/v1/endpoints/": endpoint_owner,
    "name@/v2/models/": endpoint_owner,
}
