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

from itertools import chain
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from kiln_core.wake import Wake, stage, wake_now
from kiln_core.wake import register as core_register
from kiln_core.wake import unregister as core_unregister
from kiln_training.models import Team, TrainingJob, Worker

__all__ = ["QUIET", "Wake", "channel", "register", "unregister", "wake_scheduler"]

# Set on a session whose changes must not wake the scheduler (the scheduler's own round).
QUIET = "kiln_training.quiet"
_JOB_FIELDS = ("status", "resources", "priority", "pool")
_WORKER_FIELDS = ("pool", "capacity")


def channel(schema: str) -> str:
    """The PostgreSQL ``NOTIFY`` channel of the training service in ``schema``."""
    return f"kiln_training_schedule_{schema}"


# In process every scheduler loop wakes (a commit in a Celery thread included); other
# processes' loops wake through NOTIFY on the schema's channel.
_EVERY = "kiln_training.schedule"


def register(wake: Wake) -> None:
    core_register(_EVERY, wake)


def unregister(wake: Wake) -> None:
    core_unregister(_EVERY, wake)


def wake_scheduler() -> None:
    """Start a scheduling round at once in every scheduler loop of this process."""
    wake_now(_EVERY)


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
    if session.info.get(QUIET):
        return
    runtime = session.info.get("kiln_runtime")
    if runtime is not None and runtime.spec.name != "training":
        return  # another service's session in this process
    changed = chain(session.new, session.dirty, session.deleted)
    if any(_affects_plan(session, obj) for obj in changed):
        notify = channel(runtime.db.schema) if runtime is not None else None
        stage(session, notify, local=_EVERY)
