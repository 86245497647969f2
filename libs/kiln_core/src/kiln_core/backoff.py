"""Exponential backoff with jitter: the one way Kiln waits before trying again.

Each delay doubles up to a cap, and is drawn between half and all of it ("equal jitter"), so
processes that failed together (a broker outage, a lock) do not retry in lockstep, while each
still waits at least half the nominal delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import random


class Backoff:
    """Delays for successive retries: ``initial_s``, doubling to ``max_s``, jittered."""

    def __init__(self, initial_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max(max_s, initial_s)
        self._nominal = initial_s
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next try (and double the one after, up to the cap)."""
        nominal = self._nominal
        self._nominal = min(nominal * 2, self.max_s)
        return nominal / 2 + self._rng.uniform(0, nominal / 2)

    def reset(self) -> None:
        """After a success: the next failure waits the initial delay again."""
        self._nominal = self.initial_s

    async def sleep(self, stop: asyncio.Event | None = None) -> None:
        """Wait the next delay, or until ``stop`` is set."""
        delay = self.next_delay()
        if stop is None:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
