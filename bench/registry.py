"""Registry: Kiln's model registry against MLflow's, 16 concurrent clients, same operations.

Each client loops for ``--seconds``: register a new version of a model from an artifact
already in the store, point an alias of its own at that version, resolve the alias. Every call
counts as one operation; the same client (aiohttp) and machine for both:

* **Kiln**: the registry service as ``kiln up`` runs it (API and event process, real
  processes) on the shared PostgreSQL/Kafka/MinIO. A version is registered with ``POST
  /v1/models/{name}/versions`` carrying the TorchScript file the registry already stores
  (content-addressed, so the bytes land on the same object), then ``POST
  /v1/models/{name}/aliases/{alias}`` and ``GET /v1/models/{name}/aliases``.
* **MLflow** (``tools/install_peer_mlflow.sh``, pinned, own virtualenv): ``mlflow server``
  with its backend store on the same PostgreSQL in a database of its own and its artifacts on
  the same MinIO (``--artifacts-destination s3://…``), its default server and workers. The
  model file is put once in its artifact bucket; a version is ``model-versions/create`` with
  that ``source``, then ``registered-models/alias`` (POST) and ``registered-models/alias``
  (GET), its REST API as its clients call it.

Figures: ``registry_ops_per_s``, ``registry_p50_ms``/``registry_p99_ms`` (and per operation),
``mlflow_ops_per_s``, ``mlflow_p50_ms``/``mlflow_p99_ms``, ``registry_ratio`` = Kiln / MLflow
operations per second, ``mlflow_version``. Last line: one JSON object.

    .venv/bin/python bench/registry.py [--clients 16] [--seconds 20] [--side both|kiln|mlflow]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.peers import (  # noqa: E402
    MINIO,
    PG_HOST,
    PG_PASSWORD,
    PG_PORT,
    PG_USER,
    KilnServices,
    PeerFailed,
    Server,
    Timings,
    drive,
    ensure_bucket,
    ensure_database,
    free_port,
    install_peer,
    log,
    peer_version,
    percentile,
    timed,
)
from bench.soak import FEATURES, tabular_model  # noqa: E402

MLFLOW_DATABASE = "kiln_peer_mlflow"
MLFLOW_BUCKET = "kiln-peer-mlflow"
META = {
    "signature": {
        "inputs": [{"name": "features", "dtype": "FP32", "shape": [FEATURES]}],
        "outputs": [{"name": "logits", "dtype": "FP32", "shape": [3]}],
    },
    "label_map": ["red", "green", "blue"],
    "preprocessing": {"kind": "tabular"},
    "metrics": {"accuracy": 0.9},
}

Op = Callable[[aiohttp.ClientSession, int], Awaitable[None]]


async def loop_ops(
    clients: int, seconds: float, steps: Sequence[tuple[str, Op]]
) -> tuple[Timings, float, int]:
    """``clients`` loops of the steps (in order) until ``seconds`` pass; (timings, s, ops)."""
    timings = Timings()
    ops = [0]
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(i: int) -> None:
            while time.monotonic() < deadline:
                for name, step in steps:
                    await timed(timings, name, lambda step=step: step(session, i))  # type: ignore[misc]
                    ops[0] += 1

        elapsed = await drive(clients, client)
    return timings, elapsed, ops[0]


def summary(prefix: str, timings: Timings, elapsed: float, ops: int) -> dict[str, Any]:
    every = [v for values in timings.ops.values() for v in values]
    out: dict[str, Any] = {
        f"{prefix}_ops_per_s": round(ops / elapsed, 1),
        f"{prefix}_p50_ms": round(percentile(every, 50) * 1000, 2),
        f"{prefix}_p99_ms": round(percentile(every, 99) * 1000, 2),
    }
    for name in timings.ops:
        out[f"{prefix}_{name}_p50_ms"] = timings.ms(name, 50)
        out[f"{prefix}_{name}_p99_ms"] = timings.ms(name, 99)
    return out


async def expect(response: aiohttp.ClientResponse, ok: int, what: str) -> Any:
    if response.status != ok:
        raise PeerFailed(f"{what}: {response.status} {(await response.text())[:500]}")
    return await response.json()


# --- Kiln ----------------------------------------------------------------------------------------


async def kiln_side(args: argparse.Namespace) -> dict[str, Any]:
    from kiln_client import AsyncKiln, ClientSettings
    from kiln_core.auth import issue_token
    from kiln_core.settings import Settings

    run = uuid.uuid4().hex[:8]
    stack = KilnServices(run, args.redis_db, REPO / ".kiln" / "bench" / f"registry-{run}")
    stack.services = ("registry",)
    log(f"kiln: starting the registry service (logs in {stack.log_dir})")
    stack.start()
    try:
        await stack.wait_ready(180)
        base = f"http://127.0.0.1:{stack.ports['registry']}"
        token = issue_token("bench", ["admin"], Settings(), teams=[Settings().default_team])
        headers = {"authorization": f"Bearer {token}"}
        model = f"bench-{run}"
        raw = await asyncio.to_thread(tabular_model)
        settings = ClientSettings(url=base, token=token, service_urls={"registry": base})
        async with AsyncKiln(settings=settings) as k:
            await k.registry.create_model(model)
            # The artifact is in the registry's store before the clock starts.
            await k.registry.import_model(model, raw, META)
        latest: dict[int, int] = {}

        async def register(session: aiohttp.ClientSession, i: int) -> None:
            form = aiohttp.FormData()
            form.add_field("file", raw, filename="model.pt")
            form.add_field("metadata", json.dumps(META))
            url = f"{base}/v1/models/{model}/versions"
            async with session.post(url, data=form, headers=headers) as r:
                latest[i] = int((await expect(r, 201, "kiln register"))["version"])

        async def set_alias(session: aiohttp.ClientSession, i: int) -> None:
            url = f"{base}/v1/models/{model}/aliases/c{i}"
            async with session.post(url, json={"version": latest[i]}, headers=headers) as r:
                await expect(r, 200, "kiln alias")

        async def resolve(session: aiohttp.ClientSession, i: int) -> None:
            async with session.get(f"{base}/v1/models/{model}/aliases", headers=headers) as r:
                aliases = await expect(r, 200, "kiln resolve")
            if {a["alias"]: a["version"] for a in aliases}.get(f"c{i}") != latest[i]:
                raise PeerFailed(f"kiln: alias c{i} does not resolve to {latest[i]}")

        log(f"kiln: {args.clients} clients for {args.seconds:.0f}s")
        steps = [("register", register), ("alias", set_alias), ("resolve", resolve)]
        timings, elapsed, ops = await loop_ops(args.clients, args.seconds, steps)
        return summary("registry", timings, elapsed, ops)
    finally:
        stack.stop()
        await stack.clean_up()


# --- MLflow --------------------------------------------------------------------------------------


async def mlflow_side(args: argparse.Namespace) -> dict[str, Any]:
    python = install_peer("install_peer_mlflow.sh")
    version = peer_version(python, "mlflow")
    await ensure_database(MLFLOW_DATABASE)
    await asyncio.to_thread(ensure_bucket, MLFLOW_BUCKET)
    run = uuid.uuid4().hex[:8]
    key = f"bench/{run}/model.pt"
    raw = await asyncio.to_thread(tabular_model)
    await asyncio.to_thread(put_object, MLFLOW_BUCKET, key, raw)
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_S3_ENDPOINT_URL": f"http://{MINIO[0]}",
        "AWS_ACCESS_KEY_ID": MINIO[1],
        "AWS_SECRET_ACCESS_KEY": MINIO[2],
    }
    database = (
        f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{MLFLOW_DATABASE}"
    )
    server = Server(
        "mlflow",
        [
            str(python.parent / "mlflow"),
            "server",
            "--backend-store-uri",
            database,
            "--artifacts-destination",
            f"s3://{MLFLOW_BUCKET}/artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
        REPO / ".kiln" / "bench" / f"mlflow-{run}.log",
        port,
    )
    log(f"mlflow {version}: server on :{port} (database {MLFLOW_DATABASE})")
    server.start()
    try:
        await server.wait_ready("/health", 300)
        api = f"{server.url}/api/2.0/mlflow"
        model = f"bench-{run}"
        source = f"s3://{MLFLOW_BUCKET}/{key}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{api}/registered-models/create", json={"name": model}) as r:
                await expect(r, 200, "mlflow create model")
        latest: dict[int, str] = {}

        async def register(session: aiohttp.ClientSession, i: int) -> None:
            body = {"name": model, "source": source}
            async with session.post(f"{api}/model-versions/create", json=body) as r:
                latest[i] = str(
                    (await expect(r, 200, "mlflow register"))["model_version"]["version"]
                )

        async def set_alias(session: aiohttp.ClientSession, i: int) -> None:
            body = {"name": model, "alias": f"c{i}", "version": latest[i]}
            async with session.post(f"{api}/registered-models/alias", json=body) as r:
                await expect(r, 200, "mlflow alias")

        async def resolve(session: aiohttp.ClientSession, i: int) -> None:
            params = {"name": model, "alias": f"c{i}"}
            async with session.get(f"{api}/registered-models/alias", params=params) as r:
                found = (await expect(r, 200, "mlflow resolve"))["model_version"]["version"]
            if str(found) != latest[i]:
                raise PeerFailed(f"mlflow: alias c{i} resolves to {found}, not {latest[i]}")

        log(f"mlflow: {args.clients} clients for {args.seconds:.0f}s")
        steps = [("register", register), ("alias", set_alias), ("resolve", resolve)]
        timings, elapsed, ops = await loop_ops(args.clients, args.seconds, steps)
        return {**summary("mlflow", timings, elapsed, ops), "mlflow_version": version}
    finally:
        server.stop()


def put_object(bucket: str, key: str, raw: bytes) -> None:
    import io

    from minio import Minio

    client = Minio(MINIO[0], access_key=MINIO[1], secret_key=MINIO[2], secure=False)
    client.put_object(bucket, key, io.BytesIO(raw), len(raw))


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"clients": args.clients, "seconds": args.seconds}
    if args.side in ("both", "kiln"):
        out.update(await kiln_side(args))
    if args.side in ("both", "mlflow"):
        out.update(await mlflow_side(args))
    if "registry_ops_per_s" in out and "mlflow_ops_per_s" in out:
        out["registry_ratio"] = round(out["registry_ops_per_s"] / out["mlflow_ops_per_s"], 3)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--side", choices=("both", "kiln", "mlflow"), default="both")
    parser.add_argument("--redis-db", type=int, default=12)
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse_args()))))
