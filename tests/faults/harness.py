"""The fault suite's private stack and the Kiln processes that run on it.

The infrastructure is the ``faults`` layout of ``kiln infra`` (its own PostgreSQL, Redis, Kafka,
MinIO and Triton under ``.kiln/faults/`` on shifted ports), so killing a component here never
touches the stack other tests share. Every Kiln service runs as the real ``kiln serve``,
``kiln consume`` or ``kiln worker`` subprocess, exactly as ``kiln up`` runs it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

import kiln_cli.infra as infra
from tests.support.apps import free_port

LAYOUT = infra.FAULTS
READY_TIMEOUT_S = 90.0

# What each process kind runs: `kiln <verb> <service>`.
VERBS = {"api": "serve", "events": "consume", "worker": "worker"}


@dataclass
class Counts:
    """What one scenario sent and what it found afterwards."""

    scenario: str
    kind: str
    accepted: int = 0
    present: int = 0
    duplicated: int = 0
    lost: int = 0
    notes: str = ""

    def as_row(self) -> tuple[str, str, int, int, int, int, str]:
        return (
            self.scenario,
            self.kind,
            self.accepted,
            self.present,
            self.duplicated,
            self.lost,
            self.notes,
        )


@dataclass
class Stack:
    """The Kiln processes of one fault-suite session, all pointed at the private stack."""

    run_dir: Path
    prefix: str  # PostgreSQL schema prefix: this session's tables only
    namespace: str  # Kafka topic and group prefix: this session's events only
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, **LAYOUT.env()}
        env["KILN_BUS_URL"] = f"{env['KILN_BUS_URL']}?namespace={self.namespace}"
        env["KILN_DB_SCHEMA_PREFIX"] = self.prefix
        env["KILN_LOG_LEVEL"] = "WARNING"
        env["KILN_AUTH_REQUIRED"] = "false"
        env["KILN_TRACE_EXPORTER"] = "none"
        # A run whose worker died is taken back within seconds, not the default quarter minute.
        env["KILN_TRAINING_LEASE_S"] = "4"
        env["KILN_TRAINING_WORKER_TTL_S"] = "3"
        if "serving" in self.ports:
            env["KILN_SERVING_URL"] = self.url("serving")
        env.pop("KILN_HOME", None)
        return env

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def log(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``<service>-<api|events|worker>`` unless it is already running."""
        service, kind = name.rsplit("-", 1)
        current = self.procs.get(name)
        if current is not None and current.poll() is None:
            return current
        args = [VERBS[kind], service]
        if kind == "api":
            self.ports.setdefault(service, free_port())
            args += ["--port", str(self.ports[service])]
        if kind == "worker":
            args += ["--concurrency", "1"]
        with self.log(name).open("ab") as log:
            log.write(f"\n=== started at {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "kiln_cli.main", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own process group, so a SIGKILL takes its threads and children with it.
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Signal a Kiln process (and its group); wait for it to die on SIGKILL."""
        proc = self.procs[name]
        if proc.poll() is not None:
            raise AssertionError(f"{name} already exited with {proc.returncode}")
        os.killpg(proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(30)
        return proc.pid

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def dead(self) -> dict[str, int | None]:
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    def tail(self, names: Iterable[str] | None = None, chars: int = 3000) -> str:
        chunks = []
        for name in names or self.procs:
            try:
                text = self.log(name).read_text(errors="replace")[-chars:]
            except OSError:
                continue
            chunks.append(f"--- {name} ---\n{text}")
        return "\n".join(chunks)

    async def wait_ready(self, services: Iterable[str], timeout_s: float = READY_TIMEOUT_S) -> None:
        """Every listed API answers /readyz 200 (database, bus and store all reachable)."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=5) as client:
            for service in services:
                last: object = None
                while True:
                    try:
                        response = await client.get(f"{self.url(service)}/readyz")
                        if response.status_code == 200:
                            break
                        last = response.text[:300]
                    except httpx.HTTPError as exc:
                        last = repr(exc)
                    if self.dead() or time.monotonic() > deadline:
                        raise AssertionError(
                            f"{service} not ready after {timeout_s:.0f}s (last: {last}; exited: "
                            f"{self.dead()})\n{self.tail()}"
                        )
                    await asyncio.sleep(0.3)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(15)

    # --- reading what the services recorded (straight from their databases) ----------------

    def schema(self, service: str) -> str:
        return f"{self.prefix}{service}"

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(
            host=infra.HOST,
            port=LAYOUT.pg_port,
            user=infra.PG_USER,
            password=infra.PG_PASSWORD,
            database=infra.PG_DB,
            timeout=10,
        )
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()


def component_up(*names: str) -> None:
    """(Re)start private infrastructure components and wait until they are healthy."""
    infra.up(list(names), echo=lambda _line: None, layout=LAYOUT)


async def wait_until(check: Any, timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    """Poll an async ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f}s (last: {last!r})")
        await asyncio.sleep(interval_s)
