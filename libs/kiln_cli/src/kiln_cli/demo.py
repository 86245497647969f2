"""``kiln demo``: the main job on the embedded defaults, every service in one process.

For now it is the skeleton loop: the dataset service sends a ping through its public API and
each other service records it from the bus, all in one trace. Later issues grow this into the
full data → labels → model → serving loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import typer

from kiln_cli.services import load_spec
from kiln_core.events import SERVICES
from kiln_core.http import create_app
from kiln_core.service import ServiceRuntime


async def run_demo(timeout_s: float) -> dict[str, Any]:
    runtimes = {name: ServiceRuntime(load_spec(name)) for name in SERVICES}
    stop = asyncio.Event()
    for runtime in runtimes.values():
        await runtime.start()
    typer.echo(
        f"started {len(runtimes)} services in-process "
        f"(bus {runtimes['dataset'].bus.url}, db {runtimes['dataset'].db.url})"
    )
    tasks = [asyncio.create_task(r.run_events(stop)) for r in runtimes.values()]
    clients = {
        name: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(r)), base_url=f"http://{name}"
        )
        for name, r in runtimes.items()
    }
    try:
        started = time.perf_counter()
        sent = await clients["dataset"].post("/v1/pings", json={"message": "hello from kiln demo"})
        sent.raise_for_status()
        ping = sent.json()
        typer.echo(f"dataset sent ping {ping['ping_id']} (trace {ping['trace_id']})")
        received: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(received) < len(SERVICES) - 1 and time.monotonic() < deadline:
            for name, client in clients.items():
                if name == "dataset" or name in received:
                    continue
                rows = (
                    await client.get("/v1/pings/received", params={"ping_id": ping["ping_id"]})
                ).json()
                if rows:
                    received[name] = rows[0]
                    ms = (time.perf_counter() - started) * 1000
                    typer.echo(
                        f"  {name:<10} received it after {ms:6.1f} ms (trace {rows[0]['trace_id']})"
                    )
            await asyncio.sleep(0.02)
        traces = {r["trace_id"] for r in received.values()} | {ping["trace_id"]}
        return {
            "ok": len(received) == len(SERVICES) - 1 and len(traces) == 1,
            "ping_id": ping["ping_id"],
            "received_by": sorted(received),
            "one_trace": len(traces) == 1,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        }
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients.values():
            await client.aclose()
        for runtime in runtimes.values():
            await runtime.stop()
