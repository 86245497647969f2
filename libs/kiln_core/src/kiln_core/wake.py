"""Waking a loop when a committed change concerns it, instead of waiting for its next poll.

A loop (a scheduler, a deployment controller) registers a :class:`Wake` on a channel name. A
transaction that changes what the loop works on calls :func:`stage` (or :func:`wake_on_commit`)
with that channel: once, and only if, it commits, every loop of this process registered on the
channel wakes (thread-safely, so a commit in a Celery worker thread wakes an event loop too). On
PostgreSQL the transaction also sends ``NOTIFY`` on the channel, delivered at commit, so a loop
in another process wakes when it listens (``Database.listen(channel, wake.set)``): the same way
the outbox relay is woken. Loops keep a slow poll only as a fallback.
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import event, text
from sqlalchemy.orm import Session
from sqlmodel.ext.asyncio.session import AsyncSession

_PENDING = "kiln_core.wake"


class Wake:
    """One loop's wake-up flag, settable from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def set(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop has closed; whatever waited on it is gone
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
_listeners: dict[str, set[Wake]] = {}


def register(channel: str, wake: Wake) -> None:
    with _lock:
        _listeners.setdefault(channel, set()).add(wake)


def unregister(channel: str, wake: Wake) -> None:
    with _lock:
        _listeners.get(channel, set()).discard(wake)


def wake_now(channel: str) -> None:
    """Wake every loop of this process registered on ``channel``."""
    with _lock:
        wakes = list(_listeners.get(channel, ()))
    for wake in wakes:
        wake.set()


def stage(session: Session, channel: str | None, *, local: str | None = None) -> None:
    """Wake ``channel``'s loops when ``session``'s transaction commits (here and, on
    PostgreSQL, in other processes); nothing happens if it rolls back. ``local`` names the
    loops of this process to wake instead, when they span several channels."""
    key = local or channel
    assert key is not None, "a wake-up needs a channel or a local name"
    pending: set[str] = session.info.setdefault(_PENDING, set())
    if key in pending:
        return
    pending.add(key)
    if channel is None:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Delivered when (and only if) the transaction commits.
        connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": channel})


async def wake_on_commit(session: AsyncSession, channel: str) -> None:
    """:func:`stage` for an async session."""
    await session.run_sync(stage, channel)


@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    for channel in session.info.pop(_PENDING, ()):
        wake_now(channel)


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
