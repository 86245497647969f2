"""Object store contract, run against the local directory store (and MinIO in integration)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiln_core.errors import PayloadTooLarge
from kiln_core.storage import ObjectNotFound, ObjectStore, blob_key, open_store


@pytest.fixture(params=["local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return open_store(f"file://{tmp_path}/store")


async def store_contract(store: ObjectStore, prefix: str) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several chunks
    sha = hashlib.sha256(data).hexdigest()

    first = await store.put_blob(io.BytesIO(data))
    assert first.sha256 == sha and first.size == len(data) and first.created
    assert first.key == f"blobs/sha256/{sha[:2]}/{sha[2:]}" == blob_key(sha)

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    second = await store.put_blob(gen())
    assert second.sha256 == sha and not second.created

    chunks = [c async for c in store.stream(first.key, chunk_size=512 * 1024)]
    assert max(len(c) for c in chunks) <= 512 * 1024
    assert b"".join(chunks) == data
    assert await store.size(first.key) == len(data)

    key = f"{prefix}/manifests/v1.jsonl"
    assert await store.put(key, b'{"a": 1}\n') == 9
    assert await store.read_bytes(key) == b'{"a": 1}\n'
    assert key in await store.list(prefix)
    await store.delete(key)
    assert not await store.exists(key)
    with pytest.raises(ObjectNotFound):
        await store.read_bytes(key)

    with pytest.raises(PayloadTooLarge):
        await store.put_blob(b"x" * 1000, max_bytes=999)


async def test_local_store_contract(store: ObjectStore) -> None:
    await store_contract(store, "t")


async def test_local_store_refuses_keys_that_escape_its_root(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        await store.put("../outside", b"x")
    for key in ("a/../../outside", "/etc/passwd", "a//../../x"):
        with pytest.raises((ValueError, ObjectNotFound)):
            await store.read_bytes(key)


async def test_read_many_returns_the_objects_it_finds(store: ObjectStore) -> None:
    refs = [await store.put_blob(bytes([n]) * (n + 1)) for n in range(5)]
    keys = [blob_key(r.sha256) for r in refs]
    found = await store.read_many([*keys, keys[0], "blobs/missing"])
    assert found == {blob_key(r.sha256): bytes([n]) * (n + 1) for n, r in enumerate(refs)}


async def test_a_file_of_exactly_one_chunk_streams_whole(store: ObjectStore) -> None:
    await store.put("exact", b"z" * 1024)
    chunks = [c async for c in store.stream("exact", chunk_size=1024)]
    assert b"".join(chunks) == b"z" * 1024
    with pytest.raises(ObjectNotFound):
        [c async for c in store.stream("absent")]
