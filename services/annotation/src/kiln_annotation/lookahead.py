"""Which items an annotator will most likely get next, so the workspace can fetch their images
while the current task is being labelled: "submit" then shows the next task at once.

A hint, not a lease: the task is the queue's head after the one just leased (by the lease's
own order), read without locking it; another annotator may take it first, which costs a
wasted prefetch and nothing else."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from kiln_annotation.models import Task, TaskStatus
from kiln_annotation.workflow import took_a_copy
from kiln_core.service import ServiceRuntime


async def up_next(runtime: ServiceRuntime, leased: Task, annotator: str) -> list[dict[str, Any]]:
    query = (
        select(Task.items)
        .where(
            Task.project_id == leased.project_id,
            Task.status == TaskStatus.queued,
            Task.id != leased.id,
            Task.group_id != leased.group_id,
            ~took_a_copy(annotator),
        )
        .order_by(col(Task.priority).desc(), col(Task.created_at), col(Task.id))
        .limit(1)
    )
    async with runtime.db.session() as session:
        items = (await session.exec(query)).first()
    return list(items or [])
