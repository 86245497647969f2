"""Jobs belong to the teams of the people who submit them, and a team's limit on unfinished
jobs holds when many submissions arrive at once (on PostgreSQL the team's row is locked)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from kiln_core.auth import issue_token
from kiln_core.service import ServiceRuntime
from tests.training.conftest import known_to_training, make_image_version, make_team

Service = tuple[httpx.AsyncClient, ServiceRuntime]


def body(version: dict[str, Any], team: str) -> dict[str, Any]:
    return {
        "template": "image-cnn",
        "params": {"epochs": 1, "batch_size": 8, "image_size": 8, "width": 4},
        "team": team,
        "dataset": {"dataset_id": version["dataset_id"], "version": version["version"]},
        # No worker offers a GPU: the jobs stay queued, so none finishes and frees the limit.
        "resources": {"cpu": 1, "gpu": 1},
    }


async def test_jobs_only_under_the_callers_team_and_the_limit_holds_under_50_submissions(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, runtime = training
    version = await make_image_version(dataset, "quota", per_class=2)
    await known_to_training(training, version)
    # The dataset was made by the (tokenless) admin, so it belongs to the default team.
    team = runtime.settings.default_team
    await make_team(client, team, limits={"jobs": 5})
    await make_team(client, "elsewhere")
    mia = {
        "authorization": "Bearer "
        + issue_token("mia", ["ml-engineer"], runtime.settings, teams=[team])
    }

    refused = await client.post("/v1/jobs", json=body(version, "elsewhere"), headers=mia)
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "not a member of team 'elsewhere'" in refused.json()["detail"]

    answers = await asyncio.gather(
        *(client.post("/v1/jobs", json=body(version, team), headers=mia) for _ in range(50))
    )
    codes = Counter(a.status_code for a in answers)
    assert codes == {201: 5, 409: 45}, codes
    problem = next(a for a in answers if a.status_code == 409).json()
    assert problem["type"].endswith("quota-exceeded")
    assert (problem["quota"], problem["usage"], problem["limit"]) == ("jobs", 5, 5)

    queued = (await client.get("/v1/jobs", params={"team": team, "limit": 100})).json()
    assert queued["total"] == 5
    assert (await client.get("/v1/jobs", params={"team": "elsewhere"})).json()["total"] == 0
    # Her list shows her team's jobs only; the other team is as absent to her as a missing one.
    assert (await client.get("/v1/jobs", headers=mia)).json()["total"] == 5
    assert (await client.get("/v1/teams/elsewhere", headers=mia)).status_code == 404
    assert [t["name"] for t in (await client.get("/v1/teams", headers=mia)).json()] == [team]

    # Raising the limit is an operation with its actor in the team's log.
    r = await client.put(f"/v1/teams/{team}", json={"weight": 1.0, "limits": {"jobs": 6}})
    assert r.status_code == 200 and r.json()["limits"] == {"jobs": 6}
    log = (await client.get(f"/v1/teams/{team}/operations")).json()
    assert [(e["action"], e["actor"], e["detail"]["limits"]) for e in log] == [
        ("team.created", "tester", {"jobs": 5}),
        ("quota.set", "tester", {"jobs": 6}),
    ]
    assert (await client.post("/v1/jobs", json=body(version, team), headers=mia)).status_code == 201


async def test_the_queue_shows_other_teams_jobs_only_as_counts(
    services: tuple[Service, Service],
) -> None:
    training, dataset = services
    client, runtime = training
    version = await make_image_version(dataset, "queue", per_class=2)
    await known_to_training(training, version)
    await make_team(client, "vision")
    await make_team(client, "audio")
    for team in ("vision", "audio", "audio"):
        r = await client.post("/v1/jobs", json=body(version, team))  # as the admin
        assert r.status_code == 201, r.text
    ada = {
        "authorization": "Bearer "
        + issue_token("ada", ["viewer"], runtime.settings, teams={"vision": "viewer"})
    }
    pool = (await client.get("/v1/queue", headers=ada)).json()["pools"]["gpu"]
    assert {w["team"] for w in pool["waiting"]} == {"vision"}
    assert pool["others_waiting"] == 2
    assert set(pool["dominant_shares"]) <= {"vision"}
    everyone = (await client.get("/v1/queue")).json()["pools"]["gpu"]
    assert sorted(w["team"] for w in everyone["waiting"]) == ["audio", "audio", "vision"]


async def test_another_teams_dataset_trains_only_once_shared(
    services: tuple[Service, Service],
) -> None:
    from kiln_core.catalog import DatasetShared
    from kiln_core.events import new_event
    from tests.registry.conftest import as_record

    training, dataset = services
    client, runtime = training
    version = await make_image_version(dataset, "sharing", per_class=2)  # the default team's
    await known_to_training(training, version)
    await make_team(client, "audio")
    sam = {
        "authorization": "Bearer "
        + issue_token("sam", ["ml-engineer"], runtime.settings, teams=["audio"])
    }
    refused = await client.post("/v1/jobs", json=body(version, "audio"), headers=sam)
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("unknown-dataset-version")
    # The dataset service announces that its team shared the dataset with audio.
    shared = DatasetShared(
        dataset_id=version["dataset_id"],
        team=runtime.settings.default_team,
        shared_with=["audio"],
        actor="dana",
    )
    await runtime.inbox.handle_record(as_record(new_event(shared, subject=version["dataset_id"])))
    accepted = await client.post("/v1/jobs", json=body(version, "audio"), headers=sam)
    assert accepted.status_code == 201, accepted.text


async def test_a_members_rule_fires_only_on_its_teams_datasets(
    services: tuple[Service, Service],
) -> None:
    from sqlmodel import select

    from kiln_training.models import KnownVersion
    from kiln_training.triggers import fire_triggers

    training, dataset = services
    client, runtime = training
    version = await make_image_version(dataset, "rules", per_class=2)  # the default team's
    await known_to_training(training, version)
    await make_team(client, "audio")
    sam = {
        "authorization": "Bearer "
        + issue_token("sam", ["ml-engineer"], runtime.settings, teams=["audio"])
    }
    spec = {k: v for k, v in body(version, "audio").items() if k != "dataset"}
    rule = {"name": "retrain", "dataset_id": version["dataset_id"], "job": spec}
    mine = await client.post("/v1/triggers", json=rule, headers=sam)
    assert mine.status_code == 201, mine.text
    admins = await client.post("/v1/triggers", json={**rule, "name": "admin's"})
    assert admins.status_code == 201, admins.text
    async with runtime.db.transaction() as session:
        known = (
            await session.exec(
                select(KnownVersion).where(KnownVersion.version_id == version["version_id"])
            )
        ).one()
        fired = await fire_triggers(session, known)
    # Audio's rule on the default team's (unshared) dataset submits nothing; the admin's does.
    assert [job.trigger_id for job in fired] == [admins.json()["id"]]
