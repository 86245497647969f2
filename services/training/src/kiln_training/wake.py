"""Waking the scheduler when something it plans over changes, instead of waiting for its poll.

A committed transaction that adds a job, changes a job's status, demand, priority or pool,
adds, changes or removes a team, or adds or removes a worker (or changes its capacity) wakes
every scheduler loop of this process at once (an ``asyncio.Event`` per loop, set thread-safely,
so a run ending in a Celery worker thread wakes the loop too). On PostgreSQL the transaction
also sends ``NOTIFY`` on the service schema's channel, delivered at commit, so loops in other
processes (the API and Celery workers are separate processes on the stack) wake too. A worker's
heartbeat alone wakes nobody. The scheduler's own rounds are quiet: what a round changes it has
already planned.

This is hooked into SQLAlchemy's session events, so every path that changes a job (API,
handlers, triggers, searches, runs ending, lease reclaims) wakes the scheduler without each
remembering to.
"""

from __future__ import annotations

import asyncio
import threading
from itertools import chain
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.orm import Session

from kiln_training.models import Team, TrainingJob, Worker

# Set on a session whose changes must not wake the scheduler (the scheduler's own round).
QUIET = "kiln_training.quiet"
_PENDING = "kiln_training.wake"
_JOB_FIELDS = ("status", "resources", "priority", "pool")
_WORKER_FIELDS = ("pool", "capacity")


def channel(schema: str) -> str:
    """The PostgreSQL ``NOTIFY`` channel of the training service in ``schema``."""
    return f"kiln_training_schedule_{schema}"


class Wake:
    """One scheduler loop's wake-up flag, settable from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def set(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop has closed; its scheduler is gone
            pass

    async def wait(self, stop: asyncio.Event, interval: float) -> bool:
        """Until this is set, ``stop`` is set or ``interval`` seconds pass; True when this was
        set. Clears it, so a change committed during the next round sets it again."""
        stopping = asyncio.ensure_future(stop.wait())
        waking = asyncio.ensure_future(self.event.wait())
        try:
            await asyncio.wait(
                [stopping, waking], timeout=interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            waking.cancel()
        woke = self.event.is_set()
        self.event.clear()
        return woke


_lock = threading.Lock()
_loops: set[Wake] = set()


def register(wake: Wake) -> None:
    with _lock:
        _loops.add(wake)


def unregister(wake: Wake) -> None:
    with _lock:
        _loops.discard(wake)


def wake_scheduler() -> None:
    """Start a scheduling round at once in every scheduler loop of this process."""
    with _lock:
        loops = list(_loops)
    for wake in loops:
        wake.set()


def _changed(obj: Any, fields: tuple[str, ...]) -> bool:
    attrs = inspect(obj).attrs
    return any(attrs[name].history.has_changes() for name in fields)


def _affects_plan(session: Session, obj: Any) -> bool:
    if isinstance(obj, TrainingJob):
        return obj in session.new or _changed(obj, _JOB_FIELDS)
    if isinstance(obj, Team):
        return True
    if isinstance(obj, Worker):
        return obj in session.new or obj in session.deleted or _changed(obj, _WORKER_FIELDS)
    return False


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _context: Any) -> None:
    if session.info.get(QUIET) or session.info.get(_PENDING):
        return
    runtime = session.info.get("kiln_runtime")
    if runtime is not None and runtime.spec.name != "training":
        return  # another service's session in this process
    changed = chain(session.new, session.dirty, session.deleted)
    if not any(_affects_plan(session, obj) for obj in changed):
        return
    session.info[_PENDING] = True
    connection = session.connection()
    if connection.dialect.name == "postgresql" and runtime is not None:
        # Delivered when (and only if) the transaction commits.
        connection.execute(
            text("SELECT pg_notify(:channel, '')"), {"channel": channel(runtime.db.schema)}
        )


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    if session.info.pop(_PENDING, False):
        wake_scheduler()


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
