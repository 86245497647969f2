"""HTTP edge behaviour shared by every service: health, problem+json, auth, limits, ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from kiln_core.auth import issue_token
from kiln_core.http import create_app
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings
from kiln_dataset.service import SERVICE


@pytest.fixture
async def client(tmp_path: Path, unique: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
        bus_url=f"embedded://h{unique}",
        storage_url=f"file://{tmp_path}/store",
        auth_required=True,
        max_request_bytes=10_000,
    )
    runtime = ServiceRuntime(SERVICE, settings)
    await runtime.start()
    app = create_app(runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        c.headers["authorization"] = "Bearer " + issue_token(
            "alice", ["ml-engineer"], settings, teams=["default"]
        )
        c.settings = settings  # type: ignore[attr-defined]
        yield c
    await runtime.stop()


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "alive"
    ready = (await client.get("/readyz")).json()
    assert ready["checks"] == {"database": "ok", "bus": "ok", "store": "ok"}


async def test_invalid_body_is_a_problem_naming_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/pings", json={"message": ["not", "a", "string"]})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("/validation-failed")
    assert body["errors"][0]["field"] == "body.message"
    assert "Traceback" not in r.text


async def test_malformed_json_is_a_problem(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/pings", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"


async def test_unknown_route_is_a_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_oversized_body_is_refused_before_reading(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/pings", content=b"x" * 20_000, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["type"].endswith("/payload-too-large")


async def test_missing_and_bad_tokens_are_401(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/pings", json={}, headers={"authorization": ""})
    assert r.status_code == 401
    r = await client.post("/v1/pings", json={}, headers={"authorization": "Bearer forged.token.x"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"


async def test_role_without_permission_is_403_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    viewer = issue_token("victor", ["viewer"], client.settings, teams=["default"])  # type: ignore[attr-defined]
    before = (await client.get("/v1/pings/received")).json()
    r = await client.post("/v1/pings", json={}, headers={"authorization": f"Bearer {viewer}"})
    assert r.status_code == 403
    assert r.json()["type"].endswith("/forbidden")
    assert (
        await client.get("/v1/pings/received", headers={"authorization": f"Bearer {viewer}"})
    ).json() == before


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len((await client.get("/healthz")).headers["x-request-id"]) == 32


async def test_accepted_ping_reports_its_event(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/pings", json={"message": "hi"})
    assert r.status_code == 202
    body = r.json()
    assert body["event_type"] == "kiln.dataset.ping.sent"
    assert body["trace_id"] and len(body["trace_id"]) == 32


async def test_metrics_are_exposed(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    text = (await client.get("/metrics")).text
    assert "kiln_http_requests_total" in text
