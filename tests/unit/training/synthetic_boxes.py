"""Tiny synthetic detection versions in a ``file://`` store: grey canvases with filled
("block") and hollow ("ring") squares at random places and sizes, their boxes known."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from kiln_core.manifest import BoxLabel, ClassLabel, ManifestItem, dump_jsonl
from kiln_core.storage import open_store
from kiln_training.trainer import DataRef

MANIFEST_KEY = "datasets/d1/versions/1/manifest.jsonl"


@dataclass
class BoxedImage:
    item_id: str
    png: bytes
    width: int
    height: int
    boxes: list[tuple[str, list[float]]]  # (class, [x, y, w, h])
    split: str | None
    extra_labels: list[ClassLabel] = field(default_factory=list)


def shapes(n: int, size: int = 48, seed: int = 0) -> list[BoxedImage]:
    """``n`` canvases, one or two shapes each (10–18 px), every fifth in ``val``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        canvas = rng.integers(0, 40, (size, size)).astype(np.int32)
        boxes: list[tuple[str, list[float]]] = []
        for _ in range(int(rng.integers(1, 3))):
            side = int(rng.integers(10, 19))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            if any(
                x < bx + bw and bx < x + side and y < by + bh and by < y + side
                for _, (bx, by, bw, bh) in boxes
            ):
                continue
            kind = "block" if rng.random() < 0.5 else "ring"
            canvas[y : y + side, x : x + side] = 220
            if kind == "ring":
                canvas[y + 3 : y + side - 3, x + 3 : x + side - 3] = 20
            boxes.append((kind, [float(x), float(y), float(side), float(side)]))
        buffer = io.BytesIO()
        Image.fromarray(canvas.clip(0, 255).astype(np.uint8), mode="L").save(buffer, "PNG")
        split = "val" if i % 5 == 4 else "train"
        out.append(BoxedImage(f"img-{i:04d}", buffer.getvalue(), size, size, boxes, split))
    return out


def write_boxed_version(tmp_path: Path, images: list[BoxedImage]) -> DataRef:
    """Store the images and a manifest of their boxes; a DataRef with its own cache dir."""
    store_url = f"file://{tmp_path / 'store'}"

    async def write() -> None:
        store = open_store(store_url)
        items = []
        for image in images:
            ref = await store.put_blob(image.png)
            labels: list[BoxLabel | ClassLabel] = [
                BoxLabel(label=name, bbox=box) for name, box in image.boxes
            ]
            items.append(
                ManifestItem(
                    item_id=image.item_id,
                    blob=ref.sha256,
                    media_type="image/png",
                    size_bytes=ref.size,
                    width=image.width,
                    height=image.height,
                    split=image.split,  # type: ignore[arg-type]
                    labels=[*labels, *image.extra_labels],
                )
            )
        await store.put(MANIFEST_KEY, b"".join(dump_jsonl(items)))

    asyncio.run(write())
    return DataRef(store_url, MANIFEST_KEY, cache_dir=str(tmp_path / "cache"))
