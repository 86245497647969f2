"""The one HTTP path of the client: httpx, a bearer token, problem+json errors, and retries
with jittered exponential backoff for calls that are safe to repeat."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from kiln_client.errors import ApiError, ConnectionFailed, Unavailable
from kiln_client.settings import ClientSettings

# Methods HTTP defines as idempotent; a POST is retried only when the caller says it may be.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError | Unavailable)


def _connect_only(exc: BaseException) -> bool:
    # A request that never connected was never sent, so even a POST may go again.
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


class Transport:
    """Sends requests to ``<url>/api/<service><path>`` and turns error answers into
    :class:`ApiError`. Shared by every resource of a client (and by clients made with
    :meth:`with_token`), so they share one connection pool."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.http = http or httpx.AsyncClient(
            base_url=settings.url, timeout=settings.timeout_s, transport=transport
        )
        self._sent = [0]  # requests sent, retries included; shared with with_token's clones

    def with_token(self, token: str | None) -> Transport:
        """The same connection pool, calling as someone else."""
        clone = Transport.__new__(Transport)
        clone.settings = replace(self.settings, token=token)
        clone.http = self.http
        clone._sent = self._sent
        return clone

    @property
    def requests(self) -> int:
        """Requests sent so far by this client and those made from it with another token."""
        return self._sent[0]

    async def aclose(self) -> None:
        await self.http.aclose()

    def url(self, service: str, path: str) -> str:
        direct = self.settings.service_urls.get(service)
        return f"{direct.rstrip('/')}{path}" if direct else f"/api/{service}{path}"

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.settings.token:
            headers["authorization"] = f"Bearer {self.settings.token}"
        return headers

    def _retrying(self, method: str, idempotent: bool | None) -> AsyncRetrying:
        safe = method in IDEMPOTENT if idempotent is None else idempotent
        return AsyncRetrying(
            retry=retry_if_exception(_retryable if safe else _connect_only),
            wait=wait_random_exponential(multiplier=0.25, max=self.settings.max_backoff_s),
            stop=stop_after_attempt(self.settings.attempts),
            reraise=True,
        )

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        ok: tuple[int, ...] = (),
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call; a status outside 2xx (and ``ok``) raises :class:`ApiError`. ``files``
        given as a callable are rebuilt per attempt (an upload's file handles are read once)."""
        files = kwargs.pop("files", None)
        try:
            async for attempt in self._retrying(method, idempotent):
                with attempt:
                    self._sent[0] += 1
                    sent = dict(kwargs)
                    if files is not None:
                        sent["files"] = files() if callable(files) else files
                    response = await self.http.request(
                        method, self.url(service, path), headers=self.headers(headers), **sent
                    )
                    if response.is_success or response.status_code in ok:
                        return response
                    raise ApiError.from_response(response)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {self.settings.url}{path}: {exc!r}") from exc
        except RetryError as exc:  # pragma: no cover - reraise=True hands back the last error
            raise ConnectionFailed(str(exc)) from exc
        raise AssertionError("unreachable")  # tenacity either returns or raises

    async def json(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.request(service, method, path, **kwargs)
        return None if response.status_code == 204 or not response.content else response.json()

    @asynccontextmanager
    async def stream(
        self,
        service: str,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """A response read as it arrives (event streams, downloads); errors as :class:`ApiError`."""
        self._sent[0] += 1
        try:
            async with self.http.stream(
                method, self.url(service, path), headers=self.headers(headers), **kwargs
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise ApiError.from_response(response)
                yield response
        except httpx.TransportError as exc:  # refused, or cut off while reading
            raise ConnectionFailed(f"{method} {self.settings.url}{path}: {exc!r}") from exc
