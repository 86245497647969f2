"""One job runner for every service's long work on Celery.

A service declares its long work as a :class:`LongWork` (a task name and the function that runs
one job in a worker thread). The process's wiring root builds the runtime, and the runtime's
:class:`JobQueue` builds the Celery app from the runtime's settings and :func:`bind` s the task
to it, so a task never imports its service and no settings are read at import time.

Most long work is a row of a job table (:class:`JobColumns`) walked through one lifecycle by
:func:`run_job`: claimed (``running``), progress written at a bounded rate, then succeeded
(inside the work's own transaction, with what it produced) or failed with a problem. A
redelivered task finds a finished job and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from celery import Celery
from kombu import Queue
from sqlalchemy import JSON, Integer, String, Text
from sqlmodel import Field, SQLModel

from kiln_core.db import UtcDateTime, new_id, utcnow
from kiln_core.errors import KilnError, failure_problem
from kiln_core.metrics import JOBS_ENQUEUED
from kiln_core.settings import Settings
from kiln_core.tasks import is_embedded_url, make_celery

if TYPE_CHECKING:  # the runtime hands itself down; importing it here would be a cycle
    from kiln_core.service import ServiceRuntime

log = logging.getLogger(__name__)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


FINISHED = (JobStatus.succeeded, JobStatus.failed)


class JobColumns(SQLModel):
    """The columns every job table shares, and how the runner moves a row through them.

    A table adds its own columns (what the job is about, its progress, its result) and
    extends the ``record_*`` methods where it keeps more."""

    id: str = Field(default_factory=new_id, primary_key=True, sa_type=String(32))
    status: str = Field(default=JobStatus.queued, sa_type=String(20), nullable=False)
    created_by: str = Field(default="", sa_type=String(200), nullable=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime(), nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime(), nullable=False)

    def record_claim(self) -> None:
        """A worker starts (or, after a lost worker, restarts) the job."""
        self.status = JobStatus.running
        self.updated_at = utcnow()

    def record_progress(self, done: int, total: int, message: str) -> None:
        self.updated_at = utcnow()

    def record_failure(self, problem: dict[str, Any]) -> None:
        self.status = JobStatus.failed
        self.updated_at = utcnow()

    def record_success(self, result: dict[str, Any], message: str) -> None:
        self.status = JobStatus.succeeded
        self.updated_at = utcnow()


class JobRecord(JobColumns):
    """A job of some ``kind`` with parameters, a result or a problem, and its attempts."""

    kind: str = Field(sa_type=String(30), nullable=False)
    message: str = Field(default="", sa_type=Text, nullable=False)
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)
    result: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    attempts: int = Field(default=0, sa_type=Integer, nullable=False)

    def record_claim(self) -> None:
        super().record_claim()
        self.attempts += 1

    def record_progress(self, done: int, total: int, message: str) -> None:
        super().record_progress(done, total, message)
        if message:
            self.message = message

    def record_failure(self, problem: dict[str, Any]) -> None:
        super().record_failure(problem)
        self.error = problem
        self.message = str(problem["detail"])

    def record_success(self, result: dict[str, Any], message: str) -> None:
        super().record_success(result, message)
        self.result = result
        self.message = message or "done"


Progress = Callable[[int, int, str], Awaitable[None]]
J = TypeVar("J", bound=JobColumns)
# The work of one job: ``work(runtime, job, progress)``; it records success itself, in the
# transaction that stores what it produced.
Work = Callable[["ServiceRuntime", Any, Progress], Awaitable[None]]


@dataclass(frozen=True)
class JobContext:
    """What a task gets from the process that bound it: its settings and a way to build a
    runtime for the task's own event loop (a runtime's engine belongs to one loop)."""

    settings: Settings
    new_runtime: Callable[[], ServiceRuntime]


@dataclass(frozen=True)
class LongWork:
    """A service's long work: the one Celery task that runs a job by id.

    ``run(context, *args)`` runs in a worker thread. ``queues`` are the queues a worker of the
    service serves (the first is where :meth:`JobQueue.enqueue` sends by default); ``setup``
    adjusts the app a process builds (for example a worker pool's own queue)."""

    task_name: str
    run: Callable[..., None]
    queues: tuple[str, ...]
    setup: Callable[[Celery, JobContext], None] | None = None


def tracked_jobs(task_name: str, queue: str, table: type[J], work: Work) -> LongWork:
    """Long work whose jobs are rows of ``table``, run through :func:`run_job`."""

    def run(context: JobContext, job_id: str) -> None:
        asyncio.run(run_job(context.new_runtime(), table, work, job_id))

    return LongWork(task_name=task_name, run=run, queues=(queue,))


async def run_job(runtime: ServiceRuntime, table: type[J], work: Work, job_id: str) -> None:
    """Run job ``job_id`` of ``table`` to its end: claim it, report progress, and record the
    problem on the row if ``work`` fails. Disposes of ``runtime``'s engine at the end."""
    try:
        async with runtime.db.transaction() as session:
            job = await session.get(table, job_id)
            if job is None:
                log.warning("job vanished", extra={"job_id": job_id})
                return
            if job.status in FINISHED:
                return  # a duplicate delivery of finished work
            job.record_claim()
            session.add(job)
        last_write = 0.0

        async def progress(done: int, total: int, message: str = "") -> None:
            nonlocal last_write
            # Progress is for humans: at most a few writes a second.
            if time.monotonic() - last_write < 0.25 and done < total:
                return
            last_write = time.monotonic()
            async with runtime.db.transaction() as s:
                row = await s.get(table, job_id)
                if row is not None:
                    row.record_progress(done, total, message)
                    s.add(row)

        await work(runtime, job, progress)
    except Exception as exc:  # noqa: BLE001 - recorded on the job, never lost
        problem = failure_problem(exc)
        if not isinstance(exc, KilnError):
            log.exception("job failed", extra={"job_id": job_id})
        async with runtime.db.transaction() as session:
            row = await session.get(table, job_id)
            if row is not None and row.status != JobStatus.succeeded:
                row.record_failure(problem)
                session.add(row)
    finally:
        await runtime.db.dispose()


def bind(app: Celery, work: LongWork, context: JobContext) -> Any:
    """Register ``work``'s task on ``app``, running with ``context`` (the binding process's
    settings); returns the task."""
    app.conf.task_queues = tuple(Queue(name) for name in work.queues)
    app.conf.task_default_queue = work.queues[0]
    if work.setup is not None:
        work.setup(app, context)

    # Not shared: a shared task would join every app created later, with this context.
    @app.task(name=work.task_name, shared=False)
    def run_task(*args: Any) -> None:
        work.run(context, *args)

    return run_task


class JobQueue:
    """A runtime's way to its service's long work: the Celery app on the runtime's broker,
    built on first use; on the embedded broker (``memory://``) a small thread pool in this
    process runs the work instead of a Celery worker (several in-process Celery workers, one
    per service, stall each other: the first stops running what it receives once a second
    starts)."""

    def __init__(self, service: str, work: LongWork, context: JobContext) -> None:
        self.service = service
        self.work = work
        self.context = context
        self._app: Celery | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def app(self) -> Celery:
        if self._app is None:
            app = make_celery(self.service, self.context.settings)
            bind(app, self.work, self.context)
            self._app = app
        return self._app

    @property
    def embedded(self) -> bool:
        # From the settings: on the embedded broker no Celery app is ever needed.
        return is_embedded_url(self.context.settings.celery_broker_url)

    def ensure_embedded_worker(self) -> None:
        """On the embedded broker make the in-process runner, on first use so processes that
        never enqueue work never pay for it."""
        if not self.embedded:
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix=f"kiln-{self.service}-job"
                )

    def enqueue(self, *args: Any, queue: str | None = None) -> None:
        """Send a job to a worker (its id and whatever else the task takes)."""
        self.ensure_embedded_worker()
        if self._pool is not None:
            self._pool.submit(self._run_here, args)
            JOBS_ENQUEUED.labels(queue or self.work.queues[0]).inc()
            return
        target = queue or self.work.queues[0]
        self.app.send_task(self.work.task_name, args=list(args), queue=target)
        JOBS_ENQUEUED.labels(target).inc()

    def _run_here(self, args: tuple[Any, ...]) -> None:
        try:
            self.work.run(self.context, *args)
        except Exception:  # noqa: BLE001 - as a worker would: logged, the job row says why
            log.exception("job task failed", extra={"service": self.service})

    def stop(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
