"""What operators see of a process: ``/metrics``, ``/healthz`` and ``/readyz`` on a port of its
own for the processes without an API (event consumers, Celery workers), and the sampler that
turns state only a query shows (outbox backlog, jobs by state, queue depth, consumer lag) into
gauges, every ``KILN_METRICS_INTERVAL_S`` in each event process. Readiness gauges follow each
``/readyz`` answer (the orchestrator's probes ask for it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kiln_core.db import aware, utcnow
from kiln_core.errors import PROBLEM_BASE
from kiln_core.metrics import (
    CELERY_QUEUE_DEPTH,
    CONSUMER_LAG,
    JOBS,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PENDING,
    record_checks,
)
from kiln_core.outbox import OUTBOX

if TYPE_CHECKING:  # the runtime hands itself in; importing it here would be a cycle
    from celery import Celery

    from kiln_core.service import ServiceRuntime

log = logging.getLogger(__name__)

Checks = Callable[[], Awaitable[dict[str, str]]]


def probe_app(process: str, checks: Checks) -> Starlette:
    """``/healthz`` (alive), ``/readyz`` (``checks`` all "ok", else 503 problem+json naming
    what failed) and ``/metrics`` of one process."""

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive", "process": process})

    async def readyz(_: Request) -> Response:
        outcome = await checks()
        if record_checks(outcome):
            return JSONResponse({"status": "ready", "process": process, "checks": outcome})
        body = {
            "type": PROBLEM_BASE + "not-ready",
            "title": "Dependencies unavailable",
            "status": 503,
            "detail": ", ".join(f"{k}: {v}" for k, v in outcome.items() if v != "ok"),
            "checks": outcome,
        }
        return JSONResponse(body, status_code=503, media_type="application/problem+json")

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    )


class _ProbeServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process's own (the consumer's stop event,
    Celery's warm shutdown) stay in charge of stopping it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _server(app: Starlette, host: str, port: int) -> _ProbeServer:
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    return _ProbeServer(config)


async def _serve(server: _ProbeServer) -> None:
    try:
        await server.serve()
    except SystemExit:  # uvicorn's answer to a port in use: the process's own work goes on
        log.error(
            "probe endpoints not served: the port is taken (set --metrics-port)",
            extra={"port": server.config.port},
        )


async def serve_probes(app: Starlette, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` on ``host:port`` in this event loop until ``stop``."""
    server = _server(app, host, port)
    task = asyncio.ensure_future(_serve(server))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopped.cancel()
    await task


def serve_probes_in_thread(app: Starlette, host: str, port: int) -> threading.Thread:
    """Serve ``app`` from a daemon thread of its own (for a process whose main thread another
    loop owns, such as a Celery worker)."""
    server = _server(app, host, port)
    thread = threading.Thread(
        target=lambda: asyncio.run(_serve(server)), name="kiln-probes", daemon=True
    )
    thread.start()
    return thread


def broker_check(app: Celery, timeout_s: float = 3.0) -> Checks:
    """A worker's readiness: its broker accepts a connection."""

    def connect() -> None:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)

    async def check() -> dict[str, str]:
        try:
            await asyncio.wait_for(asyncio.to_thread(connect), timeout_s + 1)
            return {"broker": "ok"}
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            return {"broker": f"{type(exc).__name__}: {exc}"[:300]}

    return check


# --- the sampler of the event process ---------------------------------------------------------


async def _sample_outbox(runtime: ServiceRuntime) -> None:
    query = select(func.count(), func.min(OUTBOX.c.created_at)).where(
        OUTBOX.c.published_at.is_(None)
    )
    async with runtime.db.session() as session:
        pending, oldest = (await session.execute(query)).one()
    OUTBOX_PENDING.set(pending)
    age = (utcnow() - aware(oldest)).total_seconds() if oldest is not None else 0.0
    OUTBOX_OLDEST_AGE.set(max(age, 0.0))


_job_states: dict[str, set[str]] = {}


async def _sample_jobs(runtime: ServiceRuntime) -> None:
    for table in runtime.spec.job_tables:
        columns = table.__table__.c  # type: ignore[attr-defined]
        name = str(table.__tablename__)
        query = select(columns.status, func.count()).group_by(columns.status)
        async with runtime.db.session() as session:
            counts = {str(state): int(n) for state, n in (await session.execute(query)).all()}
        # A state that emptied must read 0, not keep its last count.
        seen = _job_states.setdefault(name, set())
        seen.update(counts)
        for state in seen:
            JOBS.labels(name, state).set(counts.get(state, 0))


def _queue_depths(app: Celery, queues: tuple[str, ...]) -> dict[str, int]:
    from kombu.exceptions import ChannelError  # heavy: Celery's, loaded where used

    depths: dict[str, int] = {}
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
        channel = conn.default_channel
        for queue in queues:
            try:
                depths[queue] = int(channel.queue_declare(queue, passive=True).message_count)
            except ChannelError:  # never declared: nothing was ever sent to it
                depths[queue] = 0
    return depths


async def _sample_queues(runtime: ServiceRuntime) -> None:
    jobs = runtime.jobs
    if jobs is None or jobs.embedded:
        return
    depths = await asyncio.to_thread(_queue_depths, jobs.app, jobs.work.queues)
    for queue, depth in depths.items():
        CELERY_QUEUE_DEPTH.labels(queue).set(depth)


async def _sample_lag(runtime: ServiceRuntime) -> None:
    consumer = runtime.inbox.consumer
    if consumer is None:
        return
    lags = await consumer.lag()
    CONSUMER_LAG.clear()  # partitions moved to another member are that member's to report
    for (topic, partition), lag in lags.items():
        CONSUMER_LAG.labels(consumer.group_id, topic, str(partition)).set(lag)


SAMPLES: dict[str, Callable[[ServiceRuntime], Awaitable[None]]] = {
    "outbox": _sample_outbox,
    "jobs": _sample_jobs,
    "queues": _sample_queues,
    "lag": _sample_lag,
}


async def sample_metrics(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
    """Refresh the sampled gauges every ``metrics_interval_s`` until ``stop``. A part that
    fails is logged once when it starts failing and once when it works again, not per round."""
    interval = runtime.settings.metrics_interval_s
    failing: dict[str, str] = {}
    while not stop.is_set():
        for name, sample in SAMPLES.items():
            try:
                await asyncio.wait_for(sample(runtime), max(interval, 5.0))
            except Exception as exc:  # noqa: BLE001 - a gauge left stale beats a dead process
                if name not in failing:
                    log.warning(
                        "metrics sample failing; gauges keep their last value",
                        extra={"sample": name, "error": f"{type(exc).__name__}: {exc}"[:300]},
                    )
                failing[name] = repr(exc)
            else:
                if failing.pop(name, None) is not None:
                    log.info("metrics sample working again", extra={"sample": name})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
