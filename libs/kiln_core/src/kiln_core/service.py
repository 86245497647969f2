"""What a service is (``ServiceSpec``) and the adapters one process wires for it
(``ServiceRuntime``): the only place that turns configuration into real implementations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.bus import Bus, open_bus
from kiln_core.db import Database
from kiln_core.events import CloudEvent, EventData, new_event
from kiln_core.inbox import EventHandler, InboxConsumer
from kiln_core.jobs import JobContext, JobQueue, LongWork
from kiln_core.outage import Outage
from kiln_core.outbox import OutboxRelay, add_event
from kiln_core.probes import sample_metrics
from kiln_core.settings import Settings, get_settings
from kiln_core.storage import ObjectStore, open_store
from kiln_core.teams import OwnerLookup

log = logging.getLogger(__name__)


async def every(
    interval_s: float,
    stop: asyncio.Event,
    round_: Callable[[], Awaitable[object]],
    what: str,
) -> None:
    """Run ``round_`` now and then every ``interval_s`` until ``stop``; a failed round is
    logged and retried next time (the body of a service's periodic worker)."""
    outage = Outage(log, what, traceback_first=True)
    while not stop.is_set():
        try:
            await round_()
        except Exception as exc:  # noqa: BLE001 - a failed round is retried next round
            outage.failed(exc)
        else:
            outage.recovered()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


@dataclass
class ServiceSpec:
    """A service's parts: routes, event handlers, and its own Alembic history."""

    name: str
    description: str
    migrations: Path
    routers: list[APIRouter] = field(default_factory=list)
    handlers: dict[str, EventHandler] = field(default_factory=dict)
    # Extra long-running loops of the event process (schedulers, watchers), beside the inbox.
    workers: list[Callable[[ServiceRuntime, asyncio.Event], object]] = field(default_factory=list)
    # The service's long work on Celery, if it has any (see kiln_core.jobs).
    long_work: LongWork | None = None
    # Path parameter ("param", or "param@/path/prefix") → how to find the team owning what
    # it names (kiln_core.teams).
    ownership: dict[str, OwnerLookup] = field(default_factory=dict)
    # Tables of jobs with a ``status`` column, exported as ``kiln_jobs{table, state}``.
    job_tables: tuple[type[SQLModel], ...] = ()


def runtime_of(session: AsyncSession) -> ServiceRuntime:
    """The runtime whose database ``session`` belongs to (for event handlers and jobs)."""
    runtime = session.info.get("kiln_runtime")
    if runtime is None:
        raise RuntimeError("session does not belong to a ServiceRuntime")
    return runtime  # type: ignore[no-any-return]


class ServiceRuntime:
    """Database, bus and object store of one service in one process."""

    def __init__(self, spec: ServiceSpec, settings: Settings | None = None) -> None:
        self.spec = spec
        self.settings = settings or get_settings()
        s = self.settings
        self.db = Database(
            s.resolve(s.database_url, spec.name), schema=f"{s.db_schema_prefix}{spec.name}"
        )
        self.bus: Bus = open_bus(s.resolve(s.bus_url, spec.name))
        self.store: ObjectStore = open_store(s.resolve(s.storage_url, spec.name))
        self.relay = OutboxRelay(
            self.db,
            self.bus,
            service=spec.name,
            batch_size=s.relay_batch_size,
            poll_interval_s=s.relay_poll_interval_s,
            fallback_interval_s=s.relay_fallback_interval_s,
            in_process_writers=self.bus.in_process,
        )
        self.inbox = InboxConsumer(
            spec.name,
            self.db,
            self.bus,
            spec.handlers,
            max_attempts=s.consumer_max_attempts,
            backoff_initial_s=s.consumer_backoff_initial_s,
            backoff_max_s=s.consumer_backoff_max_s,
        )
        self.db.session_info["kiln_runtime"] = self
        # Readiness checks beyond database, bus and store that parts of the process add (serving:
        # Triton and the models it routes to): name -> a coroutine that raises when not ready.
        self.checks: dict[str, Callable[[], Awaitable[object]]] = {}
        # Tasks build their own runtime (for their own event loop) from this process's settings.
        self.jobs: JobQueue | None = (
            JobQueue(
                spec.name,
                spec.long_work,
                JobContext(self.settings, lambda: ServiceRuntime(spec, self.settings)),
            )
            if spec.long_work is not None
            else None
        )
        self._started = False

    @property
    def name(self) -> str:
        return self.spec.name

    async def start(self, *, migrate: bool = True) -> None:
        if self._started:
            return
        if migrate:
            await self.db.migrate(self.spec.migrations)
        try:
            await self.bus.start()
        except Exception as exc:  # noqa: BLE001 - the relay starts the producer when it can
            # A broker that is down must not keep the API or consumer from starting: events
            # wait in the outbox and the relay publishes them once the broker answers.
            log.warning(
                "event bus not reachable at start-up; will retry",
                extra={"service": self.name, "error": str(exc)},
            )
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.jobs is not None:
            await asyncio.to_thread(self.jobs.stop)
        await self.bus.stop()
        await self.db.dispose()

    def enqueue(self, *args: Any, queue: str | None = None) -> None:
        """Hand a job (its id, and what else the task takes) to the service's workers."""
        if self.jobs is None:
            raise RuntimeError(f"the {self.name} service has no long work")
        self.jobs.enqueue(*args, queue=queue)

    async def emit(self, session: AsyncSession, data: EventData, subject: str) -> CloudEvent:
        """Stage an event in ``session``'s transaction (the relay wakes when it commits)."""
        event = new_event(data, subject)
        await add_event(session, event)
        return event

    async def run_relay(self, stop: asyncio.Event) -> None:
        await self.relay.run(stop)

    async def run_inbox(self, stop: asyncio.Event) -> None:
        if not self.spec.handlers:
            await stop.wait()
            return
        await self.inbox.run(stop)

    async def run_events(self, stop: asyncio.Event) -> None:
        """The event process: inbox consumer, outbox relay and the service's own workers."""
        jobs = [self.run_inbox(stop), self.run_relay(stop), sample_metrics(self, stop)]
        jobs += [worker(self, stop) for worker in self.spec.workers]  # type: ignore[misc]
        await asyncio.gather(*jobs)

    async def check_dependencies(self, timeout_s: float = 3.0) -> dict[str, str]:
        async def probe(check: Callable[[], object]) -> str:
            try:
                await asyncio.wait_for(check(), timeout_s)  # type: ignore[arg-type]
                return "ok"
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                return f"{type(exc).__name__}: {exc}"[:300]

        names = ["database", "bus", "store", *self.checks]
        probes = [self.db.check, self.bus.check, self.store.check, *self.checks.values()]
        outcomes = await asyncio.gather(*(probe(check) for check in probes))
        return dict(zip(names, outcomes, strict=True))
