"""Background fetching of blobs into the local cache.

The object stores are async; a :class:`BlobFetcher` runs one event loop in a daemon thread with
one store client and a small thread pool, and hands out ``concurrent.futures.Future`` objects so
synchronous DataLoader code can wait on them. Fetchers are per process: a forked DataLoader worker
never touches its parent's loop thread (which does not exist in the child) but opens its own.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from kiln_core.storage import ObjectStore, open_store
from kiln_data.cache import BlobCache

DEFAULT_CONCURRENCY = 8


class BlobFetcher:
    """Fetches blobs from one object store into one :class:`BlobCache`, a few at a time."""

    def __init__(self, storage_url: str, cache: BlobCache, concurrency: int = DEFAULT_CONCURRENCY):
        self.storage_url = storage_url
        self.cache = cache
        self.pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        # Bounds the store's to_thread calls (chunk reads) and the lock waits.
        self._loop.set_default_executor(
            ThreadPoolExecutor(max_workers=concurrency * 2, thread_name_prefix="kiln-fetch")
        )
        self._limit = asyncio.Semaphore(concurrency)
        self._store: ObjectStore | None = None
        self._inflight: dict[str, Future[str]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kiln-blob-fetcher", daemon=True
        )
        self._thread.start()

    def submit(self, sha256: str) -> Future[str]:
        """Start fetching the blob (once, however often asked); the future yields its path."""
        with self._lock:
            future = self._inflight.get(sha256)
            if future is not None:
                return future
            future = asyncio.run_coroutine_threadsafe(self._fetch(sha256), self._loop)
            self._inflight[sha256] = future
        # Outside the lock: a future that is already done runs the callback right here.
        future.add_done_callback(lambda f: self._forget(sha256, f))
        return future

    def get(self, sha256: str) -> str:
        """The cached path of the blob, fetching it first on a miss (blocking)."""
        if self.cache.contains(sha256):
            return self.cache.path(sha256)
        return self.submit(sha256).result()

    def _forget(self, sha256: str, future: Future[str]) -> None:
        with self._lock:
            if self._inflight.get(sha256) is future:
                del self._inflight[sha256]

    async def _fetch(self, sha256: str) -> str:
        async with self._limit:
            if self._store is None:
                self._store = open_store(self.storage_url)
            return await self.cache.fill(self._store, sha256)

    def close(self) -> None:
        """Stop the loop thread; in-flight fetches are abandoned (their temp files removed)."""
        if self.pid != os.getpid() or not self._thread.is_alive():
            return

        async def _shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


_fetchers: dict[tuple[str, str, int | None], BlobFetcher] = {}
_fetchers_lock = threading.Lock()


def fetcher_for(storage_url: str, cache: BlobCache) -> BlobFetcher:
    """The process's fetcher for this store and cache, created on first use.

    Sharing one per process means one store client and one loop thread however many datasets
    (train, val) read the same store; a forked child gets its own because the parent's loop
    thread does not survive the fork.
    """
    key = (storage_url, str(cache.root), cache.max_bytes)
    with _fetchers_lock:
        fetcher = _fetchers.get(key)
        if fetcher is None or fetcher.pid != os.getpid():
            fetcher = BlobFetcher(storage_url, cache)
            _fetchers[key] = fetcher
        return fetcher


def _reset_after_fork() -> None:
    global _fetchers_lock
    # The parent's fetchers live on threads the child does not have; never reuse them.
    _fetchers.clear()
    _fetchers_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
