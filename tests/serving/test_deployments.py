"""Promotions become served versions: load, warm-up, switch without failed requests, refusal
of a corrupt artifact, flagged low-confidence predictions."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from kiln_core.service import ServiceRuntime
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
    await create_endpoint(client, name, model)
    await promote(runtime, model, 1, torchscript(favour=0))
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
