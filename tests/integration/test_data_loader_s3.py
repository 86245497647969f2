"""VersionDataset + DataLoader over real MinIO: two worker processes, a cold cache, then warm."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kiln_core.manifest import ClassLabel, ManifestItem, dump_jsonl
from kiln_core.storage import open_store
from kiln_data import VersionDataset, load_manifest, make_loader, to_tensor

pytestmark = pytest.mark.integration

LABELS = ["cat", "dog"]


def random_png() -> tuple[bytes, torch.Tensor]:
    pixels = np.frombuffer(os.urandom(16 * 16 * 3), dtype=np.uint8).reshape(16, 16, 3)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue(), to_tensor(Image.fromarray(pixels))


async def test_loader_with_two_workers_reads_a_version_from_minio(
    s3_url: str, unique: str, tmp_path: Path
) -> None:
    store = open_store(s3_url)
    await store.check()
    items: list[ManifestItem] = []
    expected: dict[str, tuple[torch.Tensor, str]] = {}
    for i in range(20):
        data, tensor = random_png()
        ref = await store.put_blob(data)
        item_id = f"{unique}-{i}"
        label = LABELS[i % 2]
        items.append(
            ManifestItem(
                item_id=item_id,
                blob=ref.sha256,
                media_type="image/png",
                size_bytes=ref.size,
                split="train" if i < 16 else "val",
                labels=[ClassLabel(label=label)],
            )
        )
        expected[item_id] = (tensor, label)
    key = f"test-{unique}/manifest.jsonl"
    await store.put(key, b"".join(dump_jsonl(items)))
    try:
        assert load_manifest(s3_url, key) == items
        ds = VersionDataset(
            key, s3_url, split="train", transform=to_tensor, cache_dir=tmp_path / "cache"
        )
        assert len(ds) == 16 and ds.classes == ["cat", "dog"]
        loader = make_loader(ds, batch_size=4, seed=0, num_workers=2, persistent_workers=True)
        train = {expected[i][0].numpy().tobytes(): expected[i][1] for i in ds.item_ids}
        for _epoch in range(2):  # cold (fetches from MinIO), then warm (local cache)
            seen = {}
            for images, targets in loader:
                assert images.shape[1:] == (3, 16, 16)
                for image, target in zip(images, targets.tolist(), strict=True):
                    seen[image.numpy().tobytes()] = ds.classes[target]
            assert seen == train
        for i in range(len(ds)):
            image, target = ds[i]
            tensor, label = expected[ds.item_ids[i]]
            assert torch.equal(image, tensor) and ds.classes[target] == label
        assert all(ds.cache.contains(item.blob) for item in items[:16])
    finally:
        await store.delete(key)
        for item in items:
            await store.delete(f"blobs/sha256/{item.blob[:2]}/{item.blob[2:]}")
