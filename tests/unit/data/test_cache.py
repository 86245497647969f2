"""BlobCache across processes: fetch-once locking that survives a fork mid-fetch."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiln_core.storage import LocalStore, open_store
from kiln_data import BlobCache, BlobFetcher
from tests.unit.data.conftest import png


def _fill_in_child(store_url: str, cache_dir: str, sha: str) -> None:
    asyncio.run(BlobCache(cache_dir).fill(open_store(store_url), sha))


async def _put(store_url: str) -> str:
    return (await open_store(store_url).put_blob(png(1))).sha256


def test_a_process_forked_mid_fetch_does_not_inherit_the_blob_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_url = f"file://{tmp_path}/store"
    sha = asyncio.run(_put(store_url))
    parent = os.getpid()
    gate = threading.Event()
    original = LocalStore.stream

    async def flaky(self: LocalStore, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        if os.getpid() == parent:
            # Hold the parent's fetch (and its lock) until the child waits on it, then fail it.
            await asyncio.to_thread(gate.wait)
            raise OSError("store hiccup")
        async for chunk in original(self, key, chunk_size):
            yield chunk

    monkeypatch.setattr(LocalStore, "stream", flaky)
    cache = BlobCache(tmp_path / "cache")
    fetcher = BlobFetcher(store_url, cache)
    child = None
    try:
        future = fetcher.submit(sha)
        lock = Path(cache.path(sha) + ".lock")
        deadline = time.monotonic() + 10
        while not lock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Forked while the parent holds the lock, like a DataLoader worker started mid-prefetch:
        # once the parent's fetch fails the child must get the lock and fetch the blob itself.
        child = multiprocessing.get_context("fork").Process(
            target=_fill_in_child, args=(store_url, str(cache.root), sha)
        )
        child.start()
        time.sleep(0.3)
        gate.set()
        with pytest.raises(OSError, match="store hiccup"):
            future.result(timeout=10)
        child.join(timeout=10)
        assert child.exitcode == 0, "the forked process never got the lock"
        assert cache.contains(sha)
    finally:
        gate.set()
        fetcher.close()
        if child is not None and child.is_alive():
            child.kill()
