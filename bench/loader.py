"""Training-data throughput: VersionDataset + DataLoader (warm blob cache) vs plain local files.

Creates ``n`` small random JPEGs, puts them into the object store and writes the same files to
a local directory, then times full passes of the same DataLoader settings over both: Kiln's
loader (manifest + content-addressed cache, after one warming pass that fetches from the store)
and a baseline torch Dataset opening the local files. Both decode to float tensors the same way,
so the ratio shows what the manifest/cache machinery costs on the hot path. Prints progress,
then one JSON object on the last line.

    .venv/bin/python bench/loader.py [--store s3://…] [--images 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from kiln_core.manifest import ClassLabel, ManifestItem, dump_jsonl
from kiln_core.storage import blob_key, open_store
from kiln_data import VersionDataset, make_loader, to_tensor

DEFAULT_STORE = "s3://kiln:kilnkilnkiln@127.0.0.1:59000/kiln?secure=false"
LABELS = ["cat", "dog", "bird", "fish"]


class LocalFiles(Dataset[tuple[torch.Tensor, int]]):
    """The baseline: image files on local disk, decoded the way a plain torch Dataset would."""

    def __init__(self, paths: list[Path], targets: list[int]) -> None:
        self.paths = paths
        self.targets = targets

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            return to_tensor(image.convert("RGB")), self.targets[index]


def random_jpegs(n: int, size: int = 64, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=90)
        images.append(out.getvalue())
    return images


def images_per_s(loader: Iterable[Any], n: int) -> float:
    start = time.perf_counter()
    seen = 0
    for images, _targets in loader:
        seen += len(images)
    elapsed = time.perf_counter() - start
    assert seen == n, f"loader yielded {seen} images, expected {n}"
    return n / elapsed


def timed_passes(loader: Iterable[Any], n: int, repeats: int) -> float:
    """Median images/s over ``repeats`` full passes (after the caller's warming pass)."""
    return statistics.median(images_per_s(loader, n) for _ in range(repeats))


async def loader_throughput(
    store_url: str,
    n_images: int = 1000,
    *,
    batch_size: int = 64,
    num_workers: int = 2,
    repeats: int = 3,
) -> dict[str, Any]:
    """Images/s through VersionDataset + DataLoader (warm cache) vs the same files on disk."""
    run = uuid.uuid4().hex[:10]
    store = open_store(store_url)
    await store.check()
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-loader-"))
    files = work / "files"
    files.mkdir()
    blobs = random_jpegs(n_images, seed=int(run, 16) % 2**32)

    limit = asyncio.Semaphore(16)

    async def put(i: int, data: bytes) -> ManifestItem:
        async with limit:
            ref = await store.put_blob(data)
        (files / f"{i:06d}.jpg").write_bytes(data)
        return ManifestItem(
            item_id=f"bench-{run}-{i}",
            blob=ref.sha256,
            media_type="image/jpeg",
            size_bytes=ref.size,
            width=64,
            height=64,
            split="train",
            labels=[ClassLabel(label=LABELS[i % len(LABELS)])],
        )

    print(f"putting {n_images} images into the store …", file=sys.stderr, flush=True)
    items = await asyncio.gather(*(put(i, data) for i, data in enumerate(blobs)))
    manifest_key = f"bench/loader-{run}/manifest.jsonl"
    await store.put(manifest_key, b"".join(dump_jsonl(items)))

    try:
        dataset = VersionDataset(
            manifest_key, store_url, transform=to_tensor, cache_dir=work / "cache"
        )
        loader = make_loader(
            dataset, batch_size, shuffle=True, seed=0, num_workers=num_workers,
            persistent_workers=True,
        )  # fmt: skip
        print("kiln loader: cold pass (fetching from the store) …", file=sys.stderr, flush=True)
        cold = images_per_s(loader, n_images)
        print("kiln loader: warm passes …", file=sys.stderr, flush=True)
        warm = timed_passes(loader, n_images, repeats)

        targets = [dataset.class_to_idx[LABELS[i % len(LABELS)]] for i in range(n_images)]
        baseline = DataLoader(
            LocalFiles(sorted(files.iterdir()), targets),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
        )
        print("local files: warming pass, then timed passes …", file=sys.stderr, flush=True)
        images_per_s(baseline, n_images)
        local = timed_passes(baseline, n_images, repeats)
        del loader, baseline
    finally:
        await store.delete(manifest_key)
        await asyncio.gather(*(store.delete(blob_key(item.blob)) for item in items))
        shutil.rmtree(work, ignore_errors=True)

    return {
        "images": n_images,
        "batch_size": batch_size,
        "num_workers": num_workers,
        "loader_cold_images_per_s": round(cold, 1),
        "loader_images_per_s": round(warm, 1),
        "local_images_per_s": round(local, 1),
        "loader_ratio": round(warm / local, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=DEFAULT_STORE, help="object store URL")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(
        loader_throughput(
            args.store,
            args.images,
            batch_size=args.batch_size,
            num_workers=args.workers,
            repeats=args.repeats,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
