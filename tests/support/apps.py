"""Run a service in-process for tests: its app with lifespan (migrations, embedded worker) and
its event loop (inbox + relay), reachable through an httpx client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from kiln_core.auth import issue_token
from kiln_core.http import create_app
from kiln_core.service import ServiceRuntime, ServiceSpec
from kiln_core.settings import Settings


@asynccontextmanager
async def running_service(
    spec: ServiceSpec, settings: Settings, *, roles: list[str] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceRuntime]]:
    runtime = ServiceRuntime(spec, settings)
    app = create_app(runtime, background=[runtime.run_events])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", timeout=60
        ) as client:
            token = issue_token(
                "tester", roles or ["admin"], settings, teams=[settings.default_team]
            )
            client.headers["authorization"] = f"Bearer {token}"
            yield client, runtime


async def wait_job(client: httpx.AsyncClient, url: str, timeout_s: float = 60) -> dict[str, Any]:
    """Poll a job until it finishes; returns its final state."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job = (await client.get(url)).json()
        if job.get("status") in ("succeeded", "failed"):
            return job  # type: ignore[no-any-return]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job did not finish in {timeout_s}s: {job}")
        await asyncio.sleep(0.05)


def free_port() -> int:
    """A loopback port nobody listens on now (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
