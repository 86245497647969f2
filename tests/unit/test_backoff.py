"""Retry delays double up to their cap, each drawn between half and all of it (jitter)."""

from __future__ import annotations

import asyncio
import random

from kiln_core.backoff import Backoff


def test_delays_double_to_the_cap_within_their_jitter_band() -> None:
    backoff = Backoff(0.1, 0.8, rng=random.Random(1))
    nominal = [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    delays = [backoff.next_delay() for _ in nominal]
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected / 2 <= delay <= expected
    backoff.reset()
    assert 0.05 <= backoff.next_delay() <= 0.1


def test_two_retriers_that_failed_together_do_not_wait_alike() -> None:
    a, b = Backoff(1.0, 8.0, rng=random.Random(1)), Backoff(1.0, 8.0, rng=random.Random(2))
    assert [a.next_delay() for _ in range(4)] != [b.next_delay() for _ in range(4)]


async def test_a_stop_ends_the_wait() -> None:
    stop = asyncio.Event()
    stop.set()
    started = asyncio.get_running_loop().time()
    await Backoff(30.0, 30.0).sleep(stop)
    assert asyncio.get_running_loop().time() - started < 1.0
