"""The five service skeletons as separate processes on the real stack: each migrates its own
schema, answers health and readiness, and a ping from one reaches every other in one trace."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from kiln_core.db import Database
from kiln_core.events import SERVICES
from tests.conftest import drop_namespace, require_service, stack_url

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pg_url() -> str:
    url = stack_url("database_url")
    require_service("PostgreSQL", url)
    return url


@pytest.fixture(scope="module")
def stack(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    tmp_path = tmp_path_factory.mktemp("stack")
    bus_url, store_url = stack_url("bus_url"), stack_url("storage_url")
    require_service("Kafka", bus_url)
    require_service("MinIO", store_url)
    namespace = f"t{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "KILN_DATABASE_URL": pg_url,
        "KILN_BUS_URL": f"{bus_url}?namespace={namespace}",
        "KILN_STORAGE_URL": store_url,
        "KILN_LOG_LEVEL": "WARNING",
    }
    ports = {name: free_port() for name in SERVICES}
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for name in SERVICES:
        for args in (["serve", name, "--port", str(ports[name])], ["consume", name]):
            log = (tmp_path / f"{name}-{args[0]}.log").open("wb")
            procs.append(
                (
                    f"{name} {args[0]}",
                    subprocess.Popen(
                        [sys.executable, "-m", "kiln_cli.main", *args],
                        env=env,
                        stdout=log,
                        stderr=log,
                    ),
                )
            )
    try:
        deadline = time.monotonic() + 90
        for name, port in ports.items():
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                dead = [(n, p.returncode) for n, p in procs if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    logs = "\n".join(
                        f"--- {f.name}\n{f.read_text()[-2000:]}"
                        for f in sorted(tmp_path.glob("*.log"))
                    )
                    pytest.fail(f"{name} not ready (exited: {dead})\n{logs}")
                time.sleep(0.2)
        yield ports
    finally:
        for _, proc in procs:
            proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_namespace(bus_url, namespace)


async def test_each_service_migrated_its_own_schema(stack: dict[str, int], pg_url: str) -> None:
    db = Database(pg_url, schema="public")
    try:
        async with db.engine.connect() as conn:
            for name in SERVICES:
                tables = set(
                    (
                        await conn.execute(
                            text(
                                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"
                            ),
                            {"s": name},
                        )
                    ).scalars()
                )
                assert {"outbox", "inbox", "ping_received", "alembic_version"} <= tables, name
    finally:
        await db.dispose()


def test_ping_reaches_every_other_service_in_one_trace(stack: dict[str, int]) -> None:
    for name, port in stack.items():
        health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        assert health == {"status": "alive", "service": name}
    sent = httpx.post(f"http://127.0.0.1:{stack['training']}/v1/pings", json={"message": "hello"})
    assert sent.status_code == 202
    ping = sent.json()
    assert ping["trace_id"]
    received: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + 30
    while len(received) < 4 and time.monotonic() < deadline:
        for name, port in stack.items():
            if name == "training" or name in received:
                continue
            rows = httpx.get(
                f"http://127.0.0.1:{port}/v1/pings/received", params={"ping_id": ping["ping_id"]}
            ).json()
            if rows:
                received[name] = rows[0]
        time.sleep(0.1)
    assert sorted(received) == sorted(set(SERVICES) - {"training"})
    assert {r["trace_id"] for r in received.values()} == {ping["trace_id"]}
    assert all(r["origin"] == "training" and r["message"] == "hello" for r in received.values())
    # the sender does not consume its own ping
    own = httpx.get(
        f"http://127.0.0.1:{stack['training']}/v1/pings/received",
        params={"ping_id": ping["ping_id"]},
    ).json()
    assert own == []
