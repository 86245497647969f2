"""The labelling loop: a dataset version creates tasks; annotators lease and submit; reviewers
accept or reject; accepted labels are committed and come back as a labelled dataset version."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from kiln_annotation.models import Task
from kiln_core.auth import issue_token
from kiln_core.db import utcnow
from tests.conftest import eventually
from tests.dataset.conftest import png
from tests.dataset.test_dataset_api import commit, make_dataset, upload

SCHEMA = {"kind": "boxes", "labels": [{"name": "scratch"}, {"name": "dent"}]}


def as_user(settings: Any, name: str, *roles: str) -> dict[str, str]:
    return {
        "authorization": f"Bearer {issue_token(name, list(roles), settings, teams=[settings.default_team])}"
    }


async def setup_project(services: dict[str, Any], images: int, **project: Any) -> tuple[str, str]:
    data, ann = services["dataset"], services["annotation"]
    ds = (await make_dataset(data, task_type="detection"))["id"]
    r = await ann.post(
        "/v1/projects",
        json={"name": f"p-{ds}", "dataset_id": ds, "label_schema": SCHEMA, **project},
    )
    assert r.status_code == 201, r.text
    files = {f"img{i}.png": png((i, i, i), (64, 48)) for i in range(images)}
    await commit(data, ds, (await upload(data, ds, files))["draft"])
    pid = r.json()["id"]

    expected = images * project.get("overlap", 1)

    async def tasks_created() -> bool:
        counts = (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"]
        return counts.get("queued") == expected

    await eventually(tasks_created, timeout_s=30)
    return ds, pid


async def test_version_to_labelled_version_with_review(services: dict[str, Any]) -> None:
    ann, data, settings = services["annotation"], services["dataset"], services["settings"]
    ds, pid = await setup_project(services, images=2)
    alice = as_user(settings, "alice", "annotator")
    bob = as_user(settings, "bob", "annotator")
    rita = as_user(settings, "rita", "reviewer")

    task = (await ann.post(f"/v1/projects/{pid}/lease", headers=alice)).json()
    item = task["items"][0]["item_id"]
    again = (await ann.post(f"/v1/projects/{pid}/lease", headers=alice)).json()
    assert again["id"] == task["id"]  # pulling again returns the task already held
    assert (await ann.get(f"/v1/tasks/{task['id']}", headers=bob)).status_code == 404

    bad = await ann.post(
        f"/v1/tasks/{task['id']}/submission",
        headers=alice,
        json={
            "labels": {
                item: [
                    {"type": "box", "label": "scratch", "bbox": [60, 10, 20, 5]},
                    {"type": "box", "label": "crack", "bbox": [1, 1, 2, 2]},
                ]
            }
        },
    )
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    fields = {e["field"] for e in bad.json()["errors"]}
    assert any(f.startswith(f"labels.{item}.labels[0].bbox") for f in fields), fields
    assert any(f.startswith(f"labels.{item}.labels[1].label") for f in fields), fields
    assert (await ann.get(f"/v1/tasks/{task['id']}", headers=alice)).json()["labels"] is None

    good = {item: [{"type": "box", "label": "scratch", "bbox": [10, 10, 20, 5]}]}
    r = await ann.post(f"/v1/tasks/{task['id']}/submission", headers=alice, json={"labels": good})
    assert r.status_code == 200 and r.json()["status"] == "in_review"
    own = await ann.post(
        f"/v1/tasks/{task['id']}/review",
        headers=as_user(settings, "alice", "reviewer"),
        json={"accept": True},
    )
    assert own.status_code == 403
    r = await ann.post(
        f"/v1/tasks/{task['id']}/review",
        headers=rita,
        json={"accept": False, "comment": "box too small"},
    )
    assert r.json()["status"] == "rework" and r.json()["assignee"] == "alice"
    back = (await ann.post(f"/v1/projects/{pid}/lease", headers=alice)).json()
    assert back["id"] == task["id"]  # the rejected task returns to its annotator
    await ann.post(f"/v1/tasks/{task['id']}/submission", headers=alice, json={"labels": good})
    assert (
        await ann.post(f"/v1/tasks/{task['id']}/review", headers=rita, json={"accept": True})
    ).json()["status"] == "accepted"

    other = (await ann.post(f"/v1/projects/{pid}/lease", headers=bob)).json()
    assert other["id"] != task["id"]
    await ann.post(
        f"/v1/tasks/{other['id']}/submission",
        headers=bob,
        json={
            "labels": {
                other["items"][0]["item_id"]: [
                    {"type": "box", "label": "dent", "bbox": [0, 0, 64, 48]}
                ]
            }
        },
    )
    await ann.post(f"/v1/tasks/{other['id']}/review", headers=rita, json={"accept": True})

    async def labelled_version() -> dict[str, Any] | None:
        r = await data.get(f"/v1/datasets/{ds}/versions/2")
        return r.json() if r.status_code == 200 else None

    v2 = await eventually(labelled_version, timeout_s=30)
    assert v2["labelled_count"] == 2 and v2["lineage"]["source"] == "labels"
    assert v2["stats"]["items_per_label"] == {"dent": 1, "scratch": 1}
    audit = (await ann.get(f"/v1/tasks/{task['id']}/audit", headers=rita)).json()
    assert [a["action"] for a in audit] == [
        "leased",
        "submitted",
        "rejected",
        "submitted",
        "accepted",
        "committed",
    ]
    # the labelled version must not spawn new tasks
    await asyncio.sleep(0.5)
    counts = (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"]
    assert counts == {"committed": 2}


async def test_concurrent_leases_never_share_a_task(services: dict[str, Any]) -> None:
    ann, settings = services["annotation"], services["settings"]
    _, pid = await setup_project(services, images=50, review_levels=0)

    async def lease(n: int) -> tuple[str, str | None]:
        r = await ann.post(
            f"/v1/projects/{pid}/lease", headers=as_user(settings, f"annotator{n}", "annotator")
        )
        return f"annotator{n}", (r.json()["id"] if r.status_code == 200 else None)

    results = await asyncio.gather(*(lease(n) for n in range(200)))
    taken = [task for _, task in results if task]
    assert len(taken) == 50 and len(set(taken)) == 50
    assert sum(1 for _, task in results if task is None) == 150


async def test_an_expired_lease_returns_its_task(services: dict[str, Any]) -> None:
    ann, settings = services["annotation"], services["settings"]
    runtime = services["annotation_runtime"]
    _, pid = await setup_project(services, images=1, lease_seconds=10)
    first = (
        await ann.post(f"/v1/projects/{pid}/lease", headers=as_user(settings, "slow", "annotator"))
    ).json()
    nobody = await ann.post(
        f"/v1/projects/{pid}/lease", headers=as_user(settings, "eager", "annotator")
    )
    assert nobody.status_code == 204
    async with runtime.db.transaction() as session:  # let the clock run past the lease
        task = await session.get(Task, first["id"])
        task.lease_expires_at = utcnow() - timedelta(seconds=1)
        session.add(task)
    second = await ann.post(
        f"/v1/projects/{pid}/lease", headers=as_user(settings, "eager", "annotator")
    )
    assert second.status_code == 200 and second.json()["id"] == first["id"]
    late = await ann.post(
        f"/v1/tasks/{first['id']}/submission",
        headers=as_user(settings, "slow", "annotator"),
        json={"labels": {}},
    )
    assert late.status_code == 403


async def test_annotator_statistics_and_gold_tasks(services: dict[str, Any]) -> None:
    ann, settings = services["annotation"], services["settings"]
    _, pid = await setup_project(services, images=2, overlap=2, review_levels=1)
    gold_item = {
        "item_id": "gold-1",
        "blob": "0" * 64,
        "width": 64,
        "height": 48,
        "media_type": "image/png",
    }
    truth = [{"type": "box", "label": "dent", "bbox": [10, 10, 10, 10]}]
    r = await ann.post(
        f"/v1/projects/{pid}/gold",
        json={"dataset_version": 1, "items": [{"item": gold_item, "labels": truth}]},
    )
    assert r.status_code == 201
    rita = as_user(settings, "rita", "reviewer")
    boxes = {"ann": [10, 10, 20, 20], "bea": [12, 10, 20, 20]}
    for who in ("ann", "bea"):
        headers = as_user(settings, who, "annotator")
        seen: set[str] = set()
        while True:
            r = await ann.post(f"/v1/projects/{pid}/lease", headers=headers)
            if r.status_code == 204 or r.json()["id"] in seen:
                break  # nothing new (a rejected task comes back; this test does not redo it)
            task = r.json()
            seen.add(task["id"])
            labels = {
                i["item_id"]: [{"type": "box", "label": "dent", "bbox": boxes[who]}]
                for i in task["items"]
            }
            done = await ann.post(
                f"/v1/tasks/{task['id']}/submission", headers=headers, json={"labels": labels}
            )
            assert done.status_code == 200, done.text
            if done.json()["status"] == "in_review":
                await ann.post(
                    f"/v1/tasks/{task['id']}/review",
                    headers=rita,
                    json={"accept": who == "ann", "comment": "" if who == "ann" else "off"},
                )
    stats = {
        s["annotator"]: s
        for s in (await ann.get(f"/v1/projects/{pid}/annotators", headers=rita)).json()
    }
    assert stats["ann"]["acceptance_rate"] == 1.0 and stats["bea"]["acceptance_rate"] == 0.0
    assert 0.5 < stats["ann"]["agreement"] < 1.0  # overlapping boxes, IoU about 0.82
    gold_scores = [s["gold_accuracy"] for s in stats.values() if s["gold_tasks"]]
    assert len(gold_scores) == 1 and gold_scores[0] < 1.0
    viewer = as_user(settings, "val", "annotator")
    assert (await ann.get(f"/v1/projects/{pid}/annotators", headers=viewer)).status_code == 403

    # The same items by both annotators, side by side, with the same agreement as above.
    groups = (await ann.get(f"/v1/projects/{pid}/overlaps", headers=rita)).json()
    # Items both labelled (bea stops at her first rejection); the gold task is never a group.
    assert groups and all(g["items"][0]["item_id"] != "gold-1" for g in groups)
    for group in groups:
        assert [a["annotator"] for a in group["annotations"]] == ["ann", "bea"]
        item = group["items"][0]["item_id"]
        assert [a["labels"][item][0]["bbox"] for a in group["annotations"]] == [
            boxes["ann"],
            boxes["bea"],
        ]
        assert group["agreement"] == stats["ann"]["agreement"]
    assert (await ann.get(f"/v1/projects/{pid}/overlaps", headers=viewer)).status_code == 403


async def test_finished_work_whose_auto_commit_was_lost_is_committed_by_the_sweep(
    services: dict[str, Any], monkeypatch: Any
) -> None:
    from kiln_annotation import workflow

    ann, data, settings = services["annotation"], services["dataset"], services["settings"]
    runtime = services["annotation_runtime"]
    ds, pid = await setup_project(services, images=2, review_levels=0)

    async def lost(*_args: Any) -> None:  # the process died between submission and auto-commit
        return None

    monkeypatch.setattr(workflow, "commit_if_complete", lost)
    for name in ("ann", "eve"):
        who = as_user(settings, name, "annotator")
        task = (await ann.post(f"/v1/projects/{pid}/lease", headers=who)).json()
        labels = {
            task["items"][0]["item_id"]: [{"type": "box", "label": "dent", "bbox": [1, 1, 9, 9]}]
        }
        r = await ann.post(
            f"/v1/tasks/{task['id']}/submission", headers=who, json={"labels": labels}
        )
        assert r.json()["status"] == "accepted", r.text
    assert (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"] == {"accepted": 2}

    assert await workflow.complete_uncommitted_versions(runtime) >= 1
    assert (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"] == {"committed": 2}

    async def labelled_version() -> dict[str, Any] | None:
        r = await data.get(f"/v1/datasets/{ds}/versions/2")
        return r.json() if r.status_code == 200 else None

    v2 = await eventually(labelled_version, timeout_s=30)
    assert v2["labelled_count"] == 2 and v2["lineage"]["source"] == "labels"
    # a second sweep finds nothing left for this project
    await workflow.complete_uncommitted_versions(runtime)
    r = await data.get(f"/v1/datasets/{ds}/versions/3")
    assert r.status_code == 404


async def test_submit_and_lease_next_is_one_call_and_a_refusal_leases_nothing(
    services: dict[str, Any],
) -> None:
    ann, settings = services["annotation"], services["settings"]
    _, pid = await setup_project(services, images=2)
    alice = as_user(settings, "alice", "annotator")
    first = (await ann.post(f"/v1/projects/{pid}/lease", headers=alice)).json()
    item = first["items"][0]["item_id"]
    refused = await ann.post(
        f"/v1/tasks/{first['id']}/submission-and-lease",
        headers=alice,
        json={"labels": {item: [{"type": "box", "label": "crack", "bbox": [1, 1, 2, 2]}]}},
    )
    assert refused.status_code == 422, refused.text
    counts = (await ann.get(f"/v1/projects/{pid}")).json()["task_counts"]
    assert counts == {"leased": 1, "queued": 1}

    good = {item: [{"type": "box", "label": "scratch", "bbox": [10, 10, 20, 5]}]}
    r = await ann.post(
        f"/v1/tasks/{first['id']}/submission-and-lease", headers=alice, json={"labels": good}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["submitted"]["id"] == first["id"] and body["submitted"]["status"] == "in_review"
    second = body["next"]
    assert second["id"] != first["id"] and second["status"] == "leased"
    assert second["assignee"] == "alice" and second["lease_expires_at"]
    # The first lease named what would come next, so the workspace could fetch it early; the
    # last task has nothing after it.
    assert first["up_next"] == second["items"]
    assert second["up_next"] == []
    assert (await ann.get(f"/v1/tasks/{second['id']}", headers=alice)).json()["up_next"] is None
    item2 = second["items"][0]["item_id"]
    last = await ann.post(
        f"/v1/tasks/{second['id']}/submission-and-lease",
        headers=alice,
        json={"labels": {item2: [{"type": "box", "label": "dent", "bbox": [0, 0, 5, 5]}]}},
    )
    assert last.status_code == 200 and last.json()["next"] is None


async def test_the_second_review_level_needs_another_reviewer(services: dict[str, Any]) -> None:
    """Separation of duties: whoever accepted a task at the first review level may not accept
    it at the second; another reviewer may. A resubmission starts a new round."""
    ann, settings = services["annotation"], services["settings"]
    _, pid = await setup_project(services, images=1, review_levels=2)
    alice = as_user(settings, "alice", "annotator")
    rita = as_user(settings, "rita", "reviewer")
    ravi = as_user(settings, "ravi", "reviewer")
    task = (await ann.post(f"/v1/projects/{pid}/lease", headers=alice)).json()
    labels = {task["items"][0]["item_id"]: [{"type": "box", "label": "dent", "bbox": [1, 1, 9, 9]}]}

    async def submit() -> None:
        r = await ann.post(
            f"/v1/tasks/{task['id']}/submission", headers=alice, json={"labels": labels}
        )
        assert r.status_code == 200, r.text

    async def review(who: dict[str, str], **body: Any) -> Any:
        return await ann.post(f"/v1/tasks/{task['id']}/review", headers=who, json=body)

    await submit()
    first = await review(rita, accept=True)
    assert first.status_code == 200 and first.json()["status"] == "in_review"
    assert first.json()["review_level"] == 2  # levels count from 1: now the second
    twice = await review(rita, accept=True)
    assert twice.status_code == 403, twice.text
    assert twice.headers["content-type"] == "application/problem+json"
    assert "another reviewer" in twice.json()["detail"]
    after = (await ann.get(f"/v1/tasks/{task['id']}", headers=rita)).json()
    assert after["status"] == "in_review" and after["review_level"] == 2  # nothing changed

    # The second reviewer sends it back; in the next round rita's earlier accept no longer
    # counts, so she may take the first level again, and ravi the second.
    back = await review(ravi, accept=False, comment="the box misses the dent")
    assert back.json()["status"] == "rework"
    await ann.post(f"/v1/projects/{pid}/lease", headers=alice)
    await submit()
    assert (await review(rita, accept=True)).json()["review_level"] == 2
    assert (await review(ravi, accept=True)).json()["status"] == "accepted"
    actions = [
        (e["actor"], e["action"])
        for e in (await ann.get(f"/v1/tasks/{task['id']}/audit", headers=rita)).json()
        if e["action"] in ("accepted", "rejected")
    ]
    assert actions == [
        ("rita", "accepted"),
        ("ravi", "rejected"),
        ("rita", "accepted"),
        ("ravi", "accepted"),
    ]
