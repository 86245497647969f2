"""VersionDataset: manifest order, labels, splits, the blob cache and its integrity check."""

from __future__ import annotations

import io
import pickle
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from kiln_core.manifest import BoxLabel, ManifestItem
from kiln_core.storage import LocalStore, blob_key, open_store
from kiln_data import BlobCache, CorruptBlob, VersionDataset, load_manifest, to_tensor
from tests.unit.data.conftest import LABELS, Version, png


def pixels(data: bytes) -> torch.Tensor:
    return to_tensor(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture
def store_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts blob reads from every local store in this process."""
    reads: Counter[str] = Counter()
    original = LocalStore.stream

    def counting(self: LocalStore, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        if key.startswith("blobs/"):
            reads[key] += 1
        return original(self, key, chunk_size)

    monkeypatch.setattr(LocalStore, "stream", counting)
    return reads


def test_load_manifest_returns_the_items_in_order(version: Version) -> None:
    items = load_manifest(version.store_url, version.manifest_key)
    assert items == version.items


async def test_load_manifest_works_inside_a_running_event_loop(version: Version) -> None:
    assert load_manifest(version.store_url, version.manifest_key) == version.items


async def test_items_come_back_in_manifest_order_with_their_class_index(version: Version) -> None:
    ds = VersionDataset(
        version.manifest_key, version.store_url, transform=to_tensor, cache_dir=version.cache_dir
    )
    assert ds.classes == sorted(LABELS) == ["bird", "cat", "dog"]
    assert ds.class_to_idx == {"bird": 0, "cat": 1, "dog": 2}
    assert ds.item_ids == [item.item_id for item in version.items]
    assert len(ds) == len(version.items)
    for i in range(len(ds)):
        image, target = ds[i]
        assert torch.equal(image, pixels(png(i)))
        assert image.shape == (3, 8, 8) and image.dtype == torch.float32
        assert ds.classes[target] == LABELS[i % len(LABELS)]


async def test_without_a_transform_items_are_pil_images(version: Version) -> None:
    ds = VersionDataset(version.items, version.store_url, cache_dir=version.cache_dir)
    image, _ = ds[3]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (8, 8)


async def test_split_filter_keeps_that_split_and_the_shared_class_map(version: Version) -> None:
    train = VersionDataset(
        version.items, version.store_url, split="train", cache_dir=version.cache_dir
    )
    val = VersionDataset(version.items, version.store_url, split="val", cache_dir=version.cache_dir)
    both = VersionDataset(
        version.items, version.store_url, split=["val", "test"], cache_dir=version.cache_dir
    )
    by_id = {item.item_id: item for item in version.items}
    assert train.item_ids and all(by_id[i].split == "train" for i in train.item_ids)
    assert val.item_ids and all(by_id[i].split == "val" for i in val.item_ids)
    assert {by_id[i].split for i in both.item_ids} == {"val", "test"}
    # Derived from the whole manifest, so a val split lacking a class still indexes like train.
    assert train.class_to_idx == val.class_to_idx == both.class_to_idx
    assert [train.items[i].item_id for i in range(len(train))] == train.item_ids


async def test_given_class_map_is_used_and_unknown_labels_are_refused(version: Version) -> None:
    mapping = {"dog": 0, "cat": 2, "bird": 1}
    ds = VersionDataset(
        version.items, version.store_url, class_to_idx=mapping, cache_dir=version.cache_dir
    )
    assert ds.classes == ["dog", "bird", "cat"]
    assert [ds[i][1] for i in range(3)] == [0, 2, 1]  # dog, cat, bird
    with pytest.raises(ValueError, match="not in class_to_idx"):
        VersionDataset(version.items, version.store_url, class_to_idx={"dog": 0})
    with pytest.raises(ValueError, match="0 … n-1"):
        VersionDataset(version.items, version.store_url, class_to_idx={"dog": 0, "cat": 5})


async def test_classification_leaves_out_items_without_a_class_label(version: Version) -> None:
    unlabelled = version.items[0].model_copy(update={"item_id": "unlabelled", "labels": []})
    ds = VersionDataset([unlabelled, *version.items], version.store_url)
    assert "unlabelled" not in ds.item_ids and len(ds) == len(version.items)


async def test_labels_target_gives_the_raw_labels(version: Version) -> None:
    ds = VersionDataset(
        version.items, version.store_url, target="labels", cache_dir=version.cache_dir
    )
    _, labels = ds[1]
    assert labels == version.items[1].labels
    assert any(isinstance(label, BoxLabel) and label.bbox == [1, 1, 4, 4] for label in labels)


async def test_second_epoch_reads_only_from_the_cache(
    version: Version, store_reads: Counter[str]
) -> None:
    ds = VersionDataset(
        version.manifest_key, version.store_url, transform=to_tensor, cache_dir=version.cache_dir
    )
    first = [ds[i] for i in range(len(ds))]
    assert sorted(store_reads) == sorted(blob_key(item.blob) for item in version.items)
    assert set(store_reads.values()) == {1}

    store_reads.clear()
    shutil.rmtree(version.store_dir)
    second = [ds[i] for i in range(len(ds))]
    assert not store_reads
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, second, strict=True))

    # The cache is keyed by content, so another version with the same blobs is warm too.
    other = VersionDataset(version.items[:3], version.store_url, cache_dir=version.cache_dir)
    assert len([other[i] for i in range(len(other))]) == 3


async def test_corrupt_blob_is_refused_and_not_cached(version: Version) -> None:
    item = version.items[2]
    # Overwrite the stored bytes: the store now serves something else under the blob's hash.
    (version.store_dir / blob_key(item.blob)).write_bytes(png(999))
    ds = VersionDataset(version.items, version.store_url, cache_dir=version.cache_dir)
    with pytest.raises(CorruptBlob, match=f"blob {item.blob} .* hashes to [0-9a-f]{{64}}") as info:
        ds[2]
    assert any(item.item_id in note for note in info.value.__notes__)
    assert info.value.type == "corrupt-blob"
    shard = Path(BlobCache(version.cache_dir).path(item.blob)).parent
    assert not shard.exists() or list(shard.iterdir()) == []
    # Other items are unaffected.
    assert ds[1][1] == ds.class_to_idx[LABELS[1]]


async def test_missing_blob_error_names_the_item(version: Version) -> None:
    item = version.items[4]
    (version.store_dir / blob_key(item.blob)).unlink()
    ds = VersionDataset(version.items, version.store_url, cache_dir=version.cache_dir)
    with pytest.raises(KeyError) as info:
        ds[4]
    assert any(item.item_id in note for note in info.value.__notes__)


async def test_dataset_pickles_without_its_fetcher(version: Version) -> None:
    ds = VersionDataset(version.items, version.store_url, cache_dir=version.cache_dir)
    ds.warm()
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.item_ids == ds.item_ids and clone._fetcher is None
    assert clone[0][1] == ds[0][1]


async def test_warm_fetches_only_what_is_missing(
    version: Version, store_reads: Counter[str]
) -> None:
    ds = VersionDataset(version.items, version.store_url, cache_dir=version.cache_dir)
    assert ds.warm([0, 1, 2]) == 3
    assert ds.warm() == len(version.items) - 3
    assert ds.warm() == 0
    assert set(store_reads.values()) == {1}


async def test_cache_size_cap_evicts_least_recently_read_blobs(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/store")
    blobs = [(await store.put_blob(png(i, size=64) + bytes(2000))).sha256 for i in range(10)]
    items = [
        ManifestItem(item_id=str(i), blob=sha, media_type="image/png", size_bytes=0)
        for i, sha in enumerate(blobs)
    ]
    cap = 5 * 2300
    ds = VersionDataset(
        items, store.url, target="labels", cache_dir=tmp_path / "cache", cache_max_bytes=cap
    )
    for i in range(len(ds)):
        ds[i]
    cache = BlobCache(tmp_path / "cache")
    assert 0 < cache.size_bytes() <= cap
    assert cache.contains(blobs[-1])  # the most recent read survives
    assert not cache.contains(blobs[0])
