"""The operation log records every change with its actor; models list, filter and page; the
OpenAPI document covers the API."""

from __future__ import annotations

from tests.registry.conftest import Service, auth, import_version, make_model


async def test_operation_log_records_each_change_with_actor(
    registry_service: Service, unique: str
) -> None:
    client, runtime = registry_service
    mia = auth(runtime.settings, "mia", "ml-engineer")
    name = f"log{unique}"
    await make_model(client, name, description="first")
    assert (await import_version(client, name)).status_code == 201
    patched = await client.patch(
        f"/v1/models/{name}/versions/1",
        json={"tags": ["candidate"], "description": "v1"},
        headers=mia,
    )
    assert patched.status_code == 200 and patched.json()["tags"] == ["candidate"]
    # A no-op update is not logged.
    assert (
        await client.patch(
            f"/v1/models/{name}/versions/1", json={"tags": ["candidate"]}, headers=mia
        )
    ).status_code == 200
    assert (
        await client.patch(f"/v1/models/{name}", json={"description": "second"}, headers=mia)
    ).status_code == 200
    assert (
        await client.put(f"/v1/models/{name}/policy", json={"promoter_roles": ["ml-engineer"]})
    ).status_code == 200
    assert (
        await client.post(
            f"/v1/models/{name}/aliases/production",
            json={"version": 1, "reason": "go"},
            headers=mia,
        )
    ).status_code == 200
    assert (
        await client.delete(f"/v1/models/{name}/aliases/production", headers=mia)
    ).status_code == 204
    assert (
        await client.post(f"/v1/models/{name}/versions/1/archive", headers=mia)
    ).status_code == 200
    # A viewer can read the log but change nothing.
    viewer = auth(runtime.settings, "vera", "viewer")
    assert (
        await client.patch(f"/v1/models/{name}", json={"description": "x"}, headers=viewer)
    ).status_code == 403

    log = (await client.get(f"/v1/models/{name}/log", headers=viewer)).json()
    entries = [(e["action"], e["actor"], e["version"]) for e in reversed(log["items"])]
    assert entries == [
        ("model.created", "tester", None),
        ("version.created", "tester", 1),
        ("version.updated", "mia", 1),
        ("model.updated", "mia", None),
        ("policy.updated", "tester", None),
        ("alias.promoted", "mia", 1),
        ("alias.removed", "mia", 1),
        ("version.archived", "mia", 1),
    ]
    assert log["total"] == len(entries)
    details = {e["action"]: e["details"] for e in log["items"]}
    assert details["version.updated"]["tags"] == {"from": ["imported"], "to": ["candidate"]}
    assert details["model.updated"]["description"] == {"from": "first", "to": "second"}
    assert details["alias.promoted"]["reason"] == "go"
    assert all(e["at"] for e in log["items"])
    version_log = (await client.get(f"/v1/models/{name}/versions/1/log")).json()
    assert [e["action"] for e in version_log] == [
        "version.archived",
        "alias.removed",
        "alias.promoted",
        "version.updated",
        "version.created",
    ]


async def test_models_list_filters_and_pages(registry_service: Service, unique: str) -> None:
    client, _ = registry_service
    for i, tags in enumerate((["vision"], ["vision", "edge"], ["text"])):
        await make_model(client, f"list{unique}-{i}", tags=tags)
    assert (await client.post("/v1/models", json={"name": f"list{unique}-0"})).status_code == 409
    page = (
        await client.get("/v1/models", params={"name": f"list{unique}", "tag": "vision"})
    ).json()
    assert [m["name"] for m in page["items"]] == [f"list{unique}-0", f"list{unique}-1"]
    page = (
        await client.get("/v1/models", params={"name": f"list{unique}", "limit": 1, "offset": 2})
    ).json()
    assert page["total"] == 3 and [m["name"] for m in page["items"]] == [f"list{unique}-2"]
    both = await client.get("/v1/models", params=[("tag", "vision"), ("tag", "edge")])
    assert [m["name"] for m in both.json()["items"]] == [f"list{unique}-1"]
    missing = await client.get(f"/v1/models/nope{unique}")
    assert (
        missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    )


async def test_openapi_documents_the_registry(registry_service: Service) -> None:
    client, _ = registry_service
    paths = (await client.get("/openapi.json")).json()["paths"]
    expected = {
        "/v1/models": {"get", "post"},
        "/v1/models/{name}": {"get", "patch"},
        "/v1/models/{name}/versions": {"get", "post"},
        "/v1/models/{name}/versions/{version}": {"get", "patch"},
        "/v1/models/{name}/versions/{version}/archive": {"post"},
        "/v1/models/{name}/versions/{version}/artifact": {"get"},
        "/v1/models/{name}/versions/{version}/log": {"get"},
        "/v1/models/{name}/versions/{version}/compress": {"post"},
        "/v1/models/{name}/aliases": {"get"},
        "/v1/models/{name}/aliases/{alias}": {"post", "delete"},
        "/v1/models/{name}/aliases/{alias}/artifact": {"get"},
        "/v1/models/{name}/promotions": {"get"},
        "/v1/models/{name}/policy": {"get", "put"},
        "/v1/models/{name}/log": {"get"},
        "/v1/jobs/{job_id}": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    promote = paths["/v1/models/{name}/aliases/{alias}"]["post"]["responses"]
    assert {"403", "409", "422"} <= set(promote)
    pull = paths["/v1/models/{name}/aliases/{alias}/artifact"]["get"]["responses"]
    assert {"200", "304"} <= set(pull)
    assert "application/octet-stream" in pull["200"]["content"]
