"""Gradual rollouts: a canary judged by its error rate is rolled back, a healthy one is
promoted step by step; a shadow answers nothing but is compared."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

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


async def _stream(
    client: httpx.AsyncClient, name: str, stop: asyncio.Event, answers: list[tuple[int, int]]
) -> None:
    while not stop.is_set():
        row = [random.random(), 0.1, 0.2, 0.3]
        r = await predict(client, name, [row])
        answers.append((r.status_code, r.json().get("version", -1)))


async def _wait_candidate(client: httpx.AsyncClient, name: str, version: int) -> None:
    async def check() -> bool:
        state = await endpoint_state(client, name)
        return bool(state["candidate"] and state["candidate"]["version"] == version)

    await eventually(check, timeout_s=120, interval_s=0.2)


async def test_a_failing_canary_is_rolled_back_and_stable_keeps_serving(
    service: Service, unique: str
) -> None:
    client, runtime = service
    name, model = f"ep-{unique}", f"m-{unique}"
    await create_endpoint(
        client,
        name,
        model,
        strategy="canary",
        canary_steps=[50, 100],
        min_requests_per_step=10,
        max_error_rate=0.1,
        step_interval_s=600,
    )
    await promote(runtime, model, 1, torchscript(favour=0))
    await wait_serving(client, name, 1)
    # Version 2 raises for about half of the inputs (first feature above 0.5).
    await promote(runtime, model, 2, torchscript(favour=1, fail_above=0.5), alias="canary")
    await _wait_candidate(client, name, 2)

    stop = asyncio.Event()
    answers: list[tuple[int, int]] = []
    streams = [asyncio.ensure_future(_stream(client, name, stop, answers)) for _ in range(3)]

    async def rolled_back() -> bool:
        shifted = await events_of(runtime, "kiln.serving.traffic.shifted")
        return any(e["reason"] == "rolled_back" for e in shifted)

    rollbacks = REGISTRY.get_sample_value("kiln_canary_rollbacks_total", {"endpoint": name})
    assert not rollbacks
    await eventually(rolled_back, timeout_s=60, interval_s=0.2)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*streams)
    # The rollback is counted once, on the API's /metrics beside the steps and predictions.
    exported = {
        (s.name, s.labels.get("endpoint"), s.labels.get("version")): s.value
        for family in text_string_to_metric_families((await client.get("/metrics")).text)
        for s in family.samples
    }
    assert exported[("kiln_canary_rollbacks_total", name, None)] == 1
    assert ("kiln_canary_steps_total", name, None) not in exported  # it never passed a step
    assert exported[("kiln_predictions_total", name, "1")] > 0

    shifted = await events_of(runtime, "kiln.serving.traffic.shifted")
    rollback = [e for e in shifted if e["reason"] == "rolled_back"][0]
    assert rollback["version"] == 2
    assert rollback["analysis"]["candidate"]["errors"] > 0
    assert "error rate" in (await endpoint_state(client, name))["deployments"][0]["reason"]
    state = await endpoint_state(client, name)
    assert state["stable"]["version"] == 1 and state["candidate"] is None
    assert state["traffic"] == {"1": 1.0}
    # Callers never saw the canary's failures: its failed requests were answered by stable.
    assert all(code == 200 for code, _ in answers), answers[:5]
    assert {v for _, v in answers} <= {1, 2}
    r = await predict(client, name, [[0.9, 0.0, 0.0, 0.0]])
    assert r.status_code == 200 and r.json()["version"] == 1
    await eventually(
        lambda: _deployment_state(client, name, 2, "retired"), timeout_s=30, interval_s=0.2
    )


async def _deployment_state(client: httpx.AsyncClient, name: str, version: int, s: str) -> bool:
    state = await endpoint_state(client, name)
    return any(d["version"] == version and d["state"] == s for d in state["deployments"])


async def test_a_healthy_canary_is_promoted_step_by_step_after_a_shadow(
    service: Service, unique: str
) -> None:
    client, runtime = service
    name, model = f"ep-{unique}", f"m-{unique}"
    await create_endpoint(
        client,
        name,
        model,
        strategy="shadow",
        canary_steps=[25, 60, 100],
        min_requests_per_step=5,
        max_error_rate=0.2,
        max_latency_ratio=1000,
        step_interval_s=0.5,
    )
    await promote(runtime, model, 1, torchscript(favour=0))
    await wait_serving(client, name, 1)
    await promote(runtime, model, 2, torchscript(favour=0, sharpness=6.0), alias="canary")
    await _wait_candidate(client, name, 2)

    # Shadow: version 1 answers, version 2 sees a copy of every request and is compared.
    # Requests keep coming until ten were compared: the API shows the candidate as soon as
    # it is stored, and the request path routes to it from its next tick (within 0.2 s;
    # longer on a loaded box), so a fixed ten requests could all go out before that.
    async def compared() -> dict[str, object] | None:
        r = await predict(client, name, [[0.3, 0.1, 0.2, 0.3]])
        assert r.status_code == 200 and r.json()["version"] == 1, r.text
        shadow = (await endpoint_state(client, name))["candidate"]["analysis"].get("shadow", {})
        return shadow if shadow.get("compared", 0) >= 10 else None

    shadow = await eventually(compared, timeout_s=30, interval_s=0.05)
    assert shadow["agreement"] == 1.0  # both lean to "cat"

    # Switch the endpoint to canary: the analysis steps it up to 100 % and promotes it.
    r = await client.patch(f"/v1/endpoints/{name}", json={"strategy": "canary"})
    assert r.status_code == 200, r.text
    stop = asyncio.Event()
    answers: list[tuple[int, int]] = []
    streams = [asyncio.ensure_future(_stream(client, name, stop, answers)) for _ in range(2)]
    await wait_serving(client, name, 2, timeout_s=60)
    stop.set()
    await asyncio.gather(*streams)
    assert all(code == 200 for code, _ in answers)
    reasons = [
        (e["version"], e["reason"])
        for e in await events_of(runtime, "kiln.serving.traffic.shifted")
    ]
    assert reasons[-1] == (2, "promoted")
    assert (2, "step") in reasons
