"""The API gateway of the embedded mode and the local stack: ``/api/<service>/…`` to a service.

In one process (the demo) the targets are the services' ASGI apps, called directly; on the
local stack (``kiln up``) they are the service processes, reached over HTTP. Either way the
gateway passes the ``Authorization`` header through untouched, refuses bodies over the size
limit with problem+json before reading them, and answers an unknown service with a 404 problem.
Compose and Kubernetes use nginx for the same job (``compose/gateway``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt
from starlette.types import ASGIApp, Receive, Scope, Send

from kiln_core.metrics import REQUESTS_SHED

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


async def _problem(
    send: Send, status: int, title: str, detail: str, retry_after_s: float | None = None
) -> None:
    headers = [(b"content-type", b"application/problem+json")]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after_s))).encode()))
    body = json.dumps(
        {
            "type": f"https://kiln.dev/problems/{title.lower().replace(' ', '-')}",
            "title": title,
            "status": status,
            "detail": detail,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers,
        }
    )
    await send({"type": "http.response.body", "body": body})


def principal_key(headers: Mapping[str, str], client: tuple[str, int] | None) -> str:
    """Whom a request counts against: the token's issuer and subject (read, not verified: the
    service verifies; a forged token only spends its own budget), else the token itself, else
    the caller's address."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            return f"sub:{claims.get('iss', '')}|{claims['sub']}"
        except (jwt.InvalidTokenError, KeyError, TypeError):
            return "token:" + hashlib.sha256(token.encode()).hexdigest()[:24]
    return f"addr:{client[0] if client else 'unknown'}"


class RateLimiter:
    """A token bucket per principal: ``rate`` requests a second on average, bursts up to
    ``burst``. :meth:`take` answers 0 when a request may go, else the seconds until it could."""

    MAX_KEYS = 50_000

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self._buckets) >= self.MAX_KEYS and key not in self._buckets:
            self._forget_idle(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: forget those.
        full = [
            k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]


class LoopLag:
    """How late this process's event loop runs what is due on it (smoothed), measured every
    ``interval_s``. When the process is out of CPU, requests wait in socket buffers where no
    count of requests in flight sees them; the loop's lateness does."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.seconds = 0.0
        self._task: asyncio.Task[None] | None = None

    def ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._measure())

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval_s)
            late = max(loop.time() - before - self.interval_s, 0.0)
            self.seconds = 0.8 * self.seconds + 0.2 * late  # about the last quarter second

    def shed(self, limit_s: float) -> bool:
        """Whether to refuse a request: never under ``limit_s``, then more of them the later
        the loop runs (all at twice the limit), so the answers it does give stay prompt."""
        over = (self.seconds - limit_s) / limit_s
        return over > 0 and random.random() < over


class Gateway:
    """An ASGI app routing ``/api/<service>/<path>`` to ``targets[service]`` (an ASGI app or a
    base URL)."""

    def __init__(
        self,
        targets: Mapping[str, ASGIApp | str],
        *,
        max_body_bytes: int = 64 * 1024 * 1024,
        console: ASGIApp | None = None,
        dev_tokens: Callable[[], dict[str, str]] | None = None,
        rate_per_principal: float = 0.0,
        burst_per_principal: float = 0.0,
        max_inflight: int = 0,
        shed_loop_lag_s: float = 0.0,
    ) -> None:
        self.targets = dict(targets)
        self.max_body_bytes = max_body_bytes
        # Per-principal rate limit (429) and a cap on requests in flight (503), both with
        # Retry-After; 0 turns either off.
        self.limiter = (
            RateLimiter(rate_per_principal, burst_per_principal or 2 * rate_per_principal)
            if rate_per_principal > 0
            else None
        )
        self.max_inflight = max_inflight
        self.inflight = 0
        # Shed (503) while the event loop runs later than this (0: never): out of CPU.
        self.shed_loop_lag_s = shed_loop_lag_s
        self.loop_lag = LoopLag()
        # The web console at "/" (everything outside /api/), and in embedded mode a token per
        # role for its sign-in page (a real deployment signs in with its IdP's tokens).
        self.console = console
        self.dev_tokens = dev_tokens
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
            return
        if path == "/console/session":
            await self._console_session(send)
            return
        if self.console is not None and not path.startswith("/api/"):
            await self.console(scope, receive, send)
            return
        parts = path.split("/", 3)  # "", "api", service, rest
        if len(parts) < 3 or parts[1] != "api" or parts[2] not in self.targets:
            await _problem(
                send, 404, "Not found", f"no service behind {path!r}; use /api/<service>/"
            )
            return
        service, rest = parts[2], "/" + (parts[3] if len(parts) > 3 else "")
        if rest.startswith("/metrics"):
            await _problem(send, 404, "Not found", "metrics are scraped from each service")
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if self.limiter is not None:
            wait = self.limiter.take(principal_key(headers, scope.get("client")))
            if wait > 0:
                REQUESTS_SHED.labels("rate_limit").inc()
                await _problem(
                    send, 429, "Too many requests", "rate limit of this caller reached", wait
                )
                return
        if self.max_inflight and self.inflight >= self.max_inflight:
            REQUESTS_SHED.labels("overload").inc()
            await _problem(send, 503, "Overloaded", "the gateway is at capacity", 1.0)
            return
        if self.shed_loop_lag_s:
            self.loop_lag.ensure_started()
            if self.loop_lag.shed(self.shed_loop_lag_s):
                REQUESTS_SHED.labels("cpu").inc()
                await _problem(send, 503, "Overloaded", "the gateway is out of CPU", 1.0)
                return
        self.inflight += 1
        try:
            await self._route(service, rest, headers, scope, receive, send)
        finally:
            self.inflight -= 1

    async def _route(
        self,
        service: str,
        rest: str,
        headers: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _problem(
                send, 413, "Payload too large", f"bodies are limited to {self.max_body_bytes} bytes"
            )
            return
        target = self.targets[service]
        if isinstance(target, str):
            await self._forward(target, rest, scope, receive, send)
        else:
            inner = dict(scope)
            inner["path"] = rest
            inner["raw_path"] = rest.encode()
            await target(inner, receive, send)

    async def _console_session(self, send: Send) -> None:
        info: dict[str, Any] = {"mode": "token"}
        if self.dev_tokens is not None:
            info = {"mode": "embedded", "tokens": self.dev_tokens()}
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(info).encode()})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(
        self, base: str, rest: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if self._client is None:  # one pooled client, made on first use (lifespan or not)
            # Idle upstream connections are dropped well before a service's keep-alive timeout,
            # so the gateway never reuses a connection the service is closing (a 502 race).
            limits = httpx.Limits(keepalive_expiry=2.0)
            self._client = httpx.AsyncClient(timeout=300, limits=limits)
        client = self._client
        query = scope.get("query_string", b"").decode()
        url = base.rstrip("/") + rest + (f"?{query}" if query else "")
        headers = [
            (k.decode(), v.decode())
            for k, v in scope["headers"]
            if k.decode().lower() not in HOP_BY_HOP
        ]

        async def body() -> Any:
            while True:
                message = await receive()
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body"):
                    return

        request = client.build_request(scope["method"], url, headers=headers, content=body())
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            await _problem(send, 502, "Bad gateway", f"the service did not answer: {exc}")
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.encode(), v.encode())
                        for k, v in response.headers.multi_items()
                        if k.lower() not in HOP_BY_HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()
