"""A detector promoted to an endpoint is served by Triton's Python backend: images of
different sizes in one request answer boxes in each image's own pixels (exactly the
TorchScript model's), with class names, scores and the version; uncertain images are flagged
with their boxes; a non-image fails with problem+json."""

from __future__ import annotations

import base64
import hashlib
import io

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from kiln_core.catalog import ModelArtifact, ModelVersionPromoted, Preprocessing
from kiln_core.events import new_event
from kiln_core.service import ServiceRuntime
from kiln_training.detection import ServableDetector, build_detector, detector_signature
from kiln_training.templates import get_template, validate_params
from tests.conftest import eventually
from tests.serving.conftest import create_endpoint, events_of, wait_serving

pytestmark = pytest.mark.integration
Service = tuple[httpx.AsyncClient, ServiceRuntime]
LABELS = ["block", "ring", "star"]


def _detector() -> bytes:
    """An untrained FCOS whose every box survives (score threshold 0): plenty of boxes."""
    params = validate_params(
        get_template("detection-fcos"),
        {"input_size": 48, "width": 16, "score_threshold": 0.0, "max_detections": 7},
    )
    torch.manual_seed(0)
    model = build_detector(params, 3, len(LABELS), [0.4] * 3, [0.25] * 3).eval()
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(ServableDetector(model)), buffer)
    return buffer.getvalue()


def _png(width: int, height: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _local(model: bytes, png: bytes) -> list[tuple[str, float, list[float]]]:
    """The TorchScript model's own boxes for an image, as :predict should answer them."""
    scripted = torch.jit.load(io.BytesIO(model))
    array = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255.0
    out = scripted(torch.from_numpy(array.transpose(2, 0, 1).copy())[None])[0]
    boxes = [
        (LABELS[int(cls)], float(score), [x1, y1, x2, y2])
        for x1, y1, x2, y2, score, cls in out.tolist()
        if cls >= 0
    ]
    return sorted(boxes, key=lambda b: -b[1])


async def test_a_detector_is_served_with_boxes_in_input_pixels_and_flags_with_boxes(
    service: Service, unique: str
) -> None:
    client, runtime = service
    name, model_name = f"det-{unique}", f"det-{unique}"
    await create_endpoint(client, name, model_name, confidence_threshold=0.5, box_score_floor=0.0)
    model = _detector()
    key = f"models/{model_name}/1/model.pt"
    await runtime.store.put(key, model)
    artifact = ModelArtifact(
        uri=runtime.store.uri(key),
        key=key,
        sha256=hashlib.sha256(model).hexdigest(),
        size_bytes=len(model),
        signature=detector_signature(3),
        label_map=LABELS,
        preprocessing=Preprocessing(kind="image", mode="RGB"),
    )
    promoted = ModelVersionPromoted(
        model_name=model_name,
        version=1,
        version_id=f"{model_name}-1",
        alias="production",
        artifact=artifact,
        dataset_id="shapes-1",
    )
    event = new_event(promoted, subject=model_name)
    await runtime.bus.publish(event.topic, event.to_bytes(), event.key.encode())
    await wait_serving(client, name, 1)

    small, wide = _png(48, 48, 1), _png(130, 70, 2)
    r = await client.post(
        f"/v1/endpoints/{name}:predict",
        json={"inputs": [base64.b64encode(small).decode(), base64.b64encode(wide).decode()]},
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["version"] == 1 and answer["model_name"] == model_name
    for png, prediction, (width, height) in zip(
        (small, wide), answer["predictions"], ((48, 48), (130, 70)), strict=True
    ):
        expected = _local(model, png)
        got = prediction["detections"]
        assert len(got) == len(expected) > 0
        for g, (label, score, (x1, y1, x2, y2)) in zip(got, expected, strict=True):
            assert g["label"] == label
            assert g["score"] == pytest.approx(score, abs=1e-5)
            assert g["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.02)
            x, y, w, h = g["bbox"]
            assert -0.01 <= x and x + w <= width + 0.01 and -0.01 <= y and y + h <= height + 0.01
        assert prediction["label"] == got[0]["label"]
        assert prediction["confidence"] == pytest.approx(min(d["score"] for d in got), abs=1e-5)

    # Raw bytes too; a non-image is the request's own problem+json.
    r = await client.post(
        f"/v1/endpoints/{name}:predict", content=wide, headers={"content-type": "image/png"}
    )
    assert r.status_code == 200 and r.headers["x-kiln-model-version"] == "1"
    bad = await client.post(
        f"/v1/endpoints/{name}:predict",
        content=b"not an image",
        headers={"content-type": "image/png"},
    )
    assert bad.status_code == 502
    assert bad.headers["content-type"].startswith("application/problem+json")

    # An untrained detector is unsure of everything: flagged, with its boxes as pre-labels.
    async def flagged() -> list[dict[str, object]]:
        return [
            e
            for e in await events_of(runtime, "kiln.serving.prediction.flagged")
            if e["predicted_boxes"]
        ]

    events = await eventually(flagged)
    boxes = events[0]["predicted_boxes"]
    assert isinstance(boxes, list) and {"label", "score", "bbox"} <= set(boxes[0])
    assert events[0]["dataset_id"] == "shapes-1"
