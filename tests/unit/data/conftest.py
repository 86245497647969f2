"""A small dataset version in a ``file://`` store: PNG images, class labels, splits."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from kiln_core.manifest import BoxLabel, ClassLabel, ManifestItem, dump_jsonl
from kiln_core.storage import open_store

LABELS = ["dog", "cat", "bird"]
SPLITS = ["train", "train", "val", "test"]


@dataclass
class Version:
    store_url: str
    store_dir: Path
    manifest_key: str
    items: list[ManifestItem]
    cache_dir: Path


def png(seed: int, size: int = 8) -> bytes:
    """A solid-colour PNG unique to ``seed`` (lossless, so pixels can be compared exactly)."""
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, format="PNG")
    return out.getvalue()


async def make_version(tmp_path: Path, n: int = 12) -> Version:
    store_dir = tmp_path / "store"
    store_url = f"file://{store_dir}"
    store = open_store(store_url)
    items = []
    for i in range(n):
        ref = await store.put_blob(png(i))
        items.append(
            ManifestItem(
                item_id=f"item-{i:03d}",
                blob=ref.sha256,
                media_type="image/png",
                size_bytes=ref.size,
                width=8,
                height=8,
                split=SPLITS[i % len(SPLITS)],  # type: ignore[arg-type]
                labels=[
                    ClassLabel(label=LABELS[i % len(LABELS)]),
                    BoxLabel(label=LABELS[i % len(LABELS)], bbox=[1, 1, 4, 4]),
                ],
            )
        )
    key = "datasets/d1/versions/1/manifest.jsonl"
    await store.put(key, b"".join(dump_jsonl(items)))
    return Version(store_url, store_dir, key, items, tmp_path / "cache")


@pytest.fixture
async def version(tmp_path: Path) -> Version:
    return await make_version(tmp_path)
