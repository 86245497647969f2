"""An export's blob reader: small blobs in batches, the same bytes whatever the call order."""

from __future__ import annotations

from pathlib import Path

from kiln_core.manifest import ManifestItem
from kiln_core.storage import ObjectStore, blob_key, open_store
from kiln_dataset.formats import common
from kiln_dataset.formats.common import PrefetchingReader


async def _items(store: ObjectStore, sizes: list[int]) -> list[ManifestItem]:
    items = []
    for n, size in enumerate(sizes):
        ref = await store.put_blob(bytes([n % 251]) * size + n.to_bytes(4, "big"))
        items.append(
            ManifestItem(
                item_id=f"{n}.png", blob=ref.sha256, media_type="image/png", size_bytes=ref.size
            )
        )
    return items


async def _read(reader: PrefetchingReader, sha: str) -> bytes:
    return b"".join([chunk async for chunk in reader(sha)])


async def test_in_order_reads_batch_the_small_blobs(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store = open_store(f"file://{tmp_path}/s")
    monkeypatch.setattr(common, "PREFETCH_SMALL", 1000)
    items = await _items(store, [10] * 300 + [5000, 10])
    calls: list[int] = []
    real = store.read_many

    async def counting(keys, concurrency=16):  # type: ignore[no-untyped-def]
        calls.append(len(keys))
        return await real(keys, concurrency)

    monkeypatch.setattr(store, "read_many", counting)
    reader = PrefetchingReader(store, items)
    for item in items:
        assert await _read(reader, item.blob) == await store.read_bytes(blob_key(item.blob))
    assert calls == [256, 45]  # two windows; the big blob streamed on its own


async def test_out_of_order_and_missing_reads_fall_back_to_the_store(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/s")
    items = await _items(store, [10, 20, 30])
    reader = PrefetchingReader(store, items)
    for item in reversed(items):
        expected = await store.read_bytes(blob_key(item.blob))
        assert await _read(reader, item.blob) == expected
