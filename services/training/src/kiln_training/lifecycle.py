"""A training job's life: submit, pause, resume, cancel, lease expiry, and the recorded end.

queued → running → paused → succeeded | failed | cancelled. Only ``running`` jobs hold
resources, and every transition out of ``running`` is one row update in one transaction, so a
job's resources are released exactly once (the scheduler derives usage from running rows).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from datetime import datetime, timedelta
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import TrainingJobCancelled, TrainingJobFailed
from kiln_core.db import aware, utcnow
from kiln_core.errors import Conflict, KilnError, NotFound, ValidationFailed
from kiln_core.metrics import TRAINING_WORKERS_LOST
from kiln_core.service import ServiceRuntime
from kiln_core.telemetry import current_traceparent
from kiln_training.models import (
    TERMINAL,
    JobCreate,
    JobKind,
    JobSpecIn,
    JobStatus,
    KnownModelVersion,
    KnownVersion,
    TrainingJob,
    Worker,
)
from kiln_training.templates import UnknownTemplate, get_template, validate_params

log = logging.getLogger(__name__)


class TrainingSettings(BaseSettings):
    """Training-only knobs, from ``KILN_TRAINING_*``."""

    model_config = SettingsConfigDict(env_prefix="KILN_TRAINING_", extra="ignore")

    pool: str = "cpu"  # the pool this worker process serves
    capacity: str = ""  # e.g. "cpu=4,memory=16"; empty: what this machine has
    lease_s: float = 15.0  # a running job whose lease lapses this long is taken back
    pickup_grace_s: float = 60.0  # lease of a dispatched job until a worker claims it
    heartbeat_s: float = 1.0  # how often a run renews its lease and reads requests
    worker_ttl_s: float = 15.0  # a worker silent this long advertises no capacity
    # Rounds run at once on any change (kiln_training.wake); this polls for leases lapsing,
    # workers falling silent and waiting jobs ageing.
    schedule_interval_s: float = 2.0
    progress_event_interval_s: float = 2.0  # at most one progress event per job this often
    step_sample_s: float = 1.0  # step metrics are stored at most this often
    aging_interval_s: float = 300.0
    reservation_after_s: float = 3600.0


def training_settings() -> TrainingSettings:
    return TrainingSettings()


def parse_resources(text: str) -> dict[str, float]:
    """``cpu=4,memory=16`` into amounts."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        out[name.strip()] = float(value)
    return out


def machine_capacity(pool: str) -> dict[str, float]:
    """What this machine offers a pool: its cores, memory in GiB and (gpu pool) devices."""
    cpu = float(os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = 4.0
    gpu = 0.0
    if pool == "gpu":
        import torch  # heavy: only a gpu pool's worker pays for it

        gpu = float(torch.cuda.device_count())
    return {"cpu": cpu, "memory": math.floor(memory), "gpu": gpu}


def worker_capacity(settings: TrainingSettings) -> dict[str, float]:
    return parse_resources(settings.capacity) or machine_capacity(settings.pool)


def default_worker_id(pool: str) -> str:
    return f"{pool}@{socket.gethostname()}:{os.getpid()}"


class UnknownDatasetVersion(KilnError):
    status, type, title = 422, "unknown-dataset-version", "Unknown dataset version"


class UnknownTemplateInRequest(KilnError):
    status, type, title = 422, "unknown-template", "Unknown template"


def checked_params(template: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` validated against ``template`` (defaults filled in); a request naming an
    unknown template is unprocessable (422), not a missing resource."""
    try:
        spec = get_template(template)
    except UnknownTemplate as exc:
        raise UnknownTemplateInRequest(exc.detail, **exc.extra) from None
    return validate_params(spec, params)


class InvalidTransition(Conflict):
    type, title = "invalid-transition", "The job cannot do that in its current state"


def pool_of(resources: dict[str, float]) -> str:
    return "gpu" if resources.get("gpu", 0) > 0 else "cpu"


async def resolve_version(
    session: AsyncSession, dataset_id: str, version: int | None, version_id: str | None
) -> KnownVersion:
    """A dataset version this service has heard of (through ``version.created`` events)."""
    query = select(KnownVersion).where(KnownVersion.dataset_id == dataset_id)
    if version_id is not None:
        query = query.where(KnownVersion.version_id == version_id)
    if version is not None:
        query = query.where(KnownVersion.version == version)
    if version is None and version_id is None:
        query = query.order_by(col(KnownVersion.version).desc())
    known = (await session.exec(query)).first()
    if known is None:
        what = f"version {version}" if version is not None else f"version id {version_id}"
        raise UnknownDatasetVersion(
            f"dataset {dataset_id} {what if (version or version_id) else 'has no version'} is "
            "not known to the training service (it learns versions from "
            "kiln.dataset.version.created events)",
            dataset_id=dataset_id,
        )
    return known


async def _warm_start_key(session: AsyncSession, spec: JobSpecIn) -> str | None:
    """The state-dict key an incremental job starts from."""
    if spec.mode == "full":
        if spec.warm_start_job_id or spec.warm_start_model_version_id:
            raise ValidationFailed("a warm start needs mode 'incremental'")
        return None
    job_id = spec.warm_start_job_id
    if spec.warm_start_model_version_id:
        known = await session.get(KnownModelVersion, spec.warm_start_model_version_id)
        if known is None or known.training_job_id is None:
            raise ValidationFailed(
                f"model version {spec.warm_start_model_version_id} is not known to have been "
                "trained here"
            )
        job_id = known.training_job_id
    if job_id is None:
        raise ValidationFailed(
            "mode 'incremental' needs warm_start_model_version_id or warm_start_job_id"
        )
    source = await session.get(TrainingJob, job_id)
    if source is None or source.artifact is None or "state_dict_key" not in source.artifact:
        raise ValidationFailed(f"job {job_id} has no trained weights to start from")
    if source.template != spec.template:
        raise ValidationFailed(
            f"job {job_id} trained template {source.template}, not {spec.template}"
        )
    return str(source.artifact["state_dict_key"])


async def check_dataset_use(
    session: AsyncSession, team: str, dataset: Any, *, anyone: bool = False
) -> None:
    """A job of ``team`` may train on its own team's datasets and on those shared with it;
    another team's is as unknown as a missing one (``anyone``: a platform admin's job)."""
    known = await resolve_version(session, dataset.dataset_id, dataset.version, dataset.version_id)
    if anyone or team == known.team or team in (known.shared_with or []):
        return
    raise UnknownDatasetVersion(
        f"dataset {dataset.dataset_id} is not known to the training service for team {team} "
        "(its team shares it first)",
        dataset_id=dataset.dataset_id,
    )


async def new_job(
    session: AsyncSession,
    body: JobCreate,
    *,
    created_by: str,
    parent_id: str | None = None,
    trigger_id: str | None = None,
) -> TrainingJob:
    """Validate ``body`` and add a queued job to ``session`` (the caller commits)."""
    params = checked_params(body.template, body.params)
    known = await resolve_version(
        session, body.dataset.dataset_id, body.dataset.version, body.dataset.version_id
    )

    warm_key = await _warm_start_key(session, body)
    resources = body.resources.model_dump()
    job = TrainingJob(
        kind=JobKind.train,
        traceparent=current_traceparent(),
        parent_id=parent_id,
        trigger_id=trigger_id,
        team=body.team,
        model_name=body.model_name or f"{known.dataset_name or known.dataset_id}-{body.template}",
        dataset_id=known.dataset_id,
        dataset_version=known.version,
        dataset_version_id=known.version_id,
        manifest_key=known.manifest_key,
        train_split=body.dataset.train_split,
        eval_split=body.dataset.eval_split,
        template=body.template,
        params=dict(params),
        resources=resources,
        pool=pool_of(resources),
        priority=body.priority,
        mode=body.mode,
        warm_start_model_version_id=body.warm_start_model_version_id,
        warm_start_key=warm_key,
        seed=body.seed,
        max_epochs=body.max_epochs,
        time_budget_s=body.time_budget_s,
        early_stopping_patience=body.early_stopping_patience,
        world_size=body.world_size,
        checkpoint_every_steps=body.checkpoint_every_steps,
        max_attempts=body.max_attempts,
        created_by=created_by,
    )
    session.add(job)
    return job


async def get_job(session: AsyncSession, job_id: str, *, for_update: bool = False) -> TrainingJob:
    query = select(TrainingJob).where(TrainingJob.id == job_id)
    if for_update:
        query = query.with_for_update()
    job = (await session.exec(query)).first()
    if job is None:
        raise NotFound(f"training job {job_id} does not exist")
    return job


def _release(job: TrainingJob, status: JobStatus) -> None:
    """Leave ``running`` (or the queue) for ``status``; the lease and worker go with it."""
    job.status = status
    job.requested = None
    job.worker_id = None
    job.lease_expires_at = None
    job.updated_at = utcnow()
    if status in TERMINAL:
        job.finished_at = job.updated_at


async def pause(session: AsyncSession, job: TrainingJob) -> TrainingJob:
    """A queued job pauses at once; a running one checkpoints and pauses (asynchronously)."""
    if job.kind == JobKind.search:
        raise InvalidTransition("a search is paused through its trials")
    if job.status == JobStatus.queued:
        _release(job, JobStatus.paused)
    elif job.status == JobStatus.running:
        if job.requested == "cancel":
            raise InvalidTransition("the job is being cancelled")
        job.requested = "pause"
        job.updated_at = utcnow()
    elif job.status != JobStatus.paused:
        raise InvalidTransition(f"a {job.status} job cannot be paused", status=job.status)
    session.add(job)
    return job


async def resume(session: AsyncSession, job: TrainingJob) -> TrainingJob:
    """A paused job goes back to the queue; it continues from its checkpoint when it starts."""
    if job.status == JobStatus.running and job.requested == "pause":
        job.requested = None  # changed one's mind before the run noticed
    elif job.status == JobStatus.paused:
        job.status = JobStatus.queued
        job.queued_at = utcnow()
        job.updated_at = job.queued_at
    elif job.status not in (JobStatus.queued, JobStatus.running):
        raise InvalidTransition(f"a {job.status} job cannot be resumed", status=job.status)
    session.add(job)
    return job


async def cancel(
    session: AsyncSession, runtime: ServiceRuntime, job: TrainingJob, by: str
) -> TrainingJob:
    """Cancel: at once unless running, where the run stops at its next step (within seconds)."""
    if job.status in TERMINAL:
        raise InvalidTransition(f"the job already {job.status}", status=job.status)
    if job.kind == JobKind.search:
        trials = (
            await session.exec(select(TrainingJob).where(TrainingJob.parent_id == job.id))
        ).all()
        for trial in trials:
            if trial.status not in TERMINAL:
                await cancel(session, runtime, trial, by)
        await mark_cancelled(session, runtime, job, by)
        return job
    if job.status == JobStatus.running:
        job.requested = "cancel"
        job.updated_at = utcnow()
        session.add(job)
        return job
    await mark_cancelled(session, runtime, job, by)
    return job


def event_base(job: TrainingJob) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "team": job.team,
        "template": job.template,
        "model_name": job.model_name,
        "parent_job_id": job.parent_id,
    }


async def mark_cancelled(
    session: AsyncSession, runtime: ServiceRuntime, job: TrainingJob, by: str | None
) -> None:
    _release(job, JobStatus.cancelled)
    session.add(job)
    await runtime.emit(
        session, TrainingJobCancelled(**event_base(job), cancelled_by=by), subject=job.id
    )
    await after_trial_end(session, job)


async def mark_failed(
    session: AsyncSession, runtime: ServiceRuntime, job: TrainingJob, reason: str
) -> None:
    _release(job, JobStatus.failed)
    job.error = reason[:4000]
    session.add(job)
    await runtime.emit(
        session,
        TrainingJobFailed(**event_base(job), reason=reason[:2000], attempts=job.attempts),
        subject=job.id,
    )
    await after_trial_end(session, job)


async def after_trial_end(session: AsyncSession, job: TrainingJob) -> None:
    if job.parent_id is not None:
        await update_search(session, job.parent_id)


async def update_search(session: AsyncSession, parent_id: str) -> None:
    """Re-rank a search after one of its trials ended; finish it once all have."""
    parent = await session.get(TrainingJob, parent_id)
    if parent is None or parent.search is None or parent.status in TERMINAL:
        return
    await session.flush()
    trials = (
        await session.exec(select(TrainingJob).where(TrainingJob.parent_id == parent_id))
    ).all()
    target = parent.search["target"]
    maximize = parent.search["direction"] == "maximize"
    scored = [t for t in trials if t.status == JobStatus.succeeded and target in t.metrics]
    scored.sort(key=lambda t: (-t.metrics[target] if maximize else t.metrics[target], t.id))
    ranking = [
        {"trial_id": t.id, "params": t.params, "value": t.metrics[target], "rank": i}
        for i, t in enumerate(scored, start=1)
    ]
    search = dict(parent.search)
    search["ranking"] = ranking
    search["best_trial_id"] = ranking[0]["trial_id"] if ranking else None
    search["finished_trials"] = sum(1 for t in trials if t.status in TERMINAL)
    parent.search = search
    parent.updated_at = utcnow()
    if all(t.status in TERMINAL for t in trials):
        parent.finished_at = parent.updated_at
        if ranking:
            best = scored[0]
            parent.status = JobStatus.succeeded
            parent.metrics = dict(best.metrics)
            parent.artifact = best.artifact
            parent.params = dict(best.params)
        else:
            parent.status = JobStatus.failed
            parent.error = f"no trial produced the target metric {target!r}"
    session.add(parent)


async def reclaim_expired(
    session: AsyncSession, runtime: ServiceRuntime, now: datetime
) -> list[str]:
    """Running jobs whose lease lapsed (their worker died): back to the queue from their last
    checkpoint, or failed once their attempts are used up. Returns the ids taken back."""
    rows = (
        await session.exec(
            select(TrainingJob)
            .where(
                TrainingJob.status == JobStatus.running,
                TrainingJob.kind == JobKind.train,
                col(TrainingJob.lease_expires_at) < now,
            )
            .with_for_update(skip_locked=True)
        )
    ).all()
    for job in rows:
        log.warning(
            "lease of job %s lapsed (worker %s, attempt %d)", job.id, job.worker_id, job.attempts
        )
        if job.requested == "cancel":
            await mark_cancelled(session, runtime, job, None)
        elif job.requested == "pause":
            _release(job, JobStatus.paused)
            session.add(job)
        elif job.worker_losses + 1 >= job.max_attempts:
            TRAINING_WORKERS_LOST.inc()
            job.worker_losses += 1
            await mark_failed(
                session,
                runtime,
                job,
                f"the worker was lost {job.worker_losses} times (last: {job.worker_id})",
            )
        else:
            TRAINING_WORKERS_LOST.inc()
            job.worker_losses += 1
            _release(job, JobStatus.queued)
            job.queued_at = now
            session.add(job)
    return [job.id for job in rows]


def lease_lapsed(job: TrainingJob, now: datetime) -> bool:
    return job.lease_expires_at is not None and aware(job.lease_expires_at) < now


def lease_until(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


async def register_worker(
    runtime: ServiceRuntime, worker_id: str, pool: str, capacity: dict[str, float]
) -> None:
    """Advertise (or refresh) a worker's pool and capacity."""
    async with runtime.db.transaction() as session:
        row = await session.get(Worker, worker_id)
        if row is None:
            row = Worker(id=worker_id, pool=pool, capacity=capacity)
        row.pool, row.capacity, row.heartbeat_at = pool, capacity, utcnow()
        session.add(row)


async def unregister_worker(runtime: ServiceRuntime, worker_id: str) -> None:
    async with runtime.db.transaction() as session:
        row = await session.get(Worker, worker_id)
        if row is not None:
            await session.delete(row)
