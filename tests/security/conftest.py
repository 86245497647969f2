"""All five services on the real stack, each a live uvicorn server on a loopback port with
authentication required, for the whole security suite.

The servers run in one thread of their own with its own event loop, so tests (and
schemathesis, which is synchronous) talk to them over real HTTP: real ``Content-Length`` and
chunked bodies reach the edge middleware as they would in production. Every log record of the
run is kept, so the suite can check that no secret was ever logged."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from kiln_core.auth import issue_token
from kiln_core.db import Database
from kiln_core.http import create_app
from kiln_core.service import ServiceRuntime, ServiceSpec
from kiln_core.settings import Settings
from tests.conftest import delete_namespace_topics, require_service, stack_url
from tests.support.apps import free_port

SERVICES = ("dataset", "annotation", "registry", "training", "serving")
ROLES = ("admin", "data-engineer", "annotator", "reviewer", "ml-engineer", "viewer")


class LogCapture(logging.Handler):
    """Every record of the run, formatted as the services' handlers would print it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            extras = {k: v for k, v in vars(record).items() if k not in _PLAIN_RECORD}
            self.lines.append(f"{line} {extras!r}")
        except Exception:  # noqa: BLE001 - a record that cannot format is kept as its repr
            self.lines.append(repr(vars(record)))


_PLAIN_RECORD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@dataclass
class Stack:
    """The running services: base URLs, settings, and what was logged."""

    settings: Settings
    urls: dict[str, str]
    logs: LogCapture
    tokens: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # never the settings or tokens: failure reports get printed
        return f"Stack({sorted(self.urls)})"

    def token(self, subject: str, *roles: str, **kwargs: Any) -> str:
        # Everyone signs in as a member of the team the suite's resources belong to, unless a
        # test names other teams.
        kwargs.setdefault("teams", [self.settings.default_team])
        token = issue_token(subject, list(roles), self.settings, **kwargs)
        self.tokens.append(token)
        return token

    def headers(self, subject: str, *roles: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(subject, *roles)}"}

    def client(self, service: str, subject: str | None = None, *roles: str) -> httpx.Client:
        """A client of one service, signed in as ``subject`` with ``roles`` (or anonymous)."""
        headers = self.headers(subject, *roles) if subject else {}
        return httpx.Client(base_url=self.urls[service], headers=headers, timeout=60)


def _spec(name: str) -> ServiceSpec:
    import importlib

    # Each service's parts are listed in its `service` module, which only entry points import.
    return importlib.import_module(f"kiln_{name}.service").SERVICE  # type: ignore[no-any-return]


class _Servers(threading.Thread):
    """uvicorn servers for every service, in one thread and one event loop."""

    def __init__(self, settings: Settings, ports: dict[str, int]) -> None:
        super().__init__(name="security-stack", daemon=True)
        self.settings = settings
        self.ports = ports
        self.servers: list[uvicorn.Server] = []
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported to the fixture
            self.failure = exc

    async def _serve(self) -> None:
        for name, port in self.ports.items():
            runtime = ServiceRuntime(_spec(name), self.settings)
            app = create_app(runtime, background=[runtime.run_events])
            config = uvicorn.Config(
                app, host="127.0.0.1", port=port, log_config=None, lifespan="on", access_log=True
            )
            self.servers.append(uvicorn.Server(config))
        await asyncio.gather(*(server.serve() for server in self.servers))

    def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True
        self.join(60)


def _wait_ready(urls: dict[str, str], servers: _Servers, timeout_s: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    pending = dict(urls)
    while pending:
        if servers.failure is not None or not servers.is_alive():
            raise RuntimeError(f"the services did not start: {servers.failure!r}")
        for name, url in list(pending.items()):
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"services not up within {timeout_s}s: {sorted(pending)}")
        time.sleep(0.2)


@contextmanager
def _serving(settings: Settings) -> Iterator[Stack]:
    """The five services on ``settings``, live on loopback ports, with every log record kept."""
    capture = LogCapture()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    # The Kafka client's debug chatter (every fetch) is noise and costs seconds per test.
    quiet = {name: logging.getLogger(name).level for name in ("aiokafka", "kafka")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.INFO)
    ports = {name: free_port() for name in SERVICES}
    servers = _Servers(settings, ports)
    servers.start()
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        _wait_ready(urls, servers)
        yield Stack(settings, urls, capture)
    finally:
        servers.stop()
        root.removeHandler(capture)
        root.setLevel(previous_level)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


# Package scope: the servers stop once the security suite is done, not at the end of a CI run.
@pytest.fixture(scope="package")
def stack() -> Iterator[Stack]:
    """The five services on PostgreSQL, Kafka, MinIO and Triton (a CI run without them fails)."""
    urls_in = {k: stack_url(k) for k in ("database_url", "bus_url", "storage_url", "triton_url")}
    require_service("PostgreSQL", urls_in["database_url"])
    require_service("Kafka", urls_in["bus_url"])
    require_service("MinIO", urls_in["storage_url"])
    require_service("Triton", urls_in["triton_url"].replace("grpc://", "http://"))
    unique = uuid.uuid4().hex[:10]
    bus = urls_in["bus_url"]
    settings = Settings(
        database_url=urls_in["database_url"],
        db_schema_prefix=f"sec{unique}_",
        bus_url=f"{bus}{'&' if '?' in bus else '?'}namespace=sec{unique}",
        storage_url=urls_in["storage_url"].replace("/kiln?", f"/sec{unique}?"),
        triton_url=urls_in["triton_url"],
        celery_broker_url="memory://",
        auth_required=True,
        # Small, so the oversize tests send little; every upload of the suite stays below it.
        max_request_bytes=4 * 1024 * 1024,
        # A secret of this run only, so the log check can look for it verbatim.
        jwt_secret=f"jwt-secret-{uuid.uuid4().hex}",
    )
    try:
        with _serving(settings) as running:
            yield running
    finally:
        # Teardown may run inside the test session's event loop: clean up from a thread.
        cleaner = threading.Thread(target=lambda: asyncio.run(_drop(settings, bus, f"sec{unique}")))
        cleaner.start()
        cleaner.join(60)


@pytest.fixture(scope="package")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The five services on the embedded defaults (SQLite, a local directory store, the
    in-process bus), with Triton from the local stack: serving needs one either way."""
    triton = stack_url("triton_url")
    require_service("Triton", triton.replace("grpc://", "http://"))
    state = tmp_path_factory.mktemp("embedded-stack")
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{state}/{{service}}.db",
        bus_url=f"embedded://sec{uuid.uuid4().hex[:10]}",
        storage_url=f"file://{state}/store",
        triton_url=triton,
        celery_broker_url="memory://",
        auth_required=True,
        max_request_bytes=4 * 1024 * 1024,
        jwt_secret=f"jwt-secret-{uuid.uuid4().hex}",
    )
    with _serving(settings) as running:
        yield running


async def _drop(settings: Settings, bus: str, namespace: str) -> None:
    db = Database(settings.database_url, schema="public")
    async with db.engine.begin() as conn:
        for name in SERVICES:
            await conn.execute(
                text(f'DROP SCHEMA IF EXISTS "{settings.db_schema_prefix}{name}" CASCADE')
            )
    await db.dispose()
    await delete_namespace_topics(bus, namespace)
