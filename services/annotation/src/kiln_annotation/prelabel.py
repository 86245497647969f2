"""Pre-labelling: a served model suggests labels for a project's waiting tasks.

A Celery job reads each waiting task's images from the object store, asks the serving
service's ``:predict`` for a batch at a time, and stores the answers on the tasks as
suggestions with their confidence. Annotators accept or correct them; how often they accept
is counted at submission (:func:`kiln_annotation.workflow.prelabel_acceptance`).
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import httpx
from sqlmodel import col, select

from kiln_annotation.models import AuditEntry, PrelabelJob, Project, Task, TaskStatus
from kiln_annotation.workflow import service_token
from kiln_core.db import utcnow
from kiln_core.errors import DependencyUnavailable
from kiln_core.jobs import Progress
from kiln_core.service import ServiceRuntime
from kiln_core.storage import blob_key

log = logging.getLogger(__name__)

BATCH = 16  # images per :predict call


def model_source(model_name: Any, version: Any) -> str:
    return f"model:{model_name}@v{version}"


def class_suggestion(label: Any, confidence: Any, source: str) -> dict[str, Any]:
    """A model's class guess as a task's pre-label: what annotators see and acceptance is
    measured against."""
    return {
        "labels": [{"type": "class", "label": str(label)}],
        "confidence": confidence,
        "source": source,
    }


def box_suggestion(boxes: list[Any], confidence: Any, source: str) -> dict[str, Any]:
    """A detector's boxes (``{label, score, bbox [x, y, w, h]}``) as a task's pre-label; an
    annotator's box of the same class at IoU 0.5 or more counts as accepting it."""
    labels = [
        {
            "type": "box",
            "label": str(box["label"]),
            "bbox": [float(v) for v in box["bbox"]],
            "score": min(max(float(box.get("score", 0.0)), 0.0), 1.0),
        }
        for box in boxes
        if isinstance(box, dict) and "label" in box and len(box.get("bbox") or []) == 4
    ]
    return {"labels": labels, "confidence": confidence, "source": source}


async def prelabel(runtime: ServiceRuntime, job: PrelabelJob, _progress: Progress) -> None:
    """Run a pre-labelling job (claimed by :func:`kiln_core.jobs.run_job`); a redelivered job
    only fills tasks still without suggestions."""
    async with runtime.db.transaction() as session:
        tasks = (
            await session.exec(
                select(Task)
                .where(
                    Task.project_id == job.project_id,
                    col(Task.status).in_([TaskStatus.queued, TaskStatus.leased]),
                )
                .order_by(col(Task.priority).desc(), col(Task.created_at))
            )
        ).all()
        # Filtered here: an empty JSON column may be SQL NULL or JSON null.
        tasks = [t for t in tasks if not t.prelabels]
        claimed = await session.get(PrelabelJob, job.id)
        if claimed is not None:
            claimed.total = sum(len(t.items) for t in tasks)
            session.add(claimed)
    endpoint, job_id = job.endpoint, job.id
    token = await service_token(runtime, job.project_id)
    async with httpx.AsyncClient(
        base_url=runtime.settings.serving_url,
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    ) as client:
        done = failed = 0
        last = 0.0
        for task in tasks:
            suggestions, misses = await _suggest(runtime, client, endpoint, task.items)
            failed += misses
            done += len(task.items)
            async with runtime.db.transaction() as session:
                row = await session.get(Task, task.id)
                # Only tasks nobody has labelled yet take suggestions.
                if row is not None and not row.prelabels and not row.labels:
                    row.prelabels = suggestions or None
                    row.updated_at = utcnow()
                    session.add(row)
                    if suggestions:
                        session.add(
                            AuditEntry(
                                task_id=row.id,
                                actor=f"model:{endpoint}",
                                action="prelabelled",
                                detail={"items": len(suggestions), "job_id": job_id},
                            )
                        )
                if time.monotonic() - last > 0.25 or task is tasks[-1]:
                    last = time.monotonic()
                    progress = await session.get(PrelabelJob, job_id)
                    if progress is not None:
                        progress.done, progress.failed_items = done, failed
                        progress.updated_at = utcnow()
                        session.add(progress)
    async with runtime.db.transaction() as session:
        final = await session.get(PrelabelJob, job_id)
        if final is not None:
            final.record_success({}, "")
            final.done, final.failed_items = done, failed
            session.add(final)


async def _suggest(
    runtime: ServiceRuntime, client: httpx.AsyncClient, endpoint: str, items: list[dict[str, Any]]
) -> tuple[dict[str, Any], int]:
    """Suggestions for a task's items (by item id) and how many items got none."""
    suggestions: dict[str, Any] = {}
    misses = 0
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        images = [await runtime.store.read_bytes(blob_key(i["blob"])) for i in batch]
        try:
            response = await client.post(
                f"/v1/endpoints/{endpoint}:predict",
                json={"inputs": [base64.b64encode(b).decode() for b in images]},
            )
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"the serving service is unreachable: {exc}") from None
        if response.status_code in (404, 503):
            raise DependencyUnavailable(
                f"endpoint {endpoint!r} cannot predict ({response.status_code}): "
                f"{response.text[:300]}"
            )
        if response.status_code != 200:
            misses += len(batch)  # e.g. an image the model cannot take; the rest goes on
            continue
        answer = response.json()
        source = model_source(answer.get("model_name"), answer.get("version"))
        for item, prediction in zip(batch, answer.get("predictions", []), strict=False):
            if "detections" in prediction:  # a detector: its boxes, even none
                suggestions[item["item_id"]] = box_suggestion(
                    prediction["detections"], prediction.get("confidence"), source
                )
                continue
            suggestions[item["item_id"]] = class_suggestion(
                prediction["label"], prediction.get("confidence"), source
            )
    return suggestions, misses


async def acceptance(runtime: ServiceRuntime, project_id: str) -> dict[str, Any]:
    """Pre-label acceptance of a project, from each task's latest submission."""
    async with runtime.db.session() as session:
        project = await session.get(Project, project_id)
        entries = (
            await session.exec(
                select(AuditEntry)
                .join(Task, col(Task.id) == col(AuditEntry.task_id))
                .where(Task.project_id == project_id, AuditEntry.action == "submitted")
                .order_by(col(AuditEntry.at))
            )
        ).all()
    latest = {e.task_id: e.detail for e in entries}
    offered = sum(int(d.get("prelabels_offered", 0)) for d in latest.values())
    accepted = sum(int(d.get("prelabels_accepted", 0)) for d in latest.values())
    boxes = sum(int(d.get("prelabel_boxes_offered", 0)) for d in latest.values())
    kept = sum(int(d.get("prelabel_boxes_accepted", 0)) for d in latest.values())
    return {
        # Detectors' suggestions box by box: kept = drawn again at IoU >= 0.5, same class.
        "boxes_offered": boxes,
        "boxes_accepted": kept,
        "box_acceptance_rate": round(kept / boxes, 4) if boxes else None,
        "project_id": project_id,
        "endpoint": project.prelabel_endpoint if project else None,
        "offered": offered,
        "accepted": accepted,
        "acceptance_rate": round(accepted / offered, 4) if offered else None,
    }
