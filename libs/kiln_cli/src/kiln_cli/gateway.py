"""The API gateway of the embedded mode and the local stack: ``/api/<service>/…`` to a service.

In one process (the demo) the targets are the services' ASGI apps, called directly; on the
local stack (``kiln up``) they are the service processes, reached over HTTP. Either way the
gateway passes the ``Authorization`` header through untouched, refuses bodies over the size
limit with problem+json before reading them, and answers an unknown service with a 404 problem.
Compose and Kubernetes use nginx for the same job (``compose/gateway``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

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


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
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
            "headers": [(b"content-type", b"application/problem+json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
    ) -> None:
        self.targets = dict(targets)
        self.max_body_bytes = max_body_bytes
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
