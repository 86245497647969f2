"""What the peer benchmarks share: installing a peer into its own virtual environment (via its
``tools/install_peer_*.sh``), a PostgreSQL database of its own, starting and stopping its server
as a process group, and the load driver that runs the same workload against Kiln and the peer.

A peer that fails to install or start raises :class:`PeerFailed`: the benchmark fails loudly
rather than reporting Kiln alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.soak import (  # noqa: E402
    Stack,
    _drop_bucket,
    _drop_schemas,
    _drop_topics,
    _flush_redis,
)

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = "postgresql://kiln:kiln@127.0.0.1:55432/kiln"
PG_HOST, PG_PORT, PG_USER, PG_PASSWORD = "127.0.0.1", 55432, "kiln", "kiln"
MINIO = ("127.0.0.1:59000", "kiln", "kilnkilnkiln")


class PeerFailed(RuntimeError):
    """A peer could not be installed, started or driven: the benchmark's result is void."""


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def install_peer(script: str) -> Path:
    """Run ``tools/<script>`` (idempotent) and return the peer environment's python."""
    log(f"peer: {script}")
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / script)], capture_output=True, text=True, timeout=1800
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).exists():
        raise PeerFailed(f"{script} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return Path(lines[-1])


def peer_version(python: Path, package: str) -> str:
    """The installed version of ``package`` in a peer's environment."""
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise PeerFailed(f"{package} is not importable in {python}: {out.stderr[-500:]}")
    return out.stdout.strip()


async def ensure_database(name: str, *, fresh: bool = False) -> None:
    """A PostgreSQL database of the peer's own on the shared server (created if missing)."""
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        if fresh:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def ensure_bucket(bucket: str) -> None:
    from minio import Minio

    client = Minio(MINIO[0], access_key=MINIO[1], secret_key=MINIO[2], secure=False)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)


@dataclass
class Server:
    """A peer's server process (its own process group), its log and its base URL."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    log_path: Path
    port: int
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                list(self.argv),
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=REPO,
            )

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def wait_ready(self, path: str, timeout_s: float, ok: Sequence[int] = (200,)) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while True:
                if self.popen is not None and self.popen.poll() is not None:
                    raise PeerFailed(
                        f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}"
                    )
                try:
                    async with session.get(self.url + path) as r:
                        if r.status in ok:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise PeerFailed(f"{self.name} not ready in {timeout_s:.0f}s:\n{self.tail()}")
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


class KilnServices(Stack):
    """Some services of ``kiln up`` (each one's API and event process) as real processes, with
    their own schemas, topics, bucket and Redis db (see :class:`bench.soak.Stack`)."""

    services: tuple[str, ...] = ("dataset", "annotation")

    def commands(self) -> list[tuple[str, list[str]]]:
        keep = {f"{s}-{kind}" for s in self.services for kind in ("api", "events")}
        return [(n, a) for n, a in super().commands() if n in keep]

    def start(self) -> None:
        from kiln_core.events import SERVICES

        self.ports = {name: free_port() for name in SERVICES}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.env()
        for name, args in self.commands():
            self._spawn(name, [sys.executable, "-m", "kiln_cli.main", *args], env)

    async def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            for service in self.services:
                url = f"http://127.0.0.1:{self.ports[service]}/readyz"
                while True:
                    self.check_alive()
                    try:
                        async with session.get(url) as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        raise PeerFailed(f"{url} not ready within {timeout_s:.0f}s")
                    await asyncio.sleep(0.3)

    async def clean_up(self) -> None:
        """Drop this stack's schemas, topics, bucket and Redis db (it serves no models)."""
        from kiln_cli.infra import local_stack_env

        env = local_stack_env()
        await _drop_schemas(env, self.prefix)
        await _drop_topics(env, self.namespace)
        await asyncio.to_thread(_drop_bucket, env, self.bucket)
        await asyncio.to_thread(_flush_redis, env, self.redis_db)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Timings:
    """Latencies (seconds) per operation and the errors seen while driving one side."""

    ops: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, op: str, seconds: float) -> None:
        self.ops.setdefault(op, []).append(seconds)

    def ms(self, op: str, q: float) -> float:
        return round(percentile(self.ops.get(op, []), q) * 1000, 2)


async def timed(timings: Timings, op: str, call: Callable[[], Awaitable[Any]]) -> Any:
    started = time.perf_counter()
    answer = await call()
    timings.add(op, time.perf_counter() - started)
    return answer


async def drive(workers: int, work: Callable[[int], Awaitable[None]]) -> float:
    """Run ``workers`` concurrent loops of ``work`` (each returns when it is done); seconds."""
    started = time.perf_counter()
    await asyncio.gather(*(work(i) for i in range(workers)))
    return time.perf_counter() - started
