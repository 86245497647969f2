"""Annotators see and touch only their own tasks: another annotator's leased task is absent
from their listings and cannot be read, audited or submitted by them."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
from PIL import Image

from tests.security.conftest import Stack

SCHEMA = {"kind": "boxes", "labels": [{"name": "scratch"}]}


def png(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (shade, shade, shade)).save(buf, format="PNG")
    return buf.getvalue()


def labelling_project(stack: Stack, images: int) -> str:
    """A committed dataset version of ``images`` images and a project whose tasks are queued."""
    tag = uuid.uuid4().hex[:8]
    with (
        stack.client("dataset", "dora", "data-engineer") as data,
        stack.client("annotation", "dora", "data-engineer") as ann,
    ):
        r = data.post("/v1/datasets", json={"name": f"iso-{tag}", "task_type": "detection"})
        assert r.status_code == 201, r.text
        ds = r.json()["id"]
        r = ann.post(
            "/v1/projects", json={"name": f"iso-{tag}", "dataset_id": ds, "label_schema": SCHEMA}
        )
        assert r.status_code == 201, r.text
        project = r.json()["id"]
        draft = data.post(f"/v1/datasets/{ds}/drafts", json={}).json()["id"]
        files = [("files", (f"img{i}.png", png(i * 20), "image/png")) for i in range(images)]
        r = data.post(
            f"/v1/datasets/{ds}/drafts/{draft}/items",
            files=files,
            data={"labels": json.dumps({})},
        )
        assert r.status_code == 200, r.text
        r = data.post(f"/v1/datasets/{ds}/drafts/{draft}/commit", json={"message": "m"})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        while ann.get(f"/v1/projects/{project}").json()["task_counts"].get("queued") != images:
            assert time.monotonic() < deadline, "tasks were not created from the version"
            time.sleep(0.2)
    return project


@pytest.mark.integration
def test_annotators_cannot_see_or_touch_each_others_tasks(stack: Stack) -> None:
    project = labelling_project(stack, images=3)
    with (
        stack.client("annotation", "alice", "annotator") as alice,
        stack.client("annotation", "bob", "annotator") as bob,
        stack.client("annotation", "vera", "viewer") as viewer,
    ):
        mine = alice.post(f"/v1/projects/{project}/lease")
        assert mine.status_code == 200, mine.text
        task: dict[str, Any] = mine.json()
        theirs = bob.post(f"/v1/projects/{project}/lease").json()
        assert theirs["id"] != task["id"]

        # Listings: each sees only their own task, whatever the filters say.
        for query in ({}, {"status": "leased"}, {"limit": 500}):
            listed = bob.get(f"/v1/projects/{project}/tasks", params=query).json()
            assert [t["id"] for t in listed["items"]] == [theirs["id"]], query
            assert listed["total"] == 1
        # The task itself, its audit trail, a submission: as if it did not exist or refused.
        read = bob.get(f"/v1/tasks/{task['id']}")
        assert read.status_code == 404
        assert read.headers["content-type"].startswith("application/problem+json")
        audit = bob.get(f"/v1/tasks/{task['id']}/audit")
        assert audit.status_code in (403, 404), audit.text
        item = task["items"][0]["item_id"]
        labels = {item: [{"type": "box", "label": "scratch", "bbox": [1, 1, 5, 5]}]}
        stolen = bob.post(f"/v1/tasks/{task['id']}/submission", json={"labels": labels})
        assert stolen.status_code == 403, stolen.text
        assert stolen.headers["content-type"].startswith("application/problem+json")
        # Nothing changed: alice's task is still hers, leased, unlabelled.
        after = alice.get(f"/v1/tasks/{task['id']}").json()
        assert (after["assignee"], after["status"], after["labels"]) == ("alice", "leased", None)
        # Alice can still do her own work, and people who oversee annotators see both tasks.
        done = alice.post(f"/v1/tasks/{task['id']}/submission", json={"labels": labels})
        assert done.status_code == 200, done.text
        overseen = viewer.get(f"/v1/projects/{project}/tasks").json()
        assert {task["id"], theirs["id"]} <= {t["id"] for t in overseen["items"]}
        # Per-annotator statistics are not for annotators.
        assert bob.get(f"/v1/projects/{project}/annotators").status_code == 403
