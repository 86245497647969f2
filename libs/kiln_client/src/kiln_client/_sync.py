"""The synchronous face of the async client: one event loop in a daemon thread runs every
call, so the sync and async clients share each line of request code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class Portal:
    """An event loop of its own in a daemon thread; :meth:`call` runs a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="kiln-client", daemon=True
        )
        self.thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def iterate(self, source: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.call(_next(source))
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                self.call(close())

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        self.loop.close()


async def _next(source: AsyncIterator[T]) -> T:
    return await source.__anext__()


class SyncResource(Generic[R]):
    """A resource of the sync client: each method runs its async twin on the portal."""

    def __init__(self, inner: R, portal: Portal) -> None:
        self._inner = inner
        self._portal = portal


def blocking(
    method: Callable[Concatenate[R, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncResource[R], P], T]:
    """The sync version of an async resource method (same arguments, same answer)."""

    def call(self: SyncResource[R], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._portal.call(method(self._inner, *args, **kwargs))

    call.__doc__ = method.__doc__
    call.__name__ = method.__name__
    return call


def iterating(
    method: Callable[Concatenate[R, P], AsyncIterator[T]],
) -> Callable[Concatenate[SyncResource[R], P], Iterator[T]]:
    """The sync version of an async generator method."""

    def call(self: SyncResource[R], /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._portal.iterate(method(self._inner, *args, **kwargs))

    call.__doc__ = method.__doc__
    call.__name__ = method.__name__
    return call
