"""Where the client finds Kiln and who it is: ``KILN_URL`` and ``KILN_TOKEN``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_URL = "http://127.0.0.1:8100"  # the gateway `kiln up` starts


@dataclass(frozen=True)
class ClientSettings:
    """How to reach the gateway. ``url`` is the gateway's root (``/api/<service>/…`` below it)."""

    url: str = DEFAULT_URL
    token: str | None = None
    timeout_s: float = 120.0
    # Attempts for an idempotent call that meets a connection error or a 503.
    attempts: int = 6
    # The most one backoff delay grows to, in seconds (jittered exponential below it).
    max_backoff_s: float = 8.0
    # A service's own API instead of the gateway's /api/<service> (benchmarks, tests).
    service_urls: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        """Settings from ``KILN_URL``, ``KILN_TOKEN`` and ``KILN_TIMEOUT_S``."""
        env = os.environ if env is None else env
        return cls(
            url=(env.get("KILN_URL") or DEFAULT_URL).rstrip("/"),
            token=env.get("KILN_TOKEN") or None,
            timeout_s=float(env.get("KILN_TIMEOUT_S") or 120.0),
        )
