"""Long work of the dataset service on Celery: one task runs any job by id.

The job row is the source of truth: a redelivered task (worker killed, acks late) finds the job
``running`` and runs it again from the start — every step is idempotent (content-addressed
blobs; the version and the job's success commit in one transaction).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kiln_core.db import utcnow
from kiln_core.errors import KilnError, failure_problem
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings
from kiln_core.tasks import make_celery
from kiln_dataset.models import Job, JobStatus

log = logging.getLogger(__name__)

celery_app = make_celery("dataset")
# Settings of the process that runs an in-process worker (embedded mode); else from the env.
_process_settings: Settings | None = None

Progress = Callable[[int, int, str], Awaitable[None]]
Runner = Callable[[ServiceRuntime, Job, Progress], Awaitable[dict[str, Any]]]
RUNNERS: dict[str, Runner] = {}


def runner(kind: str) -> Callable[[Runner], Runner]:
    def register(fn: Runner) -> Runner:
        RUNNERS[kind] = fn
        return fn

    return register


def use_settings(settings: Settings) -> None:
    global _process_settings
    _process_settings = settings


def enqueue(runtime: ServiceRuntime, job: Job) -> None:
    use_settings(runtime.settings)
    runtime.ensure_embedded_worker()
    run_job_task.apply_async(args=[job.id], queue="dataset")


@celery_app.task(name="kiln.dataset.run_job")
def run_job_task(job_id: str) -> None:
    asyncio.run(run_job(job_id))


class JobFailed(KilnError):
    status, type, title = 422, "job-failed", "The job failed"


async def run_job(job_id: str, settings: Settings | None = None) -> None:
    from kiln_dataset.service import SERVICE

    runtime = ServiceRuntime(SERVICE, settings or _process_settings)
    try:
        async with runtime.db.transaction() as session:
            job = await session.get(Job, job_id)
            if job is None:
                log.warning("job vanished", extra={"job_id": job_id})
                return
            if job.status in (JobStatus.succeeded, JobStatus.failed):
                return  # a duplicate delivery of finished work
            job.status = JobStatus.running
            job.attempts += 1
            job.updated_at = utcnow()
            session.add(job)
        last_write = 0.0

        async def progress(done: int, total: int, message: str = "") -> None:
            nonlocal last_write
            # Progress is for humans: at most a few writes a second.
            if time.monotonic() - last_write < 0.25 and done < total:
                return
            last_write = time.monotonic()
            async with runtime.db.transaction() as s:
                row = await s.get(Job, job_id)
                if row is not None:
                    row.done, row.total, row.updated_at = done, total, utcnow()
                    if message:
                        row.message = message
                    s.add(row)

        work = RUNNERS.get(job.kind)
        if work is None:
            raise JobFailed(f"no runner for job kind {job.kind!r}")
        await work(runtime, job, progress)
    except Exception as exc:  # noqa: BLE001 - recorded on the job, never lost
        problem = failure_problem(exc)
        if not isinstance(exc, KilnError):
            log.exception("job failed", extra={"job_id": job_id})
        async with runtime.db.transaction() as session:
            row = await session.get(Job, job_id)
            if row is not None and row.status != JobStatus.succeeded:
                row.status = JobStatus.failed
                row.error = problem
                row.message = str(problem["detail"])
                row.updated_at = utcnow()
                session.add(row)
    finally:
        await runtime.db.dispose()


async def finish(session: Any, job: Job, result: dict[str, Any], message: str = "") -> None:
    """Mark ``job`` succeeded inside the caller's transaction (with the work it produced)."""
    row = await session.get(Job, job.id)
    row.status = JobStatus.succeeded
    row.result = result
    row.done = row.total = max(row.total, row.done)
    row.message = message or "done"
    row.updated_at = utcnow()
    session.add(row)


@runner("purge")
async def run_purge(runtime: ServiceRuntime, job: Job, progress: Progress) -> dict[str, Any]:
    from datetime import timedelta

    from kiln_dataset.lifecycle import purge

    result = await purge(
        runtime,
        grace=timedelta(minutes=int(job.params.get("grace_minutes", 60))),
        progress=progress,
    )
    async with runtime.db.transaction() as session:
        await finish(session, job, result, f"deleted {result['deleted_blobs']} blobs")
    return result
