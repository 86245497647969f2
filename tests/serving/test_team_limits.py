"""A team's limits on endpoints and model instances, announced by the training service, hold
when many requests arrive at once: the team's row of limits is locked while each counts."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from kiln_core.catalog import TeamUpdated
from kiln_core.events import new_event
from kiln_core.service import ServiceRuntime
from tests.registry.conftest import as_record


async def test_endpoint_and_instance_limits_hold_under_50_concurrent_creations(
    service: tuple[httpx.AsyncClient, ServiceRuntime], unique: str
) -> None:
    client, runtime = service
    team = f"lim{unique}"
    # What the training service announces when an admin sets the team's limits.
    update = TeamUpdated(
        team=team,
        weight=1.0,
        quota={},
        limits={"endpoints": 3, "model_instances": 4},
        actor="admin",
    )
    await runtime.inbox.handle_record(as_record(new_event(update, subject=team)))

    async def create(i: int, **extra: Any) -> httpx.Response:
        body = {"name": f"l{unique}-{i}", "model_name": "m", "team": team, **extra}
        return await client.post("/v1/endpoints", json=body)

    answers = await asyncio.gather(*(create(i) for i in range(50)))
    codes = Counter(a.status_code for a in answers)
    assert codes == {201: 3, 409: 47}, codes
    problem = next(a for a in answers if a.status_code == 409).json()
    assert problem["type"].endswith("quota-exceeded")
    assert (problem["quota"], problem["usage"], problem["limit"]) == ("endpoints", 3, 3)
    mine = [e for e in (await client.get("/v1/endpoints")).json() if e["team"] == team]
    assert len(mine) == 3

    # Three endpoints use three instances; raising one to two reaches the limit of four, and
    # one more is refused, naming the instances.
    first = mine[0]["name"]
    assert (
        await client.patch(f"/v1/endpoints/{first}", json={"instance_count": 2})
    ).status_code == 200
    over = await client.patch(f"/v1/endpoints/{first}", json={"instance_count": 3})
    assert over.status_code == 409 and over.json()["quota"] == "model_instances"
    assert over.json()["usage"] == 2 and over.json()["limit"] == 4
    after = (await client.get(f"/v1/endpoints/{first}")).json()
    assert after["config"]["instance_count"] == 2  # the refusal changed nothing
