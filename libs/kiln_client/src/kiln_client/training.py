"""Training: templates, submit, ``watch()`` (progress and status events from the job's event
stream), wait, pause / resume / cancel, evaluation."""

from __future__ import annotations

import asyncio
import builtins
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from kiln_client.errors import ConnectionFailed, JobFailed, TimedOut
from kiln_client.transport import Transport
from kiln_client.types import Job

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Progress:
    """A metric point the run stored (every few steps, and each epoch's evaluation)."""

    step: int
    epoch: int
    metrics: dict[str, float]
    kind: str = ""
    at: str = ""


@dataclass(frozen=True)
class Status:
    """The job changed state (the last one a watch yields is its final state)."""

    status: str
    step: int = 0
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


JobEvent = Progress | Status


async def server_sent_events(
    lines: AsyncIterator[str],
) -> AsyncIterator[tuple[str, str, str | None]]:
    """(event, data, id) for each event of a ``text/event-stream``."""
    event, event_id = "message", None
    data: builtins.list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data), event_id
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


class Training:
    """``client.training``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def templates(self) -> builtins.list[dict[str, Any]]:
        return await self._t.json("training", "GET", "/v1/templates")  # type: ignore[no-any-return]

    async def template(self, name: str) -> dict[str, Any]:
        return await self._t.json("training", "GET", f"/v1/templates/{name}")  # type: ignore[no-any-return]

    async def ensure_team(self, name: str, weight: float = 1.0) -> None:
        """Create a scheduling team unless it exists."""
        await self._t.request(
            "training", "POST", "/v1/teams", json={"name": name, "weight": weight}, ok=(409,)
        )

    async def submit(
        self,
        template: str,
        dataset_id: str,
        *,
        team: str,
        version: int | None = None,
        params: dict[str, Any] | None = None,
        model_name: str | None = None,
        seed: int = 0,
        train_split: str = "train",
        eval_split: str = "val",
        **fields: Any,
    ) -> Job:
        dataset: dict[str, Any] = {
            "dataset_id": dataset_id,
            "train_split": train_split,
            "eval_split": eval_split,
        }
        if version is not None:
            dataset["version"] = version
        body = {
            "template": template,
            "team": team,
            "params": params or {},
            "seed": seed,
            "dataset": dataset,
            **fields,
        }
        if model_name:
            body["model_name"] = model_name
        return await self._t.json("training", "POST", "/v1/jobs", json=body)  # type: ignore[no-any-return]

    async def create_trigger(
        self, name: str, dataset_id: str, job: dict[str, Any], **fields: Any
    ) -> dict[str, Any]:
        """A rule: each new labelled version of ``dataset_id`` submits ``job`` on it."""
        body = {"name": name, "dataset_id": dataset_id, "job": job, **fields}
        return await self._t.json("training", "POST", "/v1/triggers", json=body)  # type: ignore[no-any-return]

    async def get(self, job_id: str) -> Job:
        return await self._t.json("training", "GET", f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    async def list(self, limit: int = 100, **filters: Any) -> builtins.list[Job]:
        page = await self._t.json("training", "GET", "/v1/jobs", params={"limit": limit, **filters})
        return page["items"]  # type: ignore[no-any-return]

    async def pause(self, job_id: str) -> Job:
        # Asking twice for the same state is harmless, so these may be retried.
        path = f"/v1/jobs/{job_id}/pause"
        return await self._t.json("training", "POST", path, idempotent=True)  # type: ignore[no-any-return]

    async def resume(self, job_id: str) -> Job:
        path = f"/v1/jobs/{job_id}/resume"
        return await self._t.json("training", "POST", path, idempotent=True)  # type: ignore[no-any-return]

    async def cancel(self, job_id: str) -> Job:
        path = f"/v1/jobs/{job_id}/cancel"
        return await self._t.json("training", "POST", path, idempotent=True)  # type: ignore[no-any-return]

    async def metrics(self, job_id: str) -> builtins.list[dict[str, Any]]:
        return await self._t.json("training", "GET", f"/v1/jobs/{job_id}/metrics")  # type: ignore[no-any-return]

    async def evaluation(self, job_id: str) -> dict[str, Any]:
        """The finished run's evaluation: metrics, per-class figures, confusion matrix."""
        return await self._t.json("training", "GET", f"/v1/jobs/{job_id}/evaluation")  # type: ignore[no-any-return]

    async def watch(self, job_id: str, *, reconnects: int = 20) -> AsyncIterator[JobEvent]:
        """The job's events as they happen, ending after its final :class:`Status`. A dropped
        stream is reopened where it stopped (``Last-Event-ID``), so no point is repeated."""
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"last-event-id": last_id} if last_id else {}
            try:
                async with self._t.stream(
                    "training",
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    headers=headers,
                    timeout=httpx.Timeout(self._t.settings.timeout_s, read=None),
                ) as response:
                    async for event, data, event_id in server_sent_events(response.aiter_lines()):
                        failures = 0
                        body = json.loads(data)
                        if event == "progress":
                            last_id = event_id or last_id
                            yield Progress(
                                step=int(body.get("step", 0)),
                                epoch=int(body.get("epoch", 0)),
                                metrics=dict(body.get("metrics") or {}),
                                kind=str(body.get("kind", "")),
                                at=str(body.get("at", "")),
                            )
                        elif event == "status":
                            status = Status(
                                status=str(body["status"]),
                                step=int(body.get("step") or 0),
                                epoch=int(body.get("epoch") or 0),
                                metrics=dict(body.get("metrics") or {}),
                            )
                            yield status
                            if status.finished:
                                return
            except (httpx.TransportError, ConnectionFailed):
                failures += 1
                if failures > reconnects:
                    raise
                await asyncio.sleep(min(0.2 * 2**failures, 5.0))
                continue
            # The stream ended without a final status (a server restart): look, then reopen.
            job = await self.get(job_id)
            if job.get("status") in FINISHED:
                yield Status(
                    status=str(job["status"]),
                    step=int(job.get("step") or 0),
                    epoch=int(job.get("epoch") or 0),
                    metrics=dict(job.get("metrics") or {}),
                )
                return

    async def wait(
        self, job_id: str, *, timeout_s: float = 3600, raise_on_failure: bool = True
    ) -> Job:
        """Follow the job to its end; returns its final state (a failure raises
        :class:`JobFailed` unless ``raise_on_failure`` is False)."""
        deadline = time.monotonic() + timeout_s

        async def follow() -> None:
            async for _ in self.watch(job_id):
                pass

        try:
            await asyncio.wait_for(follow(), timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise TimedOut(f"training job {job_id} did not finish in {timeout_s}s") from None
        job = await self.get(job_id)
        if raise_on_failure and job.get("status") != "succeeded":
            raise JobFailed(f"training job {job_id}", dict(job))
        return job
