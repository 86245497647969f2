"""A dependency outage in the logs: one line when it starts, a one-line summary now and then
while it lasts, one line when it ends; never a traceback per retry."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Outage:
    """The trouble of one thing a loop retries (Triton, Kafka, the database) as its log sees
    it. Call :meth:`failed` on every failed attempt and :meth:`recovered` on every success."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        summary_every_s: float = 60.0,
        traceback_first: bool = False,
        clock: Callable[[], float] = time.monotonic,
        **extra: object,
    ) -> None:
        self.log = log
        self.what = what
        self.summary_every_s = summary_every_s
        # Where the failure may be a bug rather than an outage, its first traceback is kept.
        self.traceback_first = traceback_first
        self.clock = clock
        self.extra = extra
        self.since: float | None = None
        self.failures = 0
        self._summarised = 0.0
        self._last_error = ""

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException | str) -> None:
        now = self.clock()
        self._last_error = (
            error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        )[:500]
        self.failures += 1
        if self.since is None:
            self.since = self._summarised = now
            self.log.warning(
                "%s failing: %s; retrying",
                self.what,
                self._last_error,
                extra={**self.extra, "outage": "started", "error": self._last_error},
                exc_info=error if self.traceback_first and isinstance(error, Exception) else None,
            )
            return
        if now - self._summarised >= self.summary_every_s:
            self._summarised = now
            self.log.warning(
                "%s still failing after %.0f s (%d attempts; last: %s)",
                self.what,
                now - self.since,
                self.failures,
                self._last_error,
                extra={
                    **self.extra,
                    "outage": "ongoing",
                    "seconds": round(now - self.since, 1),
                    "attempts": self.failures,
                    "error": self._last_error,
                },
            )

    def recovered(self) -> None:
        if self.since is None:
            return
        lasted = self.clock() - self.since
        self.log.warning(
            "%s working again after %.0f s (%d failed attempts)",
            self.what,
            lasted,
            self.failures,
            extra={**self.extra, "outage": "ended", "seconds": round(lasted, 1)},
        )
        self.since, self.failures = None, 0
