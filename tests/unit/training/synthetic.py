"""Tiny synthetic dataset versions in a ``file://`` store, and a scripted RunControl."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from kiln_core.manifest import ClassLabel, ManifestItem, dump_jsonl
from kiln_core.storage import open_store
from kiln_training.trainer import DataRef, EpochProgress, StepProgress

MANIFEST_KEY = "datasets/d1/versions/1/manifest.jsonl"
WORDS = {
    "sport": ["goal", "match", "team", "score", "league", "coach"],
    "food": ["pasta", "bread", "cheese", "soup", "salad", "sauce"],
    "tech": ["chip", "code", "server", "cloud", "robot", "laptop"],
}


@dataclass
class Sample:
    item_id: str
    raw: bytes
    media_type: str
    label: str
    split: str | None


def digit_images(n: int, size: int = 8, classes: int = 4, seed: int = 0) -> list[Sample]:
    """Grey "digits": each class a fixed random 8×8 glyph, items the glyph plus noise."""
    rng = np.random.default_rng(seed)
    glyphs = rng.random((classes, size, size)) > 0.5
    samples = []
    for i in range(n):
        c = i % classes
        pixels = np.where(glyphs[c], 200, 40) + rng.integers(-30, 30, (size, size))
        out = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(out, "PNG")
        split = "val" if i % 5 == 4 else "train"
        samples.append(Sample(f"digit-{i:04d}", out.getvalue(), "image/png", f"d{c}", split))
    return samples


def colour_images(n: int, size: int = 8, seed: int = 0) -> list[Sample]:
    """RGB images whose dominant channel is the class."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        c = i % 3
        pixels = (rng.random((size, size, 3)) * 80).astype(np.uint8)
        pixels[:, :, c] += 150
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "PNG")
        split = "val" if i % 5 == 4 else "train"
        samples.append(Sample(f"img-{i:04d}", out.getvalue(), "image/png", "rgb"[c], split))
    return samples


def tabular_rows(n: int, seed: int = 0, splits: bool = True) -> list[Sample]:
    """Three Gaussian blobs in 4 features, half as JSON arrays and half as CSV lines."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 5, 10], [3, 3, 5, 10], [0, 3, 8, 10]], dtype=np.float64)
    samples = []
    for i in range(n):
        c = i % 3
        row = centres[c] + rng.normal(0, 0.5, 4) * np.array([1, 1, 1, 10])
        values = [round(float(v), 4) for v in row]
        if i % 2:
            raw, media = json.dumps(values).encode(), "application/json"
        else:
            raw, media = ",".join(str(v) for v in values).encode(), "text/csv"
        split = ("val" if i % 5 == 4 else "train") if splits else None
        samples.append(Sample(f"row-{i:04d}", raw, media, f"blob{c}", split))
    return samples


def texts(n: int, seed: int = 0) -> list[Sample]:
    """Short texts drawn from a per-topic vocabulary plus shared filler words."""
    rng = np.random.default_rng(seed)
    topics = sorted(WORDS)
    samples = []
    for i in range(n):
        topic = topics[i % len(topics)]
        words = list(rng.choice(WORDS[topic], 4)) + list(rng.choice(["the", "a", "and"], 2))
        rng.shuffle(words)
        text = " ".join(w.upper() if j == 0 else w for j, w in enumerate(words))
        split = "val" if i % 5 == 4 else "train"
        samples.append(Sample(f"text-{i:04d}", text.encode(), "text/plain", topic, split))
    return samples


def write_version(tmp_path: Path, samples: list[Sample]) -> DataRef:
    """Store the samples' blobs and a manifest; a DataRef to them with its own cache dir."""
    store_url = f"file://{tmp_path / 'store'}"

    async def write() -> None:
        store = open_store(store_url)
        items = []
        for s in samples:
            ref = await store.put_blob(s.raw)
            items.append(
                ManifestItem(
                    item_id=s.item_id,
                    blob=ref.sha256,
                    media_type=s.media_type,
                    size_bytes=ref.size,
                    split=s.split,  # type: ignore[arg-type]
                    labels=[ClassLabel(label=s.label)],
                )
            )
        await store.put(MANIFEST_KEY, b"".join(dump_jsonl(items)))

    asyncio.run(write())
    return DataRef(store_url, MANIFEST_KEY, cache_dir=str(tmp_path / "cache"))


@dataclass
class ScriptedControl:
    """A RunControl that records everything and pauses or cancels at a chosen step."""

    pause_at_step: int | None = None
    cancel_at_step: int | None = None
    checkpoint: bytes | None = None
    steps: list[StepProgress] = field(default_factory=list)
    epochs: list[EpochProgress] = field(default_factory=list)
    saved_steps: list[int] = field(default_factory=list)
    saved: dict[int, bytes] = field(default_factory=dict)

    def requested(self) -> Literal["pause", "cancel"] | None:
        done = self.steps[-1].step if self.steps else 0
        if self.cancel_at_step is not None and done >= self.cancel_at_step:
            return "cancel"
        if self.pause_at_step is not None and done >= self.pause_at_step:
            self.pause_at_step = None
            return "pause"
        return None

    def on_step(self, p: StepProgress) -> None:
        self.steps.append(p)

    def on_epoch(self, p: EpochProgress) -> None:
        self.epochs.append(p)

    def save_checkpoint(self, data: bytes, step: int) -> None:
        self.checkpoint = data
        self.saved_steps.append(step)
        self.saved[step] = data

    def load_checkpoint(self) -> bytes | None:
        return self.checkpoint
