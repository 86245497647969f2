"""The scheduling loop: which queued jobs start now, given the capacity workers advertise.

One round (``schedule_once``) takes back jobs whose worker died, reads the live workers'
capacity per pool, asks ``scheduler.plan`` (DRF) which queued jobs start, marks them running
and hands them to the pool's Celery queue. Rounds of several service processes never overlap:
on PostgreSQL a transaction-scoped advisory lock admits one at a time (the others skip the
round); on SQLite the database's single writer does the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.db import aware, utcnow
from kiln_core.service import ServiceRuntime
from kiln_training import scheduler
from kiln_training.lifecycle import (
    TrainingSettings,
    default_worker_id,
    lease_until,
    reclaim_expired,
    register_worker,
    training_settings,
    unregister_worker,
    worker_capacity,
)
from kiln_training.models import JobKind, JobStatus, Team, TrainingJob, Worker
from kiln_training.tasks import warm_up_once
from kiln_training.wake import QUIET, Wake, channel
from kiln_training.wake import register as register_wake
from kiln_training.wake import unregister as unregister_wake

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key: "kiln training scheduler".
_SCHEDULER_LOCK = 0x6B696C6E_7472
POOLS = ("cpu", "gpu")


@dataclass
class PoolState:
    capacity: scheduler.Resources
    running: list[TrainingJob]
    queued: list[TrainingJob]


def as_scheduler_job(job: TrainingJob) -> scheduler.Job:
    return scheduler.Job(
        id=job.id,
        team=job.team,
        demand=scheduler.Resources({k: float(v) for k, v in job.resources.items()}),
        priority=job.priority,
        submitted_at=aware(job.queued_at).timestamp(),
    )


def as_scheduler_team(team: Team) -> scheduler.Team:
    quota = scheduler.Resources(team.quota) if team.quota else None
    return scheduler.Team(name=team.name, weight=team.weight, quota=quota)


def policy_of(settings: TrainingSettings) -> scheduler.SchedulingPolicy:
    return scheduler.SchedulingPolicy(
        aging_interval_s=settings.aging_interval_s,
        reservation_after_s=settings.reservation_after_s,
    )


async def live_capacity(
    session: AsyncSession, now: datetime, settings: TrainingSettings
) -> dict[str, scheduler.Resources]:
    """Per pool, the summed capacity of workers that heartbeat recently."""
    since = now - timedelta(seconds=settings.worker_ttl_s)
    workers = (await session.exec(select(Worker).where(col(Worker.heartbeat_at) >= since))).all()
    total: dict[str, scheduler.Resources] = {pool: scheduler.Resources() for pool in POOLS}
    for worker in workers:
        total[worker.pool] = total.get(worker.pool, scheduler.Resources()).add(worker.capacity)
    return total


async def load_state(
    session: AsyncSession, now: datetime, settings: TrainingSettings
) -> tuple[dict[str, PoolState], list[scheduler.Team]]:
    capacity = await live_capacity(session, now, settings)
    jobs = (
        await session.exec(
            select(TrainingJob).where(
                TrainingJob.kind == JobKind.train,
                col(TrainingJob.status).in_([JobStatus.queued, JobStatus.running]),
            )
        )
    ).all()
    pools = {pool: PoolState(cap, [], []) for pool, cap in capacity.items()}
    for job in jobs:
        state = pools.setdefault(job.pool, PoolState(scheduler.Resources(), [], []))
        (state.running if job.status == JobStatus.running else state.queued).append(job)
    teams = [as_scheduler_team(t) for t in (await session.exec(select(Team))).all()]
    return pools, teams


def decide(
    pools: dict[str, PoolState],
    teams: Iterable[scheduler.Team],
    now: datetime,
    settings: TrainingSettings,
) -> dict[str, scheduler.Decision]:
    teams = list(teams)
    return {
        pool: scheduler.plan(
            state.capacity,
            [as_scheduler_job(j) for j in state.running],
            [as_scheduler_job(j) for j in state.queued],
            teams,
            now.timestamp(),
            policy_of(settings),
        )
        for pool, state in pools.items()
        if state.queued or state.running
    }


async def _take_lock(session: AsyncSession, runtime: ServiceRuntime) -> bool:
    if not runtime.db.is_postgres:
        return True
    result = await session.execute(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _SCHEDULER_LOCK}
    )
    return bool(result.scalar())


async def schedule_once(
    runtime: ServiceRuntime, settings: TrainingSettings | None = None
) -> list[str]:
    """One scheduling round; returns the ids of the jobs it started."""
    settings = settings or training_settings()
    started: list[tuple[str, int, str]] = []
    async with runtime.db.transaction() as session:
        # What the round changes it has planned already: no need to wake anyone for it.
        session.info[QUIET] = True
        if not await _take_lock(session, runtime):
            return []
        now = utcnow()
        await reclaim_expired(session, runtime, now)
        await session.flush()
        if not await _any_queued(session):
            return []  # nothing to plan: one cheap query instead of reading the whole state
        pools, teams = await load_state(session, now, settings)
        decisions = decide(pools, teams, now, settings)
        by_id = {j.id: j for state in pools.values() for j in state.queued}
        for pool, decision in decisions.items():
            for chosen in decision.started:
                job = by_id[chosen.id]
                job.status = JobStatus.running
                job.attempts += 1
                job.worker_id = None
                job.started_at = job.started_at or now
                # Until a worker claims it; then the run's heartbeat keeps it fresh.
                job.lease_expires_at = lease_until(settings.pickup_grace_s)
                job.updated_at = now
                session.add(job)
                started.append((job.id, job.attempts, pool))
    for job_id, attempt, pool in started:
        # To the pool's queue, where a worker's ``run_job`` claims it (see kiln_training.tasks).
        runtime.enqueue(job_id, attempt, queue=f"training.{pool}")
    return [job_id for job_id, _, _ in started]


async def _any_queued(session: AsyncSession) -> bool:
    found = await session.exec(
        select(TrainingJob.id)
        .where(TrainingJob.kind == JobKind.train, TrainingJob.status == JobStatus.queued)
        .limit(1)
    )
    return found.first() is not None


async def scheduler_loop(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
    """The service's scheduling loop (a ``ServiceSpec`` worker of the event process).

    A round runs at once whenever a committed change wakes it (see :mod:`kiln_training.wake`),
    and otherwise every ``schedule_interval_s`` for what no transaction announces: leases
    lapsing, workers falling silent, waiting jobs ageing. On the embedded broker it also starts
    the in-process job runner and advertises its capacity, once PyTorch is warm, as a worker
    process does, so no dispatched job waits on either."""
    settings = training_settings()
    embedded_id = default_worker_id(settings.pool) + "/embedded"
    embedded = runtime.jobs is not None and runtime.jobs.embedded
    if embedded and runtime.jobs is not None:
        await asyncio.to_thread(warm_up_once)
        await asyncio.to_thread(runtime.jobs.ensure_embedded_worker)
    woken = Wake()
    register_wake(woken)
    # Other processes' commits wake us through NOTIFY on the schema's scheduling channel.
    listener = (
        await runtime.db.listen(channel(runtime.db.schema), woken.set)
        if runtime.db.is_postgres
        else None
    )
    # Monotonic times of the next advertisement and the next polled round.
    next_advert = next_round = time.monotonic()
    woke = False
    try:
        while not stop.is_set():
            now = time.monotonic()
            try:
                # The capacity row must stay younger than worker_ttl_s whether or not rounds
                # run; three refreshes per TTL leave room for a slow one.
                if embedded and now >= next_advert:
                    next_advert = now + settings.worker_ttl_s / 3
                    await register_worker(
                        runtime, embedded_id, settings.pool, worker_capacity(settings)
                    )
                if woke or now >= next_round:
                    next_round = now + settings.schedule_interval_s
                    await schedule_once(runtime, settings)
            except Exception:  # noqa: BLE001 - the loop must outlive a bad round
                log.exception("scheduling round failed")
            wait = (min(next_round, next_advert) if embedded else next_round) - time.monotonic()
            woke = await woken.wait(stop, max(0.0, wait))
    finally:
        unregister_wake(woken)
        if listener is not None:
            await listener.close()
        if embedded:
            try:
                await unregister_worker(runtime, embedded_id)
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.debug("could not unregister the embedded worker", exc_info=True)


async def queue_view(session: AsyncSession, settings: TrainingSettings) -> dict[str, Any]:
    """Who waits and why, who runs, and each team's dominant share, per pool."""
    now = utcnow()
    pools, teams = await load_state(session, now, settings)
    decisions = decide(pools, teams, now, settings)
    out: dict[str, Any] = {"pools": {}}
    for pool, state in pools.items():
        decision = decisions.get(pool)
        waiting = []
        if decision is not None:
            for w in decision.waiting:
                waiting.append(
                    {
                        "job_id": w.job.id,
                        "team": w.job.team,
                        "position": w.position,
                        "reason": str(w.reason),
                        "resource": w.resource,
                        "blocked_by_job": w.blocked_by_job,
                        "blocked_by_team": w.blocked_by_team,
                        "effective_priority": w.effective_priority,
                        "holds_reservation": w.holds_reservation,
                        "detail": w.detail,
                    }
                )
            # Jobs the next round starts still wait now; they wait for nothing but the round.
            for position, job in enumerate(decision.started, start=len(waiting) + 1):
                waiting.append(
                    {
                        "job_id": job.id,
                        "team": job.team,
                        "position": position,
                        "reason": "starting",
                        "resource": None,
                        "blocked_by_job": None,
                        "blocked_by_team": None,
                        "effective_priority": job.priority,
                        "holds_reservation": False,
                        "detail": "fits now; starts in the next scheduling round",
                    }
                )
        held = scheduler.Resources()
        shares: dict[str, float | None] = {}
        usage: dict[str, scheduler.Resources] = {}
        for row in state.running:
            demand = scheduler.Resources(row.resources)
            usage[row.team] = usage.get(row.team, scheduler.Resources()).add(demand)
            held = held.add(demand)
        for team, amount in usage.items():
            try:
                shares[team] = round(amount.dominant_share(state.capacity), 6)
            except scheduler.ZeroCapacityError:
                shares[team] = None  # holds a kind the pool no longer has
        out["pools"][pool] = {
            "capacity": dict(state.capacity.items()),
            "used": dict(held.items()),
            "running": [
                {
                    "job_id": j.id,
                    "team": j.team,
                    "resources": j.resources,
                    "worker_id": j.worker_id,
                    "started_at": j.started_at,
                }
                for j in state.running
            ],
            "waiting": waiting,
            "dominant_shares": shares,
        }
    return out
