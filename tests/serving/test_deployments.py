"""Promotions become served versions: load, warm-up, switch without failed requests, refusal
of a corrupt artifact, flagged low-confidence predictions."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json

import httpx
import pytest
import torch
from PIL import Image

from kiln_core.catalog import (
    ModelArtifact,
    ModelSignature,
    ModelVersionPromoted,
    Preprocessing,
    TensorSpec,
)
from kiln_core.events import new_event
from kiln_core.service import ServiceRuntime
from kiln_serving.models import Promotion
from tests.conftest import eventually
from tests.serving.conftest import (
    create_endpoint,
    endpoint_state,
    events_of,
    predict,
    promote,
    torchscript,
    wait_serving,
)

pytestmark = pytest.mark.integration
Service = tuple[httpx.AsyncClient, ServiceRuntime]


async def test_promotion_is_served_and_low_confidence_inputs_are_flagged(
    service: Service, unique: str
) -> None:
    client, runtime = service
    name, model = f"ep-{unique}", f"m-{unique}"
    await create_endpoint(client, name, model, confidence_threshold=0.9, sample_rate=1.0)
    # Barely leaning to "dog": every answer is under the endpoint's confidence threshold.
    promoted = await promote(runtime, model, 1, torchscript(favour=1, sharpness=0.5))
    state = await wait_serving(client, name, 1)
    assert state["traffic"] == {"1": 1.0}
    assert state["state"] == "serving"

    r = await predict(client, name, [[0.1, 0.2, 0.3, 0.4]])
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-kiln-model-version"] == "1"
    assert body["version"] == 1 and body["version_id"] == promoted.version_id
    assert body["predictions"][0]["label"] == "dog"
    assert body["predictions"][0]["confidence"] < 0.9

    ready = await events_of(runtime, "kiln.serving.deployment.ready")
    assert [e["version"] for e in ready] == [1]
    flagged = await eventually(lambda: events_of(runtime, "kiln.serving.prediction.flagged"))
    event = flagged[0]
    assert event["endpoint"] == name and event["dataset_id"] == "ds-1"
    assert event["predicted_label"] == "dog" and event["threshold"] == 0.9
    stored = json.loads(await runtime.store.read_bytes(event["input_key"]))
    assert stored == pytest.approx([0.1, 0.2, 0.3, 0.4])
    sampled = await eventually(lambda: events_of(runtime, "kiln.serving.prediction.sampled"))
    assert sampled[0]["prediction_id"] == event["prediction_id"]

    bad = await client.post(f"/v1/endpoints/{name}:predict", json={"inputs": [[1, 2]]})
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    missing = await predict(client, f"nope-{unique}", [[0, 0, 0, 0]])
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["instance"] == f"/v1/endpoints/nope-{unique}:predict"
    assert len(missing.headers["x-request-id"]) == 32  # made up here, on errors too
    # The lean predict route keeps what the edge gives every route: request id and metrics.
    traced = await predict(client, name, [[0.1, 0.2, 0.3, 0.4]], headers={"x-request-id": unique})
    assert traced.headers["x-request-id"] == unique
    # A non-ASCII id comes back byte for byte (headers are latin-1 on the wire).
    odd = b"caf\xe9-" + unique.encode()
    echoed = await predict(client, name, [[0.1, 0.2, 0.3, 0.4]], headers={"x-request-id": odd})
    assert dict(echoed.headers.raw)[b"x-request-id"] == odd
    assert traced.headers["x-kiln-model-version-id"] == promoted.version_id
    metrics = (await client.get("/metrics")).text
    assert 'route="/v1/endpoints/{name}:predict"' in metrics
    assert "kiln_serving_requests_per_triton_call_count" in metrics
    # Other methods on that path go to the router (GET reads it as an endpoint name).
    wrong_method = await client.get(f"/v1/endpoints/{name}:predict")
    assert wrong_method.status_code in (404, 405)
    assert wrong_method.headers["content-type"].startswith("application/problem+json")


async def test_promoting_a_new_version_under_load_fails_no_request(
    service: Service, unique: str
) -> None:
    client, runtime = service
    name, model = f"ep-{unique}", f"m-{unique}"
    await create_endpoint(client, name, model)
    await promote(runtime, model, 1, torchscript(favour=0))
    await wait_serving(client, name, 1)

    stop = asyncio.Event()
    answers: list[tuple[int, int | None]] = []

    async def stream() -> None:
        while not stop.is_set():
            r = await predict(client, name, [[0.5, 0.5, 0.5, 0.5]])
            version = r.json().get("version") if r.status_code == 200 else None
            answers.append((r.status_code, version))

    streams = [asyncio.ensure_future(stream()) for _ in range(4)]
    await asyncio.sleep(0.5)
    await promote(runtime, model, 2, torchscript(favour=2))
    await wait_serving(client, name, 2)
    # Keep streaming until the old version is drained and unloaded.
    await eventually(lambda: _state_of(client, name, 1, "retired"), timeout_s=30, interval_s=0.2)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*streams)

    failures = [a for a in answers if a[0] != 200]
    assert not failures, f"{len(failures)} of {len(answers)} requests failed: {failures[:5]}"
    versions = [v for _, v in answers]
    assert 1 in versions and 2 in versions
    first_new = versions.index(2)
    assert set(versions[first_new + 8 :]) <= {2}  # after the switch only v2 answers
    shifted = await events_of(runtime, "kiln.serving.traffic.shifted")
    assert [(e["version"], e["reason"]) for e in shifted] == [(1, "replaced"), (2, "replaced")]


async def _state_of(client: httpx.AsyncClient, name: str, version: int, state: str) -> bool:
    data = await endpoint_state(client, name)
    return any(d["version"] == version and d["state"] == state for d in data["deployments"])


async def test_checksum_mismatch_fails_the_deployment_and_keeps_the_current_version(
    service: Service, unique: str
) -> None:
    client, runtime = service
    name, model = f"ep-{unique}", f"m-{unique}"
    # Promoted before the endpoint exists: the endpoint starts with that version.
    await promote(runtime, model, 1, torchscript(favour=0))

    async def recorded() -> bool:
        async with runtime.db.session() as session:
            return await session.get(Promotion, (model, "production")) is not None

    await eventually(recorded)
    await create_endpoint(client, name, model)
    await wait_serving(client, name, 1)

    await promote(runtime, model, 2, torchscript(favour=2), sha="0" * 64)
    failed = await eventually(lambda: events_of(runtime, "kiln.serving.deployment.failed"))
    assert failed[0]["version"] == 2
    assert "checksum mismatch" in failed[0]["reason"]
    state = await endpoint_state(client, name)
    assert state["stable"]["version"] == 1 and state["traffic"] == {"1": 1.0}
    assert any(d["version"] == 2 and d["state"] == "failed" for d in state["deployments"])
    r = await predict(client, name, [[0.0, 0.0, 0.0, 0.0]])
    assert r.status_code == 200 and r.json()["version"] == 1
    assert r.json()["predictions"][0]["label"] == "cat"


class TinyImageNet(torch.nn.Module):
    """3x8x8 images to two classes: "bright" when the mean pixel is above zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-4 * m, 4 * m], dim=1)


async def test_image_bytes_and_base64_images_are_preprocessed_and_flagged(
    service: Service, unique: str
) -> None:
    client, runtime = service
    name, model = f"ep-{unique}", f"m-{unique}"
    await create_endpoint(client, name, model, confidence_threshold=0.99)
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(TinyImageNet()), buf)
    data = buf.getvalue()
    key = f"models/{model}/1/model.pt"
    await runtime.store.put(key, data)
    artifact = ModelArtifact(
        uri=runtime.store.uri(key),
        key=key,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        signature=ModelSignature(
            inputs=[TensorSpec(name="image", dtype="FP32", shape=[3, 8, 8])],
            outputs=[TensorSpec(name="logits", dtype="FP32", shape=[2])],
        ),
        label_map=["dark", "bright"],
        preprocessing=Preprocessing(
            kind="image", size=[8, 8], mode="RGB", mean=[0.5] * 3, std=[0.25] * 3
        ),
    )
    promoted = ModelVersionPromoted(
        model_name=model,
        version=1,
        version_id=f"{model}-1",
        alias="production",
        artifact=artifact,
        dataset_id="images-1",
    )
    event = new_event(promoted, subject=model)
    await runtime.bus.publish(event.topic, event.to_bytes(), event.key.encode())
    await wait_serving(client, name, 1)

    white, black = _png((250, 250, 250), (40, 30)), _png((5, 5, 5), (16, 16))
    r = await client.post(
        f"/v1/endpoints/{name}:predict", content=white, headers={"content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] == "bright"
    r = await client.post(
        f"/v1/endpoints/{name}:predict",
        json={
            "inputs": [base64.b64encode(black).decode(), {"b64": base64.b64encode(white).decode()}]
        },
    )
    assert [p["label"] for p in r.json()["predictions"]] == ["dark", "bright"]
    broken = await client.post(
        f"/v1/endpoints/{name}:predict",
        content=b"not an image",
        headers={"content-type": "image/png"},
    )
    assert broken.status_code == 502

    # A grey image is a coin toss for this model: flagged, with the bytes stored as sent.
    grey = _png((128, 128, 128), (8, 8))
    r = await client.post(
        f"/v1/endpoints/{name}:predict", content=grey, headers={"content-type": "image/png"}
    )
    assert r.json()["predictions"][0]["confidence"] < 0.99

    async def grey_flagged() -> list[dict[str, object]]:
        events = await events_of(runtime, "kiln.serving.prediction.flagged")
        return [
            e
            for e in events
            if e["content_type"] == "image/png"
            and await runtime.store.read_bytes(str(e["input_key"])) == grey
        ]

    flagged = await eventually(grey_flagged)
    assert flagged[0]["dataset_id"] == "images-1"


def _png(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


async def test_an_oversize_predict_body_is_refused_with_413(service: Service, unique: str) -> None:
    client, runtime = service
    limit = int(runtime.settings.max_request_bytes)
    chunk = b"0" * (1 << 20)

    async def chunked():  # type: ignore[no-untyped-def]  # no content-length: counted as it comes
        sent = 0
        while sent <= limit:
            yield chunk
            sent += len(chunk)

    r = await client.post(
        f"/v1/endpoints/big-{unique}:predict",
        content=chunked(),
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 413, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["x-request-id"]
