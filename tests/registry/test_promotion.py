"""Aliases and gated promotion: metric gates, regression against production, the role allowed
to promote, and the promoted event carrying what serving needs."""

from __future__ import annotations

from typing import Any

import httpx

from kiln_core.catalog import ModelVersionPromoted
from tests.registry.conftest import (
    LABELS,
    SIGNATURE,
    Service,
    auth,
    import_version,
    make_model,
    registry_events,
)

POLICY = {
    "gated_aliases": ["production"],
    "metric_gates": [{"metric": "accuracy", "op": ">=", "value": 0.85}],
    "regression_gates": [{"metric": "accuracy", "max_drop": 0.01}],
    "promoter_roles": ["reviewer"],
}


async def _promote(
    client: httpx.AsyncClient, name: str, alias: str, version: int, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(
        f"/v1/models/{name}/aliases/{alias}", json={"version": version}, headers=headers
    )


async def _statuses(client: httpx.AsyncClient, name: str) -> dict[int, str]:
    items = (await client.get(f"/v1/models/{name}/versions")).json()["items"]
    return {v["version"]: v["status"] for v in items}


async def _aliases(client: httpx.AsyncClient, name: str) -> dict[str, int]:
    return {
        a["alias"]: a["version"] for a in (await client.get(f"/v1/models/{name}/aliases")).json()
    }


def _refused(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()  # type: ignore[no-any-return]


async def test_gated_promotion(registry_service: Service, unique: str) -> None:
    client, runtime = registry_service
    settings = runtime.settings
    reviewer = auth(settings, "rita", "reviewer")
    engineer = auth(settings, "mia", "ml-engineer")
    viewer = auth(settings, "vera", "viewer")
    name = f"gate{unique}"
    await make_model(client, name)
    cases = [
        (0.90, "val"),  # v1: the first production version
        (0.88, "val"),  # v2: above the threshold, but worse than production by 0.02
        (0.80, "val"),  # v3: below the threshold (and worse than production)
        (0.95, "val"),  # v4: passes every gate
        (0.97, "test"),  # v5: measured on another split: not comparable with production
    ]
    for accuracy, split in cases:
        response = await import_version(
            client, name, metrics={"accuracy": accuracy}, evaluation_split=split
        )
        assert response.status_code == 201, response.text
    # Only an admin may set the policy (it decides who may promote).
    assert (
        await client.put(f"/v1/models/{name}/policy", json=POLICY, headers=engineer)
    ).status_code == 403
    assert (await client.put(f"/v1/models/{name}/policy", json=POLICY)).status_code == 200

    # Refused by role: an ml-engineer may not move the gated alias, a viewer no alias at all.
    problem = _refused(await _promote(client, name, "production", 1, engineer), 403)
    assert problem["required_roles"] == ["reviewer"]
    _refused(await _promote(client, name, "staging", 1, viewer), 403)
    # Ungated aliases need only a writer role.
    assert (await _promote(client, name, "staging", 1, engineer)).status_code == 200

    # Passes: the first production version has nothing to regress from.
    promoted = await _promote(client, name, "production", 1, reviewer)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["status"] == "production"

    # Refused by the regression gate only.
    problem = _refused(await _promote(client, name, "production", 2, reviewer), 422)
    assert problem["type"].endswith("/promotion-refused")
    assert [(g["gate"], g["reason"]) for g in problem["failed_gates"]] == [
        ("regression", "worse than production")
    ]
    assert abs(problem["failed_gates"][0]["drop"] - 0.02) < 1e-9
    # Refused by the metric gate (and the regression gate), both listed.
    problem = _refused(await _promote(client, name, "production", 3, reviewer), 422)
    assert sorted(g["gate"] for g in problem["failed_gates"]) == ["metric", "regression"]
    metric = next(g for g in problem["failed_gates"] if g["gate"] == "metric")
    assert metric["required"] == ">= 0.85" and metric["actual"] == 0.8
    # Refused: evaluated on another split, so not comparable with production.
    problem = _refused(await _promote(client, name, "production", 5, reviewer), 422)
    assert "not comparable" in problem["failed_gates"][0]["reason"]
    # Refusals changed nothing.
    assert await _aliases(client, name) == {"staging": 1, "production": 1}
    assert await _statuses(client, name) == {
        1: "production",
        2: "registered",
        3: "registered",
        4: "registered",
        5: "registered",
    }

    promoted = await _promote(client, name, "production", 4, reviewer)
    assert promoted.status_code == 200, promoted.text
    assert await _aliases(client, name) == {"staging": 1, "production": 4}
    # v1 keeps the staging alias, so it is staged; v4 serves production.
    assert (await _statuses(client, name))[1] == "staged"
    assert (await _statuses(client, name))[4] == "production"
    # Moving an alias to where it points already changes nothing.
    assert (await _promote(client, name, "production", 4, reviewer)).status_code == 200

    events = await registry_events(runtime, ModelVersionPromoted.event_type, 3, f"p-{unique}")
    assert [(d.alias, d.version) for _, d in events] == [
        ("staging", 1),
        ("production", 1),
        ("production", 4),
    ]
    _, last = events[-1]
    v4 = (await client.get(f"/v1/models/{name}/versions/4")).json()
    assert last.model_name == name and last.version_id == v4["version_id"]
    assert last.previous_version == 1 and last.previous_version_id == events[1][1].version_id
    assert last.promoted_by == "rita" and last.metrics == {"accuracy": 0.95}
    assert last.artifact.uri == v4["artifact"]["uri"] and last.artifact.key == v4["artifact"]["key"]
    assert last.artifact.sha256 == v4["sha256"] and last.artifact.format == "torchscript"
    assert last.artifact.signature == SIGNATURE and last.artifact.label_map == LABELS
    assert last.artifact.preprocessing.kind == "tabular"

    promotions = (await client.get(f"/v1/models/{name}/promotions")).json()
    assert [(p["actor"], p["details"]["alias"], p["version"]) for p in promotions] == [
        ("rita", "production", 4),
        ("rita", "production", 1),
        ("mia", "staging", 1),
    ]


async def test_archived_and_aliased_versions(registry_service: Service, unique: str) -> None:
    client, _ = registry_service
    name = f"arch{unique}"
    await make_model(client, name)
    for _ in range(2):
        assert (await import_version(client, name)).status_code == 201
    assert (await _promote(client, name, "production", 1, {})).status_code == 200
    problem = _refused(await client.post(f"/v1/models/{name}/versions/1/archive"), 409)
    assert problem["aliases"] == ["production"]
    archived = await client.post(f"/v1/models/{name}/versions/2/archive")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    _refused(await _promote(client, name, "edge-devices", 2, {}), 409)
    # A custom alias; removing it leaves the version registered.
    assert (await _promote(client, name, "edge-devices", 1, {})).status_code == 200
    assert (await client.delete(f"/v1/models/{name}/aliases/production")).status_code == 204
    assert await _aliases(client, name) == {"edge-devices": 1}
    assert (await _statuses(client, name)) == {1: "registered", 2: "archived"}
    _refused(await client.post(f"/v1/models/{name}/aliases/Bad Alias", json={"version": 1}), 422)
