"""A team's storage limit (announced by the training service) counts the distinct bytes its
datasets hold; an upload past it is refused with the quota, usage and limit, and adds nothing."""

from __future__ import annotations

import httpx

from kiln_core.catalog import TeamUpdated
from kiln_core.events import new_event
from kiln_core.service import ServiceRuntime
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import commit, make_dataset, upload
from tests.registry.conftest import as_record

Service = tuple[httpx.AsyncClient, ServiceRuntime]


async def test_uploads_past_the_teams_storage_limit_are_refused(dataset_service: Service) -> None:
    client, runtime = dataset_service
    team = "archivists"
    first = png((10, 20, 30), (64, 64))
    second = png((200, 20, 30), (64, 64))
    limit = len(first) + len(second) // 2  # room for the first image, not for both
    update = TeamUpdated(
        team=team, weight=1.0, quota={}, limits={"storage_bytes": limit}, actor="admin"
    )
    await runtime.inbox.handle_record(as_record(new_event(update, subject=team)))

    ds = (await make_dataset(client, "quota-a", team=team))["id"]
    await commit(client, ds, (await upload(client, ds, {"a.png": first}))["draft"])
    # The same bytes again, in another of the team's datasets, take no more room.
    other = (await make_dataset(client, "quota-b", team=team))["id"]
    again = await upload(client, other, {"copy.png": first})
    assert [a["item_id"] for a in again["accepted"]] == ["copy.png"]

    draft = (await client.post(f"/v1/datasets/{ds}/drafts", json={})).json()["id"]
    refused = await client.post(
        f"/v1/datasets/{ds}/drafts/{draft}/items",
        files=[("files", ("b.png", second, "image/png"))],
    )
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["type"].endswith("quota-exceeded")
    assert (problem["quota"], problem["usage"], problem["limit"]) == (
        "storage_bytes",
        len(first),
        limit,
    )
    items = await client.post(f"/v1/datasets/{ds}/drafts/{draft}/commit", json={"message": "m"})
    assert items.status_code in (409, 422)  # the draft got nothing: there is nothing to commit
