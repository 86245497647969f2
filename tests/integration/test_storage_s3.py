"""The object store contract against real MinIO over the S3 API."""

from __future__ import annotations

import pytest

from kiln_core.storage import SNOWBALL_MAX_OBJECT, S3Store, SpooledBlob, blob_key, open_store
from tests.unit.test_storage import store_contract

pytestmark = pytest.mark.integration


async def test_s3_store_contract(s3_url: str, unique: str) -> None:
    store = open_store(s3_url)
    await store.check()
    await store_contract(store, f"test-{unique}")


async def _spooled(store: S3Store, count: int, unique: str) -> list[SpooledBlob]:
    return [await store.spool(f"{unique}-{i}".encode() * 50) for i in range(count)]


async def test_many_small_blobs_are_stored_in_batches_byte_for_byte(
    s3_url: str, unique: str
) -> None:
    store = open_store(s3_url)
    assert isinstance(store, S3Store)
    blobs = await _spooled(store, 250, unique)  # more than one batch
    big = await store.spool(b"x" * (SNOWBALL_MAX_OBJECT + 1))  # goes on its own
    await store.put_spooled_many([*blobs, blobs[0], big])
    assert store._snowball  # the batch path was taken and accepted
    for blob in [*blobs[::37], big]:
        assert await store.read_bytes(blob_key(blob.sha256)) == (blob.data or b"x" * blob.size)
    for blob in [*blobs, big]:
        await store.delete(blob_key(blob.sha256))


async def test_a_store_refusing_batches_falls_back_to_single_puts(
    s3_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from minio.error import S3Error

    store = open_store(s3_url)
    assert isinstance(store, S3Store)
    calls = 0

    def refuse(*_args: object, **_kwargs: object) -> None:
        nonlocal calls
        calls += 1
        raise S3Error(None, "NotImplemented", "no batches here", "", "", None)  # type: ignore[arg-type]

    monkeypatch.setattr(store.client, "upload_snowball_objects", refuse)
    blobs = await _spooled(store, 30, unique)
    await store.put_spooled_many(blobs)
    await store.put_spooled_many(await _spooled(store, 5, unique + "b"))
    assert calls == 1 and not store._snowball  # asked once, then remembered
    for blob in blobs:
        assert await store.exists(blob_key(blob.sha256))
        await store.delete(blob_key(blob.sha256))
