"""Graceful overload at the edge: the gateway limits each principal's rate (429) and its own
requests in flight (503), an API process sheds past its in-flight cap (503), each with a
Retry-After and a problem body; probes are still answered at capacity."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from kiln_cli.gateway import Gateway, RateLimiter, principal_key
from kiln_core.auth import issue_token
from kiln_core.http import EdgeMiddleware
from kiln_core.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_principal_gets_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3.0, clock=clock)
    assert [limiter.take("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("alice") == pytest.approx(0.5)  # one token back in half a second
    assert limiter.take("bob") == 0.0  # others keep their own budget
    clock.now += 0.5
    assert limiter.take("alice") == 0.0
    assert limiter.take("alice") > 0


def test_the_principal_is_the_tokens_subject_else_the_token_else_the_address() -> None:
    settings = Settings()
    a1 = issue_token("alice", ["viewer"], settings)
    a2 = issue_token("alice", ["admin"], settings, ttl_s=60)
    assert principal_key({"authorization": f"Bearer {a1}"}, None) == principal_key(
        {"authorization": f"Bearer {a2}"}, None
    )
    assert principal_key({"authorization": "Bearer junk"}, None).startswith("token:")
    assert principal_key({}, ("10.0.0.7", 5000)) == "addr:10.0.0.7"


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_the_gateway_answers_429_with_retry_after_past_a_principals_rate() -> None:
    gateway = Gateway({"dataset": ok_app}, rate_per_principal=5, burst_per_principal=5)
    settings = Settings()
    alice = {"authorization": f"Bearer {issue_token('alice', ['viewer'], settings)}"}
    bob = {"authorization": f"Bearer {issue_token('bob', ['viewer'], settings)}"}
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        codes = [
            (await client.get("/api/dataset/v1/x", headers=alice)).status_code for _ in range(5)
        ]
        assert codes == [200] * 5
        refused = await client.get("/api/dataset/v1/x", headers=alice)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["status"] == 429
        assert (await client.get("/api/dataset/v1/x", headers=bob)).status_code == 200


async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.sleep(0.3)
    await ok_app(scope, receive, send)


async def _concurrent(app: Any, path: str, n: int) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return list(await asyncio.gather(*(client.get(path) for _ in range(n))))


async def test_the_gateway_sheds_past_its_requests_in_flight() -> None:
    gateway = Gateway({"dataset": slow_app}, max_inflight=2)
    answers = await _concurrent(gateway, "/api/dataset/v1/x", 4)
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 503, 503]
    assert all(r.headers["retry-after"] == "1" for r in answers if r.status_code == 503)


async def test_an_api_process_sheds_past_its_cap_but_answers_probes() -> None:
    edge = EdgeMiddleware(slow_app, service="test", max_body=1024, max_inflight=3)
    answers = await _concurrent(edge, "/v1/things", 5)
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 200, 200, 503, 503]
    shed = next(r for r in answers if r.status_code == 503)
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["type"].endswith("/overloaded")

    async def probe_while_full() -> list[int]:
        transport = httpx.ASGITransport(app=edge)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            busy = [asyncio.ensure_future(client.get("/v1/things")) for _ in range(3)]
            await asyncio.sleep(0.05)
            probe = await client.get("/readyz")
            await asyncio.gather(*busy)
            return [probe.status_code]

    assert await probe_while_full() == [200]
