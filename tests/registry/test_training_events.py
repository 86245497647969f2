"""training's job.succeeded becomes one model version, however often it is delivered."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from sqlmodel import select

from kiln_core.catalog import ModelVersionCreated
from kiln_core.events import new_event
from kiln_registry.models import ModelVersion
from tests.conftest import eventually
from tests.registry.conftest import (
    FEATURES,
    Service,
    as_record,
    publish,
    registry_events,
    training_event,
)


async def _versions(service: Service, name: str) -> list[dict]:
    client, _ = service
    response = await client.get(f"/v1/models/{name}/versions")
    return response.json()["items"] if response.status_code == 200 else []


async def test_duplicate_training_event_gives_one_version(
    registry_service: Service, unique: str
) -> None:
    client, runtime = registry_service
    name = f"m{unique}"
    event = await training_event(runtime, f"job-{unique}", name)
    await publish(runtime, event, key=name)
    await publish(
        runtime, event, key=name
    )  # redelivered through the bus: the inbox applies it once
    versions = await eventually(lambda: _versions(registry_service, name), timeout_s=30)
    # The same job announced again by a different event is still one version.
    again = await training_event(runtime, f"job-{unique}", name, metrics={"accuracy": 0.5})
    await runtime.inbox.handle_record(as_record(again))
    # Published after the duplicate on its partition: once it is applied, so was the duplicate.
    await publish(runtime, await training_event(runtime, f"job2-{unique}", name, seed=1), key=name)
    await eventually(lambda: _has_versions(registry_service, name, 2), timeout_s=30)
    versions = await _versions(registry_service, name)
    assert sorted(v["version"] for v in versions) == [1, 2]
    first = next(v for v in versions if v["version"] == 1)
    assert first["metrics"] == {"accuracy": 0.91, "loss": 0.2}
    assert first["lineage"]["source"] == "training"
    assert first["lineage"]["training_job_id"] == f"job-{unique}"
    assert first["lineage"]["dataset_id"] == "ds-1" and first["lineage"]["dataset_version"] == 3
    assert first["evaluation_split"] == "val" and first["params"] == {"epochs": 2, "lr": 0.01}
    assert first["artifact"]["sha256"] == event.data["artifact"]["sha256"]
    assert first["artifact"]["key"].startswith("blobs/sha256/")
    assert first["status"] == "registered" and first["created_by"] == "training:default"
    async with runtime.db.session() as session:
        rows = (await session.exec(select(ModelVersion))).all()
    assert len(rows) == 2
    created = await registry_events(runtime, ModelVersionCreated.event_type, 2, f"r-{unique}")
    assert sorted(data.version for _, data in created) == [1, 2]
    # The registered artifact is the registry's own copy and runs.
    response = await client.get(f"/v1/models/{name}/versions/1/artifact")
    model = torch.jit.load(io.BytesIO(response.content))
    assert model(torch.zeros(2, FEATURES)).shape == (2, 3)


async def _has_versions(service: Service, name: str, count: int) -> bool:
    return len(await _versions(service, name)) >= count


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sha256": "0" * 64}, b"sha256"),
        ({"label_map": ["only", "two"]}, b"label map"),
    ],
    ids=["wrong-checksum", "signature-mismatch"],
)
async def test_unusable_artifact_is_dead_lettered(
    registry_service: Service, unique: str, change: dict[str, Any], reason: bytes
) -> None:
    client, runtime = registry_service
    good = await training_event(runtime, f"job-{unique}", f"m{unique}")
    data = dict(good.data)
    data["artifact"] = {**data["artifact"], **change}
    from kiln_core.catalog import TrainingJobSucceeded

    bad = new_event(TrainingJobSucceeded.model_validate(data), subject=good.key)
    await runtime.inbox.handle_record(as_record(bad))
    reader = runtime.bus.consumer(["kiln.training.dlq"], f"dlq-{unique}")
    await reader.start()
    await reader.wait_assigned()
    dlq = []
    for _ in range(100):
        dlq += await reader.poll(timeout_s=0.2)
        if dlq:
            break
    await reader.stop()
    assert len(dlq) == 1 and reason in (dlq[0].header("kiln-dlq-reason") or b"")
    assert (await client.get(f"/v1/models/m{unique}")).status_code == 404


async def test_concurrent_events_for_one_job_register_one_version(
    registry_service: Service, unique: str
) -> None:
    import asyncio

    client, runtime = registry_service
    name = f"race{unique}"
    first = await training_event(runtime, f"job-{unique}", name)
    second = await training_event(runtime, f"job-{unique}", name)
    assert first.id != second.id
    await asyncio.gather(
        runtime.inbox.handle_record(as_record(first)),
        runtime.inbox.handle_record(as_record(second)),
    )
    versions = await _versions(registry_service, name)
    assert [v["version"] for v in versions] == [1]
    log = (await client.get(f"/v1/models/{name}/log")).json()["items"]
    assert sorted(e["action"] for e in log) == ["model.created", "version.created"]


async def test_auto_promotion_moves_the_alias_only_for_versions_passing_the_gates(
    registry_service: Service, unique: str
) -> None:
    client, runtime = registry_service
    name = f"auto{unique}"
    assert (await client.post("/v1/models", json={"name": name})).status_code == 201
    policy = {
        "gated_aliases": ["production"],
        "metric_gates": [{"metric": "accuracy", "op": ">=", "value": 0.9}],
        "auto_promote": "production",
    }
    assert (await client.put(f"/v1/models/{name}/policy", json=policy)).status_code == 200
    good = await training_event(runtime, f"good-{unique}", name, metrics={"accuracy": 0.95})
    await runtime.inbox.handle_record(as_record(good))
    weak = await training_event(runtime, f"weak-{unique}", name, metrics={"accuracy": 0.5}, seed=1)
    await runtime.inbox.handle_record(as_record(weak))
    aliases = {
        a["alias"]: a["version"] for a in (await client.get(f"/v1/models/{name}/aliases")).json()
    }
    assert aliases == {"production": 1}  # version 2 failed the gate and stayed registered
    log = (await client.get(f"/v1/models/{name}/versions/2/log")).json()
    refused = [op for op in log if op["action"] == "promotion.refused"]
    assert refused and refused[0]["actor"] == "registry:auto-promote"
    assert refused[0]["details"]["failed_gates"]


async def test_lineage_names_a_shared_datasets_team_and_another_teams_job_adds_no_version(
    registry_service: Service, unique: str
) -> None:
    client, runtime = registry_service
    name = f"shared{unique}"
    made = await client.post("/v1/models", json={"name": name, "team": "red"})
    assert made.status_code == 201 and made.json()["team"] == "red"
    # Red's job trained on blue's dataset (shared with red): the version says whose it was.
    ok = await training_event(runtime, f"red-{unique}", name, team="red", dataset_team="blue")
    await runtime.inbox.handle_record(as_record(ok))
    [version] = await _versions(registry_service, name)
    assert version["lineage"]["team"] == "red"
    assert version["lineage"]["dataset_team"] == "blue"
    assert version["lineage"]["shared_dataset"] is True
    # Blue's job may not add a version to red's model: the event is rejected, nothing added.
    foreign = await training_event(runtime, f"blue-{unique}", name, team="blue", seed=1)
    await runtime.inbox.handle_record(as_record(foreign))
    assert [v["version"] for v in await _versions(registry_service, name)] == [1]
