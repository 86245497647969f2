"""Serving: ``:predict`` and the Open Inference Protocol's ``/v2/models/…/infer`` (``oip_*``
figures) through Kiln (real HTTP to ``kiln serve serving`` under uvicorn, with
``kiln consume serving`` for promotions) against calling Triton directly with tritonclient on
the same loaded model, in the same run (a classifier, then a detector: ``detection_*`` figures,
see ``bench/serving_detection.py``); and seconds from a promotion event to the first
prediction answered by the new version.

Latency is measured one request at a time (the overhead Kiln adds to each call); throughput
with concurrent callers. Both sides use a compiled-core client: tritonclient's gRPC (C core)
directly, aiohttp (C HTTP parser) through Kiln — httpx, pure Python, alone costs ~2 ms and
caps near 250 req/s on this box, so it measured the client rather than Kiln
(``--client httpx`` still runs it that way). Uses the local stack (``kiln infra up``) and its
shared Triton; the bench's schema, topics and models are removed afterwards.
Alongside req/s it reports CPU per request of each process (client, Kiln, Triton with its
Python-backend stub processes) during the throughput rounds and the direct/Kiln ratio of their
sums (``cpu_per_request_ratio``: what a two-core box with nothing else running would give, far
less swayed by other load than req/s are); how busy the whole machine was during each side's
rounds (``*_box_busy``, 1.0 = every core); the requests Kiln answers per Triton call; and the
1-minute load average at the end.
Last line: one JSON object.

    .venv/bin/python bench/serving.py [--requests 1000] [--concurrency 16] [--seconds 12]
        [--client aiohttp|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np

from kiln_client import ApiError, AsyncKiln, ClientSettings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serving_detection import detection_figures  # noqa: E402
from kiln_core.catalog import (  # noqa: E402
    ModelArtifact,
    ModelSignature,
    ModelVersionPromoted,
    Preprocessing,
    TensorSpec,
)
from kiln_core.events import new_event  # noqa: E402
from kiln_core.settings import Settings  # noqa: E402

PG_URL = "postgresql+asyncpg://kiln:kiln@127.0.0.1:55432/kiln"
KAFKA_URL = "kafka://127.0.0.1:59092"
S3_URL = "s3://kiln:kilnkilnkiln@127.0.0.1:59000/kiln?secure=false"
TRITON = "127.0.0.1:58001"
LABELS = ["a", "b", "c"]
ROW = [0.1, 0.2, 0.3, 0.4]


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far; 0 if unknown."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU time of each process and all its descendants still running (Triton runs each
    Python-backend model instance in a stub process of its own, whose CPU its own count
    omits); None stands for this process. One pass over /proc for all of them."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(proc.name))
    out: dict[str, float] = {}
    for name, pid in pids.items():
        if pid is None:
            out[name] = cpu_seconds(None)
            continue
        total, todo = 0.0, [pid]
        while todo:
            current = todo.pop()
            total += cpu_seconds(current)
            todo.extend(children.get(current, []))
        out[name] = total
    return out


def box_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def triton_pid() -> int | None:
    """The shared tritonserver's pid (the one listening on the bench's gRPC port)."""
    port = TRITON.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"tritonserver") and f"--grpc-port={port}".encode() in cmd:
            return int(proc.name)
    return None


async def shared_calls(session: aiohttp.ClientSession, base: str) -> float:
    """Triton calls Kiln has made for predict requests so far (from its /metrics)."""
    async with session.get(base + "/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("kiln_serving_requests_per_triton_call_count"):
            return float(line.split()[-1])
    return 0.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_model(favour: int) -> bytes:
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            with torch.no_grad():
                self.linear.bias[favour] += 3.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x)

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tiny()), buf)
    return buf.getvalue()


async def promote(settings: Settings, model: str, version: int) -> None:
    """Store an artifact and publish the registry's promotion event."""
    from kiln_core.bus import open_bus
    from kiln_core.storage import open_store

    data = tiny_model(version % 3)
    key = f"bench/{model}/{version}.pt"
    store = open_store(settings.storage_url)
    await store.put(key, data)
    event = new_event(
        ModelVersionPromoted(
            model_name=model,
            version=version,
            version_id=f"{model}-{version}",
            alias="production",
            artifact=ModelArtifact(
                uri=store.uri(key),
                key=key,
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                signature=ModelSignature(
                    inputs=[TensorSpec(name="features", dtype="FP32", shape=[4])],
                    outputs=[TensorSpec(name="logits", dtype="FP32", shape=[3])],
                ),
                label_map=LABELS,
                preprocessing=Preprocessing(kind="tabular"),
            ),
        ),
        subject=model,
    )
    bus = open_bus(settings.bus_url)
    await bus.start()
    try:
        await bus.publish(event.topic, event.to_bytes(), event.key.encode())
    finally:
        await bus.stop()


async def until_version(kiln: AsyncKiln, endpoint: str, version: int, limit_s: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        try:
            if (await kiln.serving.predict_many(endpoint, [ROW]))["version"] == version:
                return time.perf_counter() - started
        except ApiError:
            pass  # no version deployed yet (503)
        await asyncio.sleep(0.02)
    raise TimeoutError(f"version {version} not served within {limit_s}s")


async def kiln_call(client: httpx.AsyncClient, path: str) -> None:
    r = await client.post(path, json={"inputs": [ROW]})
    if r.status_code != 200:
        raise RuntimeError(f"predict failed: {r.status_code} {r.text[:200]}")


async def kiln_call_aiohttp(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    headers = {"content-type": "application/json"}
    async with session.post(url, data=body, headers=headers) as r:
        payload = await r.read()
        if r.status != 200:
            raise RuntimeError(f"predict failed: {r.status} {payload[:200]!r}")


async def latencies(call: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def throughput(
    call: Any, concurrency: int, seconds: float, cpu: dict[str, float], pids: dict[str, int | None]
) -> float:
    """Requests per second with ``concurrency`` callers; adds each process's CPU seconds
    spent meanwhile to ``cpu`` (and the request count under ``requests``)."""
    done = 0
    before = tree_cpu_seconds(pids)
    box_before = box_busy_seconds()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    after = tree_cpu_seconds(pids)
    for name in pids:
        cpu[name] = cpu.get(name, 0.0) + after[name] - before[name]
    box_after = box_busy_seconds()
    cpu["box_busy"] = cpu.get("box_busy", 0.0) + box_after[0] - box_before[0]
    cpu["box_total"] = cpu.get("box_total", 0.0) + box_after[1] - box_before[1]
    cpu["requests"] = cpu.get("requests", 0.0) + done
    return done / elapsed


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import tritonclient.grpc.aio as grpcclient
    from tritonclient.grpc import InferInput, InferRequestedOutput

    tag = f"b{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=PG_URL,
        db_schema_prefix=f"{tag}_",
        bus_url=f"{KAFKA_URL}?namespace={tag}",
        storage_url=S3_URL,
        triton_url=f"grpc://{TRITON}",
    )
    port = free_port()
    env = {
        **os.environ,
        "KILN_DATABASE_URL": settings.database_url,
        "KILN_DB_SCHEMA_PREFIX": settings.db_schema_prefix,
        "KILN_BUS_URL": settings.bus_url,
        "KILN_STORAGE_URL": settings.storage_url,
        "KILN_TRITON_URL": settings.triton_url,
        "KILN_LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "kiln_cli.main"]
    api = subprocess.Popen([*cli, "serve", "serving", "--port", str(port)], env=env)
    consumer = subprocess.Popen([*cli, "consume", "serving"], env=env)
    endpoint, model = f"bench-{tag}", f"bench-{tag}"
    path = f"/v1/endpoints/{endpoint}:predict"
    triton = grpcclient.InferenceServerClient(TRITON)
    result: dict[str, Any] = {"client": args.client}
    base = f"http://127.0.0.1:{port}"
    kserve: Any = None
    try:
        limits = httpx.Limits(max_connections=args.concurrency * 2)
        # Idle connections retire before uvicorn's 5 s keep-alive closes them under our feet.
        connector = aiohttp.TCPConnector(limit=args.concurrency * 2, keepalive_timeout=2)
        # The API calls around the measurement go through kiln_client; one attempt each, so
        # polling for a version is not slowed by the client's retry backoff.
        settings_client = ClientSettings(service_urls={"serving": base}, timeout_s=60, attempts=1)
        async with (
            AsyncKiln(settings=settings_client) as kiln_api,
            httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client,
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=60)
            ) as session,
        ):
            for _ in range(600):
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            await kiln_api.serving.create_endpoint(
                endpoint,
                model,
                exist_ok=False,
                max_batch_size=64,
                instance_count=args.instances,
            )
            await promote(settings, model, 1)
            first = await until_version(kiln_api, endpoint, 1, 180)
            print(f"first version serving {first:.1f}s after its promotion", file=sys.stderr)
            state = await kiln_api.serving.endpoint(endpoint)
            triton_model = (state.get("stable") or {})["triton_model"]
            outputs = [InferRequestedOutput("probabilities")]
            row = np.asarray([ROW], dtype=np.float32)

            kserve = await start_kserve(triton_model, tag)
            kserve_url = f"{kserve.url}/v1/models/{endpoint}:predict"
            kserve_body = json.dumps({"instances": [ROW]}).encode()

            async def kserve_call() -> None:
                await kiln_call_aiohttp(session, kserve_url, kserve_body)

            async def direct() -> None:
                tensor = InferInput("features", [1, 4], "FP32")
                tensor.set_data_from_numpy(row)
                await triton.infer(triton_model, [tensor], outputs=outputs)

            body = json.dumps({"inputs": [ROW]}).encode()

            async def kiln() -> None:
                if args.client == "httpx":
                    await kiln_call(client, path)
                else:
                    await kiln_call_aiohttp(session, base + path, body)

            # The same model and row through the Open Inference Protocol's route.
            v2_path = f"/v2/models/{endpoint}/infer"
            v2_body = json.dumps(
                {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": ROW}]}
            ).encode()

            async def oip() -> None:
                if args.client == "httpx":
                    r = await client.post(v2_path, content=v2_body)
                    if r.status_code != 200:
                        raise RuntimeError(f"v2 infer failed: {r.status_code} {r.text[:200]}")
                else:
                    await kiln_call_aiohttp(session, base + v2_path, v2_body)

            await latencies(direct, 100)  # warm every path
            await latencies(kiln, 100)
            await latencies(oip, 100)
            await latencies(kserve_call, 100)
            lat_direct: list[float] = []
            lat_kiln: list[float] = []
            lat_oip: list[float] = []
            lat_kserve: list[float] = []
            for _ in range(10):  # interleaved chunks: all see the same background load
                lat_direct += await latencies(direct, args.requests // 10)
                lat_kiln += await latencies(kiln, args.requests // 10)
                lat_oip += await latencies(oip, args.requests // 10)
                lat_kserve += await latencies(kserve_call, args.requests // 10)

            async def healthz() -> None:
                if args.client == "httpx":
                    await client.get("/healthz")
                else:
                    async with session.get(base + "/healthz") as r:
                        await r.read()

            # The floor of any call through this HTTP stack (uvicorn, middleware, client).
            lat_healthz = await latencies(healthz, args.requests // 2)
            result["http_floor_p50_ms"] = round(percentile(lat_healthz, 50), 3)
            print(f"GET /healthz p50 {result['http_floor_p50_ms']:.2f} ms", file=sys.stderr)
            # Alternating rounds, like the latencies: a burst of load from elsewhere on the box
            # lands on both sides instead of deciding the ratio.
            # Six rounds of 2 s per side by default: with three of 1.7 s the ratio of one run
            # wandered by ±0.04 around that of the next on this box.
            rounds = 6
            tput_direct = tput_kiln = tput_oip = 0.0
            # CPU per request of each process: what decides throughput on a box that is full.
            pids = {"client": None, "kiln": api.pid, "triton": triton_pid()}
            kserve_pids = {**pids, "kiln": kserve.popen.pid if kserve.popen else None}
            cpu_kserve: dict[str, float] = {}
            tput_kserve = 0.0
            cpu_direct: dict[str, float] = {}
            cpu_kiln: dict[str, float] = {}
            cpu_oip: dict[str, float] = {}
            span = args.seconds / rounds
            calls_before = await shared_calls(session, base)
            for _ in range(rounds):
                tput_direct += await throughput(direct, args.concurrency, span, cpu_direct, pids)
                tput_kiln += await throughput(kiln, args.concurrency, span, cpu_kiln, pids)
                tput_oip += await throughput(oip, args.concurrency, span, cpu_oip, pids)
                tput_kserve += await throughput(
                    kserve_call, args.concurrency, span, cpu_kserve, kserve_pids
                )
            tput_direct, tput_kiln = tput_direct / rounds, tput_kiln / rounds
            tput_oip /= rounds
            tput_kserve /= rounds
            kserve.stop()
            result["kserve_version"] = kserve_version()
            result["kserve_p50_ms"] = round(percentile(lat_kserve, 50), 3)
            result["kserve_p99_ms"] = round(percentile(lat_kserve, 99), 3)
            result["kserve_throughput"] = round(tput_kserve, 1)
            us = (cpu_kserve["kiln"]) / max(cpu_kserve["requests"], 1) * 1e6
            result["kserve_cpu_us_per_req_server"] = round(us, 1)
            calls = await shared_calls(session, base) - calls_before
            answered = cpu_kiln["requests"] + cpu_oip["requests"]
            result["kiln_requests_per_triton_call"] = round(answered / max(calls, 1), 2)
            for side, cpu in (("direct", cpu_direct), ("kiln", cpu_kiln), ("oip", cpu_oip)):
                for name in ("client", "kiln", "triton"):
                    if name == "kiln" and side == "direct":
                        continue
                    us = cpu[name] / max(cpu["requests"], 1) * 1e6
                    result[f"{side}_cpu_us_per_req_{name}"] = round(us, 1)
            print(
                "CPU µs per request  direct: client {direct_cpu_us_per_req_client} triton "
                "{direct_cpu_us_per_req_triton}  kiln: client {kiln_cpu_us_per_req_client} "
                "kiln {kiln_cpu_us_per_req_kiln} triton {kiln_cpu_us_per_req_triton}; "
                "{kiln_requests_per_triton_call} requests per Kiln→Triton call".format(**result),
                file=sys.stderr,
            )
            # Direct CPU per request over Kiln's (client + Kiln + Triton): the throughput ratio
            # a full two-core box would give, less swayed by other load than req/s are.
            cpu_total = {
                side: sum(v for k, v in result.items() if k.startswith(f"{side}_cpu_us_per_req_"))
                for side in ("direct", "kiln", "oip")
            }
            result["cpu_per_request_ratio"] = round(cpu_total["direct"] / cpu_total["kiln"], 3)
            result["oip_cpu_per_request_ratio"] = round(cpu_total["direct"] / cpu_total["oip"], 3)
            # How full the whole machine was during each side's rounds (1.0 = every core busy).
            for side, cpu in (("direct", cpu_direct), ("kiln", cpu_kiln), ("oip", cpu_oip)):
                result[f"{side}_box_busy"] = round(cpu["box_busy"] / max(cpu["box_total"], 1e-9), 3)
            result["load_average_1m"] = round(os.getloadavg()[0], 2)
            for name, values, tput in (
                ("direct", lat_direct, tput_direct),
                ("kiln", lat_kiln, tput_kiln),
                ("oip", lat_oip, tput_oip),
            ):
                result[f"{name}_p50_ms"] = round(percentile(values, 50), 3)
                result[f"{name}_p99_ms"] = round(percentile(values, 99), 3)
                result[f"{name}_rps"] = round(tput, 1)
                print(
                    f"{name:7s} p50 {result[f'{name}_p50_ms']:.2f} ms  "
                    f"p99 {result[f'{name}_p99_ms']:.2f} ms  {tput:.0f} req/s "
                    f"(concurrency {args.concurrency})",
                    file=sys.stderr,
                )

            started = time.perf_counter()
            await promote(settings, model, 2)
            await until_version(kiln_api, endpoint, 2, 180)
            promote_to_serve = time.perf_counter() - started
            print(f"promotion → first v2 answer {promote_to_serve:.2f}s", file=sys.stderr)
            state = await kiln_api.serving.endpoint(endpoint)
            result["load_seconds"] = (state.get("stable") or {})["load_seconds"]
            await kiln_api.serving.delete_endpoint(endpoint)
            result.update(
                await detection_figures(
                    settings,
                    tag,
                    kiln_api,
                    session,
                    base,
                    triton,
                    args.requests // 2,
                    args.concurrency,
                    args.seconds / 2,
                    latencies,
                    throughput,
                    percentile,
                )
            )
            await asyncio.sleep(2.5)  # the controller drains and unloads
        result["p50_overhead_ms"] = round(result["kiln_p50_ms"] - result["direct_p50_ms"], 3)
        result["throughput_ratio"] = round(result["kiln_rps"] / result["direct_rps"], 3)
        # The Open Inference Protocol's /v2/…/infer beside :predict, against the same direct.
        result["oip_p50_overhead_ms"] = round(result["oip_p50_ms"] - result["direct_p50_ms"], 3)
        result["oip_throughput_ratio"] = round(result["oip_rps"] / result["direct_rps"], 3)
        result["promote_to_serve_s"] = round(promote_to_serve, 3)
        # :predict through Kiln against the same model through a KServe transformer.
        result["kserve_ratio"] = round(result["kiln_rps"] / result["kserve_throughput"], 3)
        return result
    finally:
        if kserve is not None:
            kserve.stop()
        for proc in (api, consumer):
            proc.send_signal(signal.SIGTERM)
        for proc in (api, consumer):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await cleanup(settings, tag, triton)
        await triton.close()


def kserve_python() -> Path:
    from bench.peers import install_peer

    return install_peer("install_peer_kserve.sh")


def kserve_version() -> str:
    from bench.peers import peer_version

    return peer_version(kserve_python(), "kserve")


async def start_kserve(triton_model: str, tag: str) -> Any:
    """A KServe transformer (its ModelServer, default settings: one worker) whose predictor is
    the shared Triton over v2 gRPC; fails loudly if it cannot start."""
    from bench.peers import Server

    python = await asyncio.to_thread(kserve_python)
    port = free_port()
    server = Server(
        "kserve",
        [
            str(python),
            str(REPO / "bench" / "kserve_transformer.py"),
            "--model_name",
            f"bench-{tag}",
            "--triton_model",
            triton_model,
            "--labels",
            ",".join(LABELS),
            "--predictor_host",
            TRITON,
            "--predictor_protocol",
            "grpc-v2",
            "--http_port",
            str(port),
        ],
        {**os.environ, "PYTHONPATH": ""},
        REPO / ".kiln" / "bench" / f"kserve-{tag}.log",
        port,
    )
    server.start()
    await server.wait_ready(f"/v1/models/bench-{tag}", 120)
    print(f"kserve transformer ready on :{port}", file=sys.stderr)
    return server


async def cleanup(settings: Settings, tag: str, triton: Any) -> None:
    from sqlalchemy import text

    from kiln_core.db import Database
    from tests.conftest import delete_namespace_topics

    db = Database(settings.database_url, schema="public")
    async with db.engine.begin() as conn:
        rows = await conn.execute(
            text(f'SELECT triton_model FROM "{tag}_serving".deployments')  # noqa: S608
        )
        for (name,) in rows:
            try:
                await triton.unload_model(name)
            except Exception:  # noqa: BLE001, S110 - already unloaded
                pass
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{tag}_serving" CASCADE'))
    await db.dispose()
    await delete_namespace_topics(KAFKA_URL, tag)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--seconds", type=float, default=12.0, help="throughput time per side, over 6 rounds"
    )
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp")
    parser.add_argument(
        "--instances", type=int, default=1, help="model instances in Triton (both sides use them)"
    )
    figures = asyncio.run(main(parser.parse_args()))
    print(json.dumps(figures))
