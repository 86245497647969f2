"""run_training reading a version from real MinIO into a cold local cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kiln_core.manifest import ClassLabel, ManifestItem, dump_jsonl
from kiln_core.storage import open_store
from kiln_data import BlobCache
from kiln_training.templates import get_template, validate_params
from kiln_training.trainer import DataRef, RunSpec, run_training
from tests.unit.training.synthetic import ScriptedControl, texts

pytestmark = pytest.mark.integration


async def test_a_text_model_trains_from_a_version_in_minio(
    s3_url: str, unique: str, tmp_path: Path
) -> None:
    store = open_store(s3_url)
    await store.check()
    items = []
    for sample in texts(60, seed=len(unique)):
        # A per-test word keeps the blobs new, so the cache really starts cold.
        ref = await store.put_blob(sample.raw + f" {unique}".encode())
        items.append(
            ManifestItem(
                item_id=f"{unique}-{sample.item_id}",
                blob=ref.sha256,
                media_type="text/plain",
                size_bytes=ref.size,
                split=sample.split,  # type: ignore[arg-type]
                labels=[ClassLabel(label=sample.label)],
            )
        )
    key = f"test-{unique}/manifest.jsonl"
    await store.put(key, b"".join(dump_jsonl(items)))
    cache = tmp_path / "cache"
    spec = RunSpec(
        template="text-embeddingbag",
        params=validate_params(
            get_template("text-embeddingbag"), {"epochs": 15, "batch_size": 8, "buckets": 512}
        ),
        seed=1,
        data=DataRef(storage_url=s3_url, manifest_key=key, cache_dir=str(cache)),
    )
    try:
        control = ScriptedControl()
        outcome = await asyncio.to_thread(run_training, spec, control)
        assert outcome.status == "succeeded"
        assert outcome.metrics["accuracy"] >= 0.9
        assert outcome.evaluation is not None and outcome.evaluation.support == 12
        assert all(BlobCache(cache).contains(item.blob) for item in items)
        assert control.saved_steps  # checkpoints were handed to the control
    finally:
        await store.delete(key)
