"""Selection jobs on the real stack: the most uncertain unlabelled items of a version, as the
served model (serving over HTTP, the model in the shared Triton) sees them, become
high-priority tasks with the strategy and each item's uncertainty recorded; random is the
seeded baseline; bad requests are refused and change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.annotation.test_prelabel import serve_brightness_model, stack  # noqa: F401
from tests.annotation.test_workflow import as_user
from tests.conftest import eventually
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import commit, make_dataset, upload
from tests.serving.conftest import triton_url  # noqa: F401

pytestmark = pytest.mark.integration

# Grey levels: the brightness model is least sure near the middle (128).
LEVELS = {"g128.png": 128, "g124.png": 124, "g140.png": 140, "g90.png": 90, "g200.png": 200}


async def _project(stack: dict[str, Any], endpoint: str | None) -> tuple[str, str, str]:  # noqa: F811
    data, ann = stack["dataset"], stack["annotation"]
    ds = (await make_dataset(data, task_type="classification"))["id"]
    r = await ann.post(
        "/v1/projects",
        json={
            "name": f"sel-{ds}",
            "dataset_id": ds,
            "auto_annotate": False,
            "prelabel_endpoint": endpoint,
            "label_schema": {
                "kind": "classification",
                "labels": [{"name": "dark"}, {"name": "bright"}],
            },
        },
    )
    assert r.status_code == 201, r.text
    files = {name: png((v, v, v)) for name, v in LEVELS.items()}
    version = await commit(data, ds, (await upload(data, ds, files))["draft"])
    return r.json()["id"], version["manifest_key"], version["version"]


async def _finished(stack: dict[str, Any], job_id: str) -> dict[str, Any]:  # noqa: F811
    async def done() -> dict[str, Any] | None:
        state = (await stack["annotation"].get(f"/v1/selections/{job_id}")).json()
        return state if state["status"] in ("succeeded", "failed") else None

    return await eventually(done, timeout_s=60)


async def test_the_most_uncertain_items_become_tasks_first_with_their_scores(
    stack: dict[str, Any],  # noqa: F811
    unique: str,
) -> None:
    ann, settings = stack["annotation"], stack["settings"]
    endpoint = f"sel-{unique}"
    await serve_brightness_model(stack, endpoint)
    pid, manifest, version = await _project(stack, endpoint)
    body = {"dataset_version": version, "manifest_key": manifest, "size": 2}
    job = await ann.post(f"/v1/projects/{pid}/selections", json=body)
    assert job.status_code == 202, job.text
    state = await _finished(stack, job.json()["id"])
    assert state["status"] == "succeeded", state
    assert state["strategy"] == "least-confidence" and state["tasks_created"] == 2
    chosen = [s["item_id"] for s in state["selected"]]
    assert chosen == ["g128.png", "g124.png"]  # nearest the model's 50/50 point
    assert state["selected"][0]["uncertainty"] >= state["selected"][1]["uncertainty"] > 0.3

    # Annotators get them before anything else, with the model's guess and the selection.
    alice = as_user(settings, "alice", "annotator")
    task = (await ann.post(f"/v1/projects/{pid}/lease", headers=alice)).json()
    assert task["priority"] == 90 and task["source"] == "selection:least-confidence"
    item = task["items"][0]["item_id"]
    assert item in chosen and task["prelabels"][item]["source"] == f"model:{endpoint}@v1"
    audit = (await ann.get(f"/v1/tasks/{task['id']}/audit")).json()
    selected = next(e for e in audit if e["action"] == "selected")
    assert selected["detail"]["strategy"] == "least-confidence"
    assert selected["detail"]["items"][item]["rank"] in (1, 2)

    # Margin reads every class's probability from :predict (?probabilities=true): with two
    # classes it ranks as least-confidence does. Random with no model ranks nothing.
    margin = await ann.post(
        f"/v1/projects/{pid}/selections", json={**body, "strategy": "margin", "size": 1}
    )
    state = await _finished(stack, margin.json()["id"])
    assert state["status"] == "succeeded", state
    assert [s["item_id"] for s in state["selected"]] == ["g140.png"]  # the next nearest 128

    # A second selection only looks at what is not tasked yet.
    again = await ann.post(f"/v1/projects/{pid}/selections", json={**body, "size": 10})
    state = await _finished(stack, again.json()["id"])
    assert state["status"] == "succeeded", state
    assert sorted(s["item_id"] for s in state["selected"]) == ["g200.png", "g90.png"]


async def test_random_is_a_seeded_baseline_and_bad_requests_change_nothing(
    stack: dict[str, Any],  # noqa: F811
) -> None:
    ann = stack["annotation"]
    pid, manifest, version = await _project(stack, None)
    body = {"dataset_version": version, "manifest_key": manifest, "size": 2}
    refused = [
        ({**body, "strategy": "most-fun"}, 422),
        ({**body, "size": 0}, 422),
        ({**body, "manifest_key": "datasets/other/manifests/x.jsonl"}, 422),
        (body, 422),  # least-confidence needs a model: the project names no endpoint
    ]
    for bad, code in refused:
        r = await ann.post(f"/v1/projects/{pid}/selections", json=bad)
        assert r.status_code == code, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"] == {}
    job = await ann.post(
        f"/v1/projects/{pid}/selections", json={**body, "strategy": "random", "seed": 4}
    )
    state = await _finished(stack, job.json()["id"])
    assert state["status"] == "succeeded" and len(state["selected"]) == 2, state
    counts = (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"]
    assert counts == {"queued": 2}
