"""The detection half of ``bench/serving.py``: a ``detection-fcos`` model promoted to its own
endpoint, ``:predict`` with one PNG (the demo's 64×64 digit canvases) through Kiln against the
same PNG sent straight to the same loaded Triton model (BYTES ``image`` in, ``detections``
out) with tritonclient's gRPC: latency one request at a time, in interleaved chunks, and
throughput with concurrent callers in alternating rounds, like the classifier's figures.

The detector is untrained (weights from a fixed seed, every box kept above score 0.05): what
it answers does not change what a call costs. Imported by ``bench/serving.py``, not run alone.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import numpy as np

from kiln_client import ApiError, AsyncKiln
from kiln_core.catalog import ModelArtifact, ModelVersionPromoted, Preprocessing
from kiln_core.events import new_event
from kiln_core.settings import Settings

LABELS = [str(d) for d in range(10)]
Call = Callable[[], Awaitable[None]]


def detector_artifact() -> bytes:
    """TorchScript of the demo's detector shape (64 px, grey), untrained, seed 0."""
    import torch

    from kiln_training.detection import ServableDetector, build_detector
    from kiln_training.templates import get_template, validate_params

    params = validate_params(get_template("detection-fcos"), {"input_size": 64, "image_mode": "L"})
    torch.manual_seed(0)
    model = build_detector(params, 1, len(LABELS), [0.15], [0.1]).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(ServableDetector(model)), buffer)
    return buffer.getvalue()


async def promote_detector(settings: Settings, model: str) -> None:
    from kiln_core.bus import open_bus
    from kiln_core.storage import open_store
    from kiln_training.detection import detector_signature

    data = detector_artifact()
    key = f"bench/{model}/1.pt"
    store = open_store(settings.storage_url)
    await store.put(key, data)
    event = new_event(
        ModelVersionPromoted(
            model_name=model,
            version=1,
            version_id=f"{model}-1",
            alias="production",
            artifact=ModelArtifact(
                uri=store.uri(key),
                key=key,
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                signature=detector_signature(1),
                label_map=LABELS,
                preprocessing=Preprocessing(kind="image", mode="L"),
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


def canvas_png() -> bytes:
    from kiln_cli.detection_data import make_canvases

    return make_canvases(1, seed=11, prefix="bench")[0].png


async def detection_figures(
    settings: Settings,
    tag: str,
    kiln_api: AsyncKiln,
    session: aiohttp.ClientSession,
    base: str,
    triton: Any,
    requests: int,
    concurrency: int,
    seconds: float,
    latencies: Callable[[Call, int], Awaitable[list[float]]],
    throughput: Callable[..., Awaitable[float]],
    percentile: Callable[[list[float], float], float],
) -> dict[str, Any]:
    """``detection_*`` figures; the endpoint is deleted before returning."""
    from tritonclient.grpc import InferInput, InferRequestedOutput

    endpoint = model = f"bench-det-{tag}"
    path = f"/v1/endpoints/{endpoint}:predict"
    await kiln_api.serving.create_endpoint(endpoint, model, exist_ok=False, max_batch_size=16)
    await promote_detector(settings, model)
    png = canvas_png()
    body = {"inputs": [base64.b64encode(png).decode()]}
    started = time.perf_counter()
    while True:
        try:
            await kiln_api.serving.predict_many(endpoint, [png])
            break
        except ApiError as exc:  # no version deployed yet (503)
            if time.perf_counter() - started > 180:
                raise TimeoutError(f"the detector was not served within 180 s: {exc}") from None
        await asyncio.sleep(0.05)
    print(f"detector serving {time.perf_counter() - started:.1f}s after promotion", file=sys.stderr)
    state = await kiln_api.serving.endpoint(endpoint)
    triton_model = (state.get("stable") or {})["triton_model"]
    outputs = [InferRequestedOutput("detections")]
    image = np.array([[png]], dtype=object)

    async def direct() -> None:
        tensor = InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(image)
        await triton.infer(triton_model, [tensor], outputs=outputs)

    payload = aiohttp.JsonPayload(body)

    async def kiln() -> None:
        async with session.post(base + path, data=payload) as r:
            text = await r.read()
            if r.status != 200:
                raise RuntimeError(f"predict failed: {r.status} {text[:200]!r}")

    await latencies(direct, 50)  # warm both paths
    await latencies(kiln, 50)
    lat_direct: list[float] = []
    lat_kiln: list[float] = []
    for _ in range(10):  # interleaved chunks: both see the same background load
        lat_direct += await latencies(direct, max(1, requests // 10))
        lat_kiln += await latencies(kiln, max(1, requests // 10))
    rounds = 6
    tput_direct = tput_kiln = 0.0
    cpu_direct: dict[str, float] = {}
    cpu_kiln: dict[str, float] = {}
    for _ in range(rounds):
        tput_direct += await throughput(direct, concurrency, seconds / rounds, cpu_direct, {})
        tput_kiln += await throughput(kiln, concurrency, seconds / rounds, cpu_kiln, {})
    tput_direct, tput_kiln = tput_direct / rounds, tput_kiln / rounds
    await kiln_api.serving.delete_endpoint(endpoint)
    result = {
        "detection_direct_p50_ms": round(percentile(lat_direct, 50), 3),
        "detection_kiln_p50_ms": round(percentile(lat_kiln, 50), 3),
        "detection_direct_p99_ms": round(percentile(lat_direct, 99), 3),
        "detection_kiln_p99_ms": round(percentile(lat_kiln, 99), 3),
        "detection_direct_rps": round(tput_direct, 1),
        "detection_kiln_rps": round(tput_kiln, 1),
    }
    result["detection_p50_overhead_ms"] = round(
        result["detection_kiln_p50_ms"] - result["detection_direct_p50_ms"], 3
    )
    result["detection_throughput_ratio"] = round(tput_kiln / tput_direct, 3)
    print(
        "detection  direct p50 {detection_direct_p50_ms} ms {detection_direct_rps} req/s;"
        "  kiln p50 {detection_kiln_p50_ms} ms {detection_kiln_rps} req/s".format(**result),
        file=sys.stderr,
    )
    return result
