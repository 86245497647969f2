"""Readiness that means ready: serving's /readyz checks Triton (and the models its routes send
traffic to) beside the database, bus and store, and names Triton when it is unreachable."""

from __future__ import annotations

import httpx
import pytest

from kiln_core.service import ServiceRuntime
from tests.serving.conftest import drop_schema, serving, stack_settings
from tests.support.apps import free_port

pytestmark = pytest.mark.integration


async def test_readyz_names_triton_when_triton_is_unreachable(
    request: pytest.FixtureRequest, unique: str
) -> None:
    # A port nobody listens on: the shared Triton keeps running for everyone else.
    settings = stack_settings(request, unique, f"grpc://127.0.0.1:{free_port()}")
    try:
        async with serving(settings) as (client, _):
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.headers["content-type"] == "application/problem+json"
            body = r.json()
            assert body["checks"]["triton"].startswith("TritonUnavailable")
            assert "triton" in body["detail"] and "does not answer" in body["detail"]
            assert {k: v for k, v in body["checks"].items() if k != "triton"} == {
                "database": "ok",
                "bus": "ok",
                "store": "ok",
            }
            metrics = (await client.get("/metrics")).text
            assert 'kiln_dependency_up{dependency="triton"} 0.0' in metrics
            assert "kiln_ready 0.0" in metrics
    finally:
        await drop_schema(settings)


async def test_readyz_is_ready_with_triton_up(
    service: tuple[httpx.AsyncClient, ServiceRuntime],
) -> None:
    client, _ = service
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["triton"] == "ok"
