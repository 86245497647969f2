"""Every route of every service that names a team's resource, called by every role as a
member of one team (red) on that team's resource, on another team's (blue), and on a blue
dataset shared with red, against the same call on a name that does not exist.

Nothing of another team may be visible or changeable: its answer is the answer for a missing
name, word for word in status and title. One's own team's resources answer a reader as they
answer a platform admin; a shared dataset can be read and not changed."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.dataset.conftest import png
from tests.security.conftest import SERVICES, Stack
from tests.security.policy import POLICY, ROLES
from tests.security.test_authorisation_matrix import PATH_VALUES, call

OWN, OTHER = "red", "blue"
READS = ("GET",)
# Parameters that name a team's resource, per service (the rest keep the matrix's values).
OWNED = {
    "dataset": ("dataset_id",),
    "annotation": ("project_id", "task_id"),
    "registry": ("name",),
    "serving": ("name",),
    "training": ("job_id", "trigger_id", "name"),
}
# Routes whose names are not a team's: the catalogue of templates belongs to everyone.
EVERYONES = ("/v1/templates/",)
# Annotators see only the tasks they hold, in their own team too (test_annotator_isolation).
ANNOTATORS_OWN_TASKS = {("GET", "/v1/tasks/{task_id}"), ("GET", "/v1/tasks/{task_id}/audit")}
# Event streams stay open: one's own is not read to the end (another team's is still refused).
STREAMS = {("GET", "/v1/jobs/{job_id}/events")}


@dataclass
class Resources:
    """The ids of red's and blue's resources, and blue's dataset shared with red."""

    own: dict[str, dict[str, str]] = field(default_factory=dict)
    other: dict[str, dict[str, str]] = field(default_factory=dict)
    shared_dataset: str = ""


def _ok(response: httpx.Response, *codes: int) -> Any:
    assert response.status_code in codes, f"{response.request.url}: {response.text}"
    return response.json() if response.content else None


def _wait(check: Any, what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _team_resources(stack: Stack, admin: dict[str, str], team: str) -> tuple[dict, str]:
    """A dataset with one committed version, a project with its task, a model, an endpoint,
    a retraining rule and a queued job, all of ``team``; and the dataset's id."""
    tag = f"{team}-{uuid.uuid4().hex[:6]}"
    with httpx.Client(headers=admin, timeout=60) as c:
        u = stack.urls
        ds = _ok(
            c.post(
                f"{u['dataset']}/v1/datasets",
                json={"name": f"tm-{tag}", "task_type": "classification", "team": team},
            ),
            201,
        )["id"]
        pid = _ok(
            c.post(
                f"{u['annotation']}/v1/projects",
                json={
                    "name": f"tm-{tag}",
                    "dataset_id": ds,
                    "team": team,
                    "label_schema": {"kind": "classification", "labels": [{"name": "a"}]},
                },
            ),
            201,
        )["id"]
        draft = _ok(c.post(f"{u['dataset']}/v1/datasets/{ds}/drafts", json={}), 201)["id"]
        _ok(
            c.post(
                f"{u['dataset']}/v1/datasets/{ds}/drafts/{draft}/items",
                files=[("files", ("one.png", png((200, 10, 10)), "image/png"))],
            ),
            200,
            201,
        )
        _ok(c.post(f"{u['dataset']}/v1/datasets/{ds}/drafts/{draft}/commit", json={}), 200, 201)
        model = f"tm-{tag}"
        _ok(c.post(f"{u['registry']}/v1/models", json={"name": model, "team": team}), 201)
        endpoint = f"tm-{tag}"
        _ok(
            c.post(
                f"{u['serving']}/v1/endpoints",
                json={"name": endpoint, "model_name": model, "team": team},
            ),
            201,
        )
        _ok(c.post(f"{u['training']}/v1/teams", json={"name": team}), 201, 409)
        spec = {"template": "image-cnn", "team": team, "resources": {"cpu": 1, "gpu": 1}}
        trigger = _ok(
            c.post(
                f"{u['training']}/v1/triggers",
                json={"name": f"tm-{tag}", "dataset_id": ds, "job": spec, "enabled": False},
            ),
            201,
        )["id"]

        def submitted() -> str | None:  # once training has heard of the version
            r = c.post(f"{u['training']}/v1/jobs", json={**spec, "dataset": {"dataset_id": ds}})
            return str(r.json()["id"]) if r.status_code == 201 else None

        job = _wait(submitted, f"training to know {team}'s dataset version")

        def task() -> str | None:
            items = c.get(f"{u['annotation']}/v1/projects/{pid}/tasks").json()["items"]
            return str(items[0]["id"]) if items else None

        task_id = _wait(task, f"{team}'s project to get its task")
    names = {
        "dataset": {"dataset_id": ds},
        "annotation": {"project_id": pid, "task_id": task_id},
        "registry": {"name": model},
        "serving": {"name": endpoint},
        "training": {"job_id": job, "trigger_id": trigger, "name": team},
    }
    return names, ds


@pytest.fixture(scope="module")
def resources(stack: Stack) -> Resources:
    admin = stack.headers("team-admin", "admin")
    own, _ = _team_resources(stack, admin, OWN)
    other, _ = _team_resources(stack, admin, OTHER)
    with httpx.Client(headers=admin, timeout=60) as c:
        shared = _ok(
            c.post(
                f"{stack.urls['dataset']}/v1/datasets",
                json={
                    "name": f"tm-shared-{uuid.uuid4().hex[:6]}",
                    "task_type": "classification",
                    "team": OTHER,
                },
            ),
            201,
        )["id"]
        _ok(c.put(f"{stack.urls['dataset']}/v1/datasets/{shared}/shares/{OWN}"), 200)
    return Resources(own=own, other=other, shared_dataset=shared)


def _url(service: str, path: str, names: dict[str, str]) -> str:
    import re

    values = {**PATH_VALUES, "name": "none", "team": "green", **names}
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m.group(1)], path)


def _names_owned(service: str, path: str) -> bool:
    params = set(OWNED[service])
    return any(f"{{{p}}}" in path for p in params) and not path.startswith(EVERYONES)


def _same(a: httpx.Response, b: httpx.Response) -> bool:
    """The same answer as far as a caller can tell: status, and the problem's title."""

    def title(r: httpx.Response) -> Any:
        try:
            body = r.json()
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        return body.get("title") or ("v2 error" if "error" in body else None)

    return a.status_code == b.status_code and title(a) == title(b)


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_no_role_sees_or_changes_another_teams_resources(
    stack: Stack, resources: Resources, service: str
) -> None:
    admin = stack.token("team-admin", "admin")
    failures: list[str] = []
    rows = sorted(
        (route, allowed)
        for route, allowed in POLICY[service].items()
        if allowed is not None and _names_owned(service, route[1])
    )
    assert rows, f"{service}: no route names a team's resource"
    with httpx.Client(base_url=stack.urls[service], timeout=60) as client:
        for role in (r for r in ROLES if r != "admin"):
            token = stack.token(f"red-{role}", role, teams={OWN: "member"})
            for (method, path), allowed in rows:
                own_url = _url(service, path, resources.own[service])
                other_url = _url(service, path, resources.other[service])
                other = call(client, method, other_url, token)
                absent = call(client, method, _url(service, path, {}), token)
                if not _same(other, absent):
                    failures.append(
                        f"{role} {method} {path} on blue's: {other.status_code} "
                        f"{other.text[:120]} — a missing one: {absent.status_code}"
                    )
                if role not in allowed:
                    # 403, or 404 where the role a route allows depends on the resource (a
                    # model's promotion policy names who moves its aliases).
                    if other.status_code not in (403, 404):
                        failures.append(f"{role} {method} {path}: {other.status_code}, want 403")
                    continue
                if (
                    method in READS
                    and (method, path) not in STREAMS
                    and not (role == "annotator" and (method, path) in ANNOTATORS_OWN_TASKS)
                ):
                    mine = call(client, method, own_url, token)
                    as_admin = call(client, method, own_url, admin)
                    if mine.status_code != as_admin.status_code:
                        failures.append(
                            f"{role} {method} {path} on red's own: {mine.status_code} "
                            f"{mine.text[:120]}, the admin gets {as_admin.status_code}"
                        )
                if service == "dataset" and "{dataset_id}" in path:
                    shared_url = _url(service, path, {"dataset_id": resources.shared_dataset})
                    shared = call(client, method, shared_url, token)
                    if method in READS:
                        as_admin = call(client, method, shared_url, admin)
                        if shared.status_code != as_admin.status_code:
                            failures.append(
                                f"{role} {method} {path} on blue's shared: "
                                f"{shared.status_code}, the admin gets {as_admin.status_code}"
                            )
                    elif shared.status_code != 403:
                        failures.append(
                            f"{role} {method} {path} on blue's shared: {shared.status_code} "
                            f"{shared.text[:120]} (shared read-only: want 403)"
                        )
    assert failures == [], "\n".join(failures)


LISTS = {
    "dataset": ("/v1/datasets", "items", "id", "dataset_id"),
    "annotation": ("/v1/projects", None, "id", "project_id"),
    "registry": ("/v1/models", "items", "name", "name"),
    "serving": ("/v1/endpoints", None, "name", "name"),
    "training": ("/v1/jobs", "items", "id", "job_id"),
}


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_lists_show_the_callers_teams_resources_and_shared_datasets(
    stack: Stack, resources: Resources, service: str
) -> None:
    path, key, field_, param = LISTS[service]
    viewer = stack.client(service)
    viewer.headers["authorization"] = "Bearer " + stack.token(
        "red-viewer", "viewer", teams={OWN: "viewer"}
    )
    with viewer:
        body = _ok(viewer.get(path, params={"limit": 500} if key else None), 200)
    listed = {row[field_] for row in (body[key] if key else body)}
    assert resources.own[service][param] in listed
    assert resources.other[service][param] not in listed
    if service == "dataset":
        assert resources.shared_dataset in listed


@pytest.mark.integration
def test_team_roles_limit_what_members_change(stack: Stack, resources: Resources) -> None:
    """A data engineer who is only a viewer in red changes none of red's datasets; a member
    does; sharing and unsharing are logged with their actor."""
    ds = resources.own["dataset"]["dataset_id"]
    url = f"{stack.urls['dataset']}/v1/datasets/{ds}"
    as_viewer = stack.token("red-dana", "data-engineer", teams={OWN: "viewer"})
    as_member = stack.token("red-dan", "data-engineer", teams={OWN: "member"})
    with httpx.Client(timeout=60) as c:
        refused = call(c, "PATCH", url, as_viewer)
        assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
        r = c.patch(url, json={"tags": ["red"]}, headers={"authorization": f"Bearer {as_member}"})
        assert r.status_code == 200 and r.json()["tags"] == ["red"]
        member = {"authorization": f"Bearer {as_member}"}
        assert c.put(f"{url}/shares/green", headers=member).json()["shared_with"] == ["green"]
        assert c.delete(f"{url}/shares/green", headers=member).json()["shared_with"] == []
        log = c.get(
            f"{stack.urls['dataset']}/v1/team-operations", params={"team": OWN}, headers=member
        ).json()["items"]
    mine = [(e["action"], e["actor"], e["target"]) for e in log if e["target"] == ds]
    assert mine == [("dataset.unshared", "red-dan", ds), ("dataset.shared", "red-dan", ds)]


@pytest.mark.integration
def test_kilns_own_membership_reaches_every_service(stack: Stack) -> None:
    """Without a teams claim in the token, a person's teams are Kiln's own data: the training
    service's members, announced by events that every service keeps a copy of. Joining lets
    them work in the team's resources everywhere; leaving takes it away; both are logged."""
    team, who = f"violet{uuid.uuid4().hex[:6]}", f"vic-{uuid.uuid4().hex[:6]}"
    admin = stack.headers("team-admin", "admin")
    u = stack.urls
    # No claim: the services look the person up in their copy of the membership.
    vic = {"authorization": "Bearer " + stack.token(who, "data-engineer", teams=None)}
    owner = {"authorization": "Bearer " + stack.token("olga", "viewer", teams={team: "owner"})}
    maintainer = {
        "authorization": "Bearer " + stack.token("max", "viewer", teams={team: "maintainer"})
    }
    with httpx.Client(timeout=60) as c:
        _ok(c.post(f"{u['training']}/v1/teams", json={"name": team}, headers=admin), 201)
        refused = c.post(
            f"{u['dataset']}/v1/datasets",
            json={"name": "vic-1", "task_type": "classification", "team": team},
            headers=vic,
        )
        assert refused.status_code == 403, refused.text
        members = f"{u['training']}/v1/teams/{team}/members"
        no = c.put(f"{members}/{who}", json={"role": "owner"}, headers=maintainer)
        assert no.status_code == 403  # a maintainer makes no owners
        assert (
            c.put(f"{members}/{who}", json={"role": "member"}, headers=maintainer).json()["role"]
            == "member"
        )

        def created() -> str | None:
            r = c.post(
                f"{u['dataset']}/v1/datasets",
                json={"name": "vic-1", "task_type": "classification"},  # his only team
                headers=vic,
            )
            return str(r.json()["id"]) if r.status_code == 201 else None

        ds = _wait(created, "the dataset service to hear that vic joined")
        made = _ok(c.get(f"{u['dataset']}/v1/datasets/{ds}", headers=vic), 200)
        assert made["team"] == team
        assert [m["subject"] for m in _ok(c.get(members, headers=owner), 200)] == [who]

        c.delete(f"{members}/{who}", headers=owner).raise_for_status()
        _wait(
            lambda: c.get(f"{u['dataset']}/v1/datasets/{ds}", headers=vic).status_code == 404,
            "the dataset service to hear that vic left",
        )
        log = _ok(c.get(f"{u['training']}/v1/teams/{team}/operations", headers=owner), 200)
    assert [(e["action"], e["actor"], e["target"]) for e in log] == [
        ("team.created", "team-admin", team),
        ("member.set", "max", who),
        ("member.removed", "olga", who),
    ]
