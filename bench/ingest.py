"""Ingest throughput on the real stack (``kiln infra up``).

1. Upload: images/s through the dataset service's upload API (a real ``kiln serve dataset``
   process on PostgreSQL + MinIO + Kafka, multipart over loopback HTTP) against raw ``minio``
   client puts of the same files, same concurrency, in the same run. Target ratio >= 0.7.
2. Loader: images/s through kiln_data's VersionDataset/DataLoader from the object store (cache
   warm) against a plain torch Dataset reading the same files from local disk. Target >= 0.8.

Prints progress, then one JSON object on the last line with ``upload_ratio`` and
``loader_ratio``.

    .venv/bin/python bench/ingest.py [--images 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from kiln_client import AsyncKiln, ClientSettings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PG_URL = "postgresql+asyncpg://kiln:kiln@127.0.0.1:55432/kiln"
KAFKA_URL = "kafka://127.0.0.1:59092"
S3_URL = "s3://kiln:kilnkilnkiln@127.0.0.1:59000/kiln?secure=false"
CONCURRENCY = 8
BATCH = 50


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_images(n: int, seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        pixels = rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        out[f"img{i:05}.jpg"] = buf.getvalue()
    return out


def raw_minio_puts(images: dict[str, bytes], prefix: str) -> float:
    """Baseline: the same files straight into MinIO with the minio client, same concurrency."""
    from minio import Minio

    client = Minio("127.0.0.1:59000", access_key="kiln", secret_key="kilnkilnkiln", secure=False)

    def put(item: tuple[str, bytes]) -> None:
        name, data = item
        client.put_object(
            "kiln", f"{prefix}/{name}", io.BytesIO(data), len(data), content_type="image/jpeg"
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(put, images.items()))
    elapsed = time.perf_counter() - started
    with ThreadPoolExecutor(CONCURRENCY) as pool:  # tidy up
        list(pool.map(lambda n: client.remove_object("kiln", f"{prefix}/{n}"), images))
    return len(images) / elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def api_uploads(images: dict[str, bytes], schema_prefix: str) -> float:
    port = free_port()
    env = {
        **os.environ,
        "KILN_DATABASE_URL": PG_URL,
        "KILN_DB_SCHEMA_PREFIX": schema_prefix,
        "KILN_BUS_URL": f"{KAFKA_URL}?namespace={schema_prefix}",
        "KILN_STORAGE_URL": S3_URL,
        "KILN_LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "kiln_cli.main", "serve", "dataset", "--port", str(port)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    settings = ClientSettings(service_urls={"dataset": base}, timeout_s=120)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as probe:
            for _ in range(300):
                try:
                    if (await probe.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        async with AsyncKiln(settings=settings) as kiln:
            ds = (await kiln.datasets.create(f"bench-{schema_prefix}"))["id"]
            draft = await kiln.datasets.open_draft(ds)
            started = time.perf_counter()
            # Requests in flight x files checked at once per request ~ the raw put concurrency;
            # every byte is sent (the figure is upload throughput, not what a resume skips).
            sent, _, rejected = await kiln.datasets.add_files(
                ds,
                draft,
                list(images.items()),
                progress=False,
                skip_stored=False,
                concurrency=max(1, CONCURRENCY // 4),
                batch_files=BATCH,
            )
            elapsed = time.perf_counter() - started
            assert sent == len(images) and not rejected, rejected[:3]
            committed = await kiln.datasets.commit(ds, draft)
            assert committed["item_count"] == len(images)
            return len(images) / elapsed
    finally:
        server.terminate()
        server.wait(10)
        await drop_schema(f"{schema_prefix}dataset")


async def drop_schema(schema: str) -> None:
    from sqlalchemy import text

    from kiln_core.db import Database

    db = Database(PG_URL, schema="public")
    async with db.engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    await db.dispose()


async def main(n: int) -> dict[str, Any]:
    result: dict[str, Any] = {"images": n}
    run = uuid.uuid4().hex[:8]
    log(f"making {n} 128x128 JPEG images")
    images = make_images(n, seed=int(run, 16))
    result["mean_image_bytes"] = round(sum(map(len, images.values())) / n)
    log("raw minio puts")
    raw = await asyncio.to_thread(raw_minio_puts, images, f"bench-raw/{run}")
    log(f"  {raw:.1f} images/s")
    log("upload API (kiln serve dataset: PostgreSQL + MinIO + Kafka)")
    api = await api_uploads(images, f"bench{run}_")
    log(f"  {api:.1f} images/s")
    result.update(
        {
            "raw_put_images_per_s": round(raw, 1),
            "upload_images_per_s": round(api, 1),
            "upload_ratio": round(api / raw, 3),
            "upload_target": 0.7,
        }
    )
    log("loader: VersionDataset from MinIO (cache warm) vs local files")
    from bench.loader import loader_throughput

    loader = await loader_throughput(S3_URL, n)
    result.update(loader)
    result["loader_target"] = 0.8
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="dataset ingest and loader throughput")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    if args.images < 10:
        parser.error("--images must be at least 10")
    print(json.dumps(asyncio.run(main(args.images))))
