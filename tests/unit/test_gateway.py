"""The gateway routes /api/<service>/ to each service, in process and over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kiln_cli.gateway import Gateway
from tests.support.apps import free_port


def echo_app(name: str) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "service": name,
                "path": request.url.path,
                "query": str(request.query_params),
                "auth": request.headers.get("authorization"),
                "body": (await request.body()).decode(),
            },
            headers={"x-from": name},
        )

    return Starlette(routes=[Route("/{rest:path}", echo, methods=["GET", "POST"])])


async def test_routes_each_service_and_passes_auth_through() -> None:
    gateway = Gateway({"dataset": echo_app("dataset"), "serving": echo_app("serving")})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://kiln"
    ) as client:
        r = await client.post(
            "/api/serving/v1/endpoints/x:predict?k=1",
            content=b"abc",
            headers={"authorization": "Bearer t"},
        )
        assert r.json() == {
            "service": "serving",
            "path": "/v1/endpoints/x:predict",
            "query": "k=1",
            "auth": "Bearer t",
            "body": "abc",
        }
        unknown = await client.get("/api/nope/v1/x")
        assert unknown.status_code == 404
        assert unknown.headers["content-type"] == "application/problem+json"
        assert (await client.get("/api/dataset/metrics")).status_code == 404


async def test_refuses_oversized_bodies_before_the_service_sees_them() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    gateway = Gateway({"dataset": app}, max_body_bytes=10)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://kiln"
    ) as client:
        r = await client.post("/api/dataset/v1/datasets", content=b"x" * 11)
    assert r.status_code == 413 and r.json()["status"] == 413
    assert seen == []


async def test_forwards_over_http_to_a_service_process() -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(echo_app("training"), port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no started event
            await asyncio.sleep(0.02)
        gateway = Gateway({"training": f"http://127.0.0.1:{port}"})
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://kiln"
        ) as client:
            r = await client.post(
                "/api/training/v1/jobs?x=2", json={"a": 1}, headers={"authorization": "B"}
            )
        assert r.status_code == 200 and r.headers["x-from"] == "training"
        assert r.json()["path"] == "/v1/jobs" and r.json()["auth"] == "B"
        assert r.json()["body"] == '{"a":1}' and r.json()["query"] == "x=2"
    finally:
        server.should_exit = True
        await serving
