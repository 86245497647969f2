"""Load scripts: they keep work flowing into the services while a fault is injected and record
exactly which requests got a success answer, so every one of them can be looked for afterwards."""

from __future__ import annotations

import asyncio
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from kiln_core.storage import blob_key
from tests.faults.harness import Counts, Stack

CLIENT_TIMEOUT_S = 5.0


def tiny_png() -> bytes:
    """A random 8x8 PNG: every upload is new content, so its bytes must really be written to
    the object store (a blob stored by an earlier scenario would be skipped)."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (8, 8), os.urandom(8 * 8 * 3)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class PingLoad:
    """Pings sent from one service's API; each 2xx answer's ping id must reach every consumer.

    A ping is not idempotent (every request makes a new one), so a failed request is not
    retried: it is simply not accepted work."""

    base_url: str
    tag: str
    interval_s: float = 0.02
    accepted: dict[str, str] = field(default_factory=dict)  # ping id -> event id
    failed: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=CLIENT_TIMEOUT_S) as client:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    response = await client.post("/v1/pings", json={"message": f"{self.tag}:{n}"})
                except httpx.HTTPError:
                    self.failed += 1
                else:
                    if response.status_code == 202:
                        body = response.json()
                        self.accepted[body["ping_id"]] = body["event_id"]
                    else:
                        self.failed += 1
                await asyncio.sleep(self.interval_s)

    async def check(self, stack: Stack, origin: str, consumers: list[str]) -> list[Counts]:
        """Counts per consumer, plus the origin's outbox (one row per event, all published)."""
        rows: list[Counts] = []
        ids = list(self.accepted)
        outbox = await stack.fetch(
            f'SELECT event_id, published_at, publish_count FROM "{stack.schema(origin)}".outbox '
            "WHERE event_id = ANY($1::text[])",
            list(self.accepted.values()),
        )
        by_event: dict[str, int] = {}
        for row in outbox:
            by_event[row["event_id"]] = by_event.get(row["event_id"], 0) + 1
        unpublished = sum(1 for row in outbox if row["published_at"] is None)
        republished = sum(1 for row in outbox if row["publish_count"] > 1)
        rows.append(
            Counts(
                scenario=self.tag,
                kind=f"{origin} outbox events",
                accepted=len(ids),
                present=len(by_event),
                duplicated=sum(c - 1 for c in by_event.values()),
                lost=len(set(self.accepted.values()) - set(by_event)) + unpublished,
                notes=f"failed requests {self.failed}; published more than once {republished}",
            )
        )
        for consumer in consumers:
            found = await stack.fetch(
                f'SELECT ping_id, count(*) AS n FROM "{stack.schema(consumer)}".ping_received '
                "WHERE ping_id = ANY($1::text[]) GROUP BY ping_id",
                ids,
            )
            counts = {row["ping_id"]: row["n"] for row in found}
            rows.append(
                Counts(
                    scenario=self.tag,
                    kind=f"pings applied by {consumer}",
                    accepted=len(ids),
                    present=len(counts),
                    duplicated=sum(n - 1 for n in counts.values()),
                    lost=len(set(ids) - set(counts)),
                )
            )
        return rows

    async def delivered(self, stack: Stack, consumers: list[str]) -> bool:
        """True once every accepted ping is recorded by every consumer."""
        import asyncpg

        for consumer in consumers:
            try:
                found = await stack.fetch(
                    "SELECT count(DISTINCT ping_id) AS n "
                    f'FROM "{stack.schema(consumer)}".ping_received WHERE ping_id = ANY($1::text[])',
                    list(self.accepted),
                )
            except asyncpg.UndefinedTableError:
                return False  # the consumer has not migrated its schema yet
            if found[0]["n"] < len(self.accepted):
                return False
        return True


@dataclass
class UploadLoad:
    """Image uploads into one draft, one file per request. A request without a success answer
    is retried with the same file name (an upload of a name replaces it, so a retry can never
    add a second copy) until it succeeds or the load stops."""

    stack: Stack
    dataset_id: str
    draft_id: str
    tag: str
    interval_s: float = 0.02
    accepted: dict[str, str] = field(default_factory=dict)  # item id -> blob sha256
    failed: int = 0
    retried_ok: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        url = f"/v1/datasets/{self.dataset_id}/drafts/{self.draft_id}/items"
        async with httpx.AsyncClient(
            base_url=self.stack.url("dataset"), timeout=CLIENT_TIMEOUT_S
        ) as client:
            n = 0
            while not stop.is_set():
                n += 1
                name = f"{self.tag}-{n:05d}.png"
                data = tiny_png()
                attempts = 0
                while not stop.is_set():
                    attempts += 1
                    try:
                        response = await client.post(
                            url,
                            files={"files": (name, data, "image/png")},
                            data={"labels": json.dumps({name: "dot"})},
                        )
                    except httpx.HTTPError:
                        response = None
                    if response is not None and response.status_code == 200:
                        for item in response.json()["accepted"]:
                            self.accepted[item["item_id"]] = item["blob"]
                        self.retried_ok += attempts > 1
                        break
                    self.failed += 1
                    await asyncio.sleep(0.2)
                await asyncio.sleep(self.interval_s)

    async def check(self, kind: str = "uploads") -> Counts:
        """Each accepted file is a draft item with the answered blob, and that blob's bytes
        are in the object store."""
        rows = await self.stack.fetch(
            f"SELECT item_id, blob, count(*) OVER (PARTITION BY item_id) AS n FROM "
            f'"{self.stack.schema("dataset")}".draft_items WHERE draft_id = $1',
            self.draft_id,
        )
        found = {row["item_id"]: row["blob"] for row in rows}
        duplicated = sum(1 for row in rows if row["n"] > 1)
        missing = {i for i, blob in self.accepted.items() if found.get(i) != blob}
        stored = await self.stored_blobs({found[i] for i in self.accepted if i in found})
        missing |= {i for i in self.accepted if i in found and found[i] not in stored}
        return Counts(
            scenario=self.tag,
            kind=kind,
            accepted=len(self.accepted),
            present=len(self.accepted) - len(missing),
            duplicated=duplicated,
            lost=len(missing),
            notes=f"failed attempts {self.failed}; succeeded on retry {self.retried_ok}",
        )

    async def stored_blobs(self, blobs: set[str]) -> set[str]:
        """The blobs among ``blobs`` whose bytes the object store really holds."""
        from minio import Minio

        from kiln_cli.infra import HOST, MINIO_BUCKET, MINIO_PASSWORD, MINIO_USER
        from tests.faults.harness import LAYOUT

        client = Minio(
            f"{HOST}:{LAYOUT.minio_port}",
            access_key=MINIO_USER,
            secret_key=MINIO_PASSWORD,
            secure=False,
        )
        keys = {
            obj.object_name
            for obj in await asyncio.to_thread(
                lambda: list(client.list_objects(MINIO_BUCKET, prefix="blobs/", recursive=True))
            )
        }
        return {b for b in blobs if blob_key(b) in keys}


LABEL = [{"type": "class", "label": "dot"}]


def names(labels: dict[str, Any]) -> dict[str, list[Any]]:
    return {item: [label.get("label") for label in ls] for item, ls in labels.items()}


@dataclass
class AnnotationLoad:
    """One annotator working through a project's queue: lease the next task, submit its
    labels. A submission without an answer is sent again; if that finds the task already
    accepted, the task is read back and counts as accepted only if it holds our labels."""

    stack: Stack
    project_id: str
    tag: str
    accepted: set[str] = field(default_factory=set)  # task ids
    failed: int = 0
    confirmed_on_retry: int = 0
    queue_empty: bool = False
    pending: dict[str, Any] | None = None  # the task whose submission has no answer yet
    refused: list[int] = field(default_factory=list)  # 4xx answers to submissions

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(
            base_url=self.stack.url("annotation"), timeout=CLIENT_TIMEOUT_S
        ) as client:
            while not stop.is_set() and not self.queue_empty:
                # A submission cut short by the last stop is finished first.
                task = self.pending or await self._lease(client, stop)
                if task is None:
                    continue
                self.pending = task
                if await self._submit(client, task, stop):
                    self.pending = None

    async def _lease(self, client: httpx.AsyncClient, stop: asyncio.Event) -> dict[str, Any] | None:
        try:
            response = await client.post(f"/v1/projects/{self.project_id}/lease")
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 204:
            self.queue_empty = True
            return None
        if response is None or response.status_code != 200:
            self.failed += 1
            await asyncio.sleep(0.2)
            return None
        return response.json()  # type: ignore[no-any-return]

    async def _submit(
        self, client: httpx.AsyncClient, task: dict[str, Any], stop: asyncio.Event
    ) -> bool:
        """Submit until the task is answered for; False if stopped before that."""
        labels = {entry["item_id"]: LABEL for entry in task["items"]}
        while not stop.is_set():
            tried_before = task.get("tried", False)
            task["tried"] = True
            try:
                response = await client.post(
                    f"/v1/tasks/{task['id']}/submission", json={"labels": labels}
                )
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                self.accepted.add(task["id"])
                return True
            if response is not None and response.status_code == 409 and tried_before:
                # An earlier attempt may have been applied before its answer was lost.
                if await self._holds(client, task["id"], labels, stop):
                    self.accepted.add(task["id"])
                    self.confirmed_on_retry += 1
                else:
                    self.refused.append(409)
                return True
            if response is not None and response.status_code < 500:
                self.refused.append(response.status_code)
                return True  # refused outright: not accepted work, nothing to retry
            self.failed += 1
            await asyncio.sleep(0.2)
        return False

    async def _holds(
        self,
        client: httpx.AsyncClient,
        task_id: str,
        labels: dict[str, list[dict[str, str]]],
        stop: asyncio.Event,
    ) -> bool:
        """Read the task back (retrying while the service cannot answer): has it our labels?"""
        while not stop.is_set():
            try:
                current = await client.get(f"/v1/tasks/{task_id}")
            except httpx.HTTPError:
                current = None
            if current is not None and current.status_code == 200:
                # Compared by label name: the service stores labels in their normalised form.
                stored = current.json()["labels"] or {}
                return names(stored) == names(labels)
            await asyncio.sleep(0.2)
        return False

    async def check(self, version: int) -> list[Counts]:
        """Each accepted task holds our labels and was submitted once; the finished version's
        labels were committed exactly once."""
        schema = self.stack.schema("annotation")
        tasks = await self.stack.fetch(
            f'SELECT id, status, labels FROM "{schema}".tasks WHERE project_id = $1',
            self.project_id,
        )
        done = {
            row["id"]
            for row in tasks
            if row["status"] in ("accepted", "committed") and row["labels"] is not None
        }
        submitted = await self.stack.fetch(
            f'SELECT task_id, count(*) AS n FROM "{schema}".audit '
            "WHERE action = 'submitted' AND task_id = ANY($1::text[]) GROUP BY task_id",
            [row["id"] for row in tasks],
        )
        commits = await self.stack.fetch(
            f'SELECT count(*) AS n FROM "{schema}".commits '
            "WHERE project_id = $1 AND dataset_version = $2",
            self.project_id,
            version,
        )
        all_done = len(done) == len(tasks)
        return [
            Counts(
                scenario=self.tag,
                kind="annotation submissions",
                accepted=len(self.accepted),
                present=len(self.accepted & done),
                duplicated=sum(row["n"] - 1 for row in submitted),
                lost=len(self.accepted - done),
                notes=f"failed attempts {self.failed}; "
                f"confirmed on retry {self.confirmed_on_retry}; refused {self.refused}; "
                f"tasks {len(tasks)}",
            ),
            Counts(
                scenario=self.tag,
                kind="labels commit of the version",
                accepted=1 if all_done else 0,
                present=min(commits[0]["n"], 1),
                duplicated=max(commits[0]["n"] - 1, 0),
                lost=1 if all_done and not commits[0]["n"] else 0,
                notes="auto-commit once every task is accepted",
            ),
        ]
