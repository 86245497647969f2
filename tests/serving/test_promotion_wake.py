"""A promotion reaches Triton because its handler wakes the controller, not because the
controller polls: with the poll slowed to a minute, a promoted version still serves in seconds."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kiln_core.service import ServiceRuntime
from kiln_serving import controller
from tests.serving.conftest import create_endpoint, promote, torchscript, wait_serving

pytestmark = pytest.mark.integration
Service = tuple[httpx.AsyncClient, ServiceRuntime]
SLOW_POLL_S = 60.0


async def test_a_promotion_wakes_the_controller_instead_of_waiting_for_its_poll(
    service: Service, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, runtime = service
    monkeypatch.setattr(controller, "TICK_S", SLOW_POLL_S)
    await asyncio.sleep(1.0)  # the controller's current short wait ends; the next is a minute
    name, model = f"ep-{unique}", f"m-{unique}"
    await create_endpoint(client, name, model)
    started = asyncio.get_running_loop().time()
    await promote(runtime, model, 1, torchscript(favour=1))
    state = await wait_serving(client, name, 1, timeout_s=SLOW_POLL_S / 2)
    assert state["traffic"] == {"1": 1.0}
    assert asyncio.get_running_loop().time() - started < SLOW_POLL_S / 2
