"""The labelling workflow: tasks from dataset versions, leases, submissions, multi-level review
and label commits. Every step writes an audit entry."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Table, and_, case, exists, func, insert
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_annotation.agreement import consensus, match_shapes
from kiln_annotation.label_schema import AnnotationInvalid, LabelSchema, validate_annotation
from kiln_annotation.models import AuditEntry, LabelsCommit, Project, Task, TaskStatus
from kiln_annotation.performance import _LABELS, label_agreement
from kiln_core.auth import issue_token
from kiln_core.catalog import LabelsCommitted
from kiln_core.db import aware, new_id, utcnow
from kiln_core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from kiln_core.manifest import Label, ManifestItem
from kiln_core.service import ServiceRuntime, every

log = logging.getLogger(__name__)

ACTIVE_LEARNING_PRIORITY = 100
TASKS: Table = Task.__table__  # type: ignore[attr-defined]


def audit(
    session: AsyncSession, task: Task, actor: str, action: str, comment: str = "", **detail: Any
) -> None:
    session.add(
        AuditEntry(task_id=task.id, actor=actor, action=action, comment=comment, detail=detail)
    )


def prelabel_acceptance(
    prelabels: dict[str, Any] | None, labels: dict[str, Any]
) -> tuple[int, int]:
    """How many suggested items the annotator kept as suggested (same classes, or shapes
    matching at IoU 0.5 or better): ``(offered, accepted)``."""
    offered = accepted = 0
    for item_id, suggestion in (prelabels or {}).items():
        if item_id not in labels:
            continue
        offered += 1
        if label_agreement(suggestion.get("labels", []), labels[item_id]) >= 0.5:
            accepted += 1
    return offered, accepted


def box_acceptance(prelabels: dict[str, Any] | None, labels: dict[str, Any]) -> tuple[int, int]:
    """Suggested boxes and how many the annotator kept: a submitted box of the same class at
    IoU 0.5 or more, each used once. ``(offered, accepted)`` over the submitted items."""
    offered = accepted = 0
    for item_id, suggestion in (prelabels or {}).items():
        if item_id not in labels:
            continue
        suggested = [
            x for x in _LABELS.validate_python(suggestion.get("labels", [])) if x.type == "box"
        ]
        if not suggested:
            continue
        drawn = [x for x in _LABELS.validate_python(labels[item_id]) if x.type == "box"]
        offered += len(suggested)
        accepted += len(match_shapes(suggested, drawn, 0.5))
    return offered, accepted


@dataclass(frozen=True)
class NewTask:
    """A task :func:`create_tasks` inserted: its id, items and suggestions."""

    id: str
    items: list[dict[str, Any]]
    prelabels: dict[str, Any] | None


Suggest = Callable[[list[dict[str, Any]]], dict[str, Any] | None]


async def create_tasks(
    session: AsyncSession,
    project: Project,
    version: int,
    items: list[ManifestItem],
    *,
    priority: int = 0,
    source: str = "dataset",
    prelabels: Suggest | None = None,
) -> list[NewTask]:
    """One task per batch of items, ``overlap`` copies of each for independent annotators;
    ``prelabels`` gives a batch's suggestions. Inserted as rows in bulk (an ORM object per
    task made 20,000 tasks take 12 s); one microsecond apart, so the queue keeps item order."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    made: list[NewTask] = []
    for start in range(0, len(items), project.batch_size):
        batch = items[start : start + project.batch_size]
        payload = [
            {
                "item_id": i.item_id,
                "blob": i.blob,
                "width": i.width,
                "height": i.height,
                "media_type": i.media_type,
            }
            for i in batch
        ]
        suggested = prelabels(payload) if prelabels else None
        group = new_id()
        for slot in range(project.overlap):
            task_id = new_id()
            rows.append(
                {
                    "id": task_id,
                    "project_id": project.id,
                    "group_id": group,
                    "slot": slot,
                    "dataset_version": version,
                    "items": payload,
                    "priority": priority,
                    "source": source,
                    "status": TaskStatus.queued.value,
                    "review_level": 0,
                    "prelabels": suggested,
                    "created_at": now + timedelta(microseconds=len(rows)),
                    "updated_at": now,
                }
            )
            made.append(NewTask(task_id, payload, suggested))
    if rows:
        await session.execute(insert(TASKS), rows)
    return made


async def get_project(session: AsyncSession, project_id: str) -> Project:
    project = await session.get(Project, project_id)
    if project is None:
        raise NotFound(f"no project {project_id!r}")
    return project


async def get_task(session: AsyncSession, task_id: str, *, lock: bool = False) -> Task:
    query = select(Task).where(Task.id == task_id)
    if lock:
        query = query.with_for_update()
    task = (await session.exec(query)).first()
    if task is None:
        raise NotFound(f"no task {task_id!r}")
    return task


def took_a_copy(annotator: str) -> Any:
    """Whether ``annotator`` holds another copy of a task's items (overlap: one annotator
    never takes two copies of the same items)."""
    sibling: Any = aliased(Task)  # an alias's columns are SQL expressions, not str
    return exists().where(
        sibling.group_id == Task.group_id,
        sibling.id != Task.id,
        sibling.assignee == annotator,
    )


async def lease_next(runtime: ServiceRuntime, project_id: str, annotator: str) -> Task | None:
    """The annotator's current task, or the next one by priority; None when nothing is left.

    Rows are claimed with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (concurrent callers take
    different tasks); SQLite serialises writers in-process. A lease past its expiry is free.
    """
    now = utcnow()
    async with runtime.db.transaction() as session:
        project = await get_project(session, project_id)
        held = (
            await session.exec(
                select(Task)
                .where(
                    Task.project_id == project_id,
                    Task.assignee == annotator,
                    col(Task.status).in_([TaskStatus.leased, TaskStatus.rework]),
                )
                .order_by(col(Task.priority).desc())
            )
        ).all()
        for task in held:
            if task.status == TaskStatus.rework or (
                task.lease_expires_at and aware(task.lease_expires_at) > now
            ):
                task.lease_expires_at = now + timedelta(seconds=project.lease_seconds)
                session.add(task)
                return task
        took_sibling = took_a_copy(annotator)
        order = (col(Task.priority).desc(), col(Task.created_at), col(Task.id))
        # Two index range reads (ix_tasks_queue, ix_tasks_lease_expiry), not one OR that makes
        # the database sort every task of the project: the first waiting task, and the first
        # expired lease; the earlier of the two in queue order is taken.
        queued = (
            select(Task)
            .where(Task.project_id == project_id, Task.status == TaskStatus.queued, ~took_sibling)
            .order_by(*order)
            .limit(1)
        )
        expired = (
            select(Task)
            .where(
                Task.project_id == project_id,
                Task.status == TaskStatus.leased,
                col(Task.lease_expires_at) < now,
                ~took_sibling,
            )
            .order_by(*order)
            .limit(1)
        )
        candidates = []
        for query in (queued, expired):
            if runtime.db.is_postgres:
                query = query.with_for_update(skip_locked=True, of=Task)  # type: ignore[arg-type]
            found = (await session.exec(query)).first()
            if found is not None:
                candidates.append(found)
        if not candidates:
            return None
        free = min(candidates, key=lambda t: (-t.priority, aware(t.created_at), t.id))
        task = free
        previous = task.assignee if task.status == TaskStatus.leased else None
        task.status = TaskStatus.leased
        task.assignee = annotator
        task.lease_expires_at = now + timedelta(seconds=project.lease_seconds)
        task.updated_at = now
        session.add(task)
        audit(
            session,
            task,
            annotator,
            "leased",
            **({"expired_lease_of": previous} if previous else {}),
        )
        return task


def validate_labels(project: Project, task: Task, labels: dict[str, Any]) -> dict[str, Any]:
    """Check submitted labels item by item against the project's schema."""
    schema = LabelSchema.model_validate(project.label_schema)
    sizes = {i["item_id"]: (i.get("width") or 0, i.get("height") or 0) for i in task.items}
    unknown = sorted(set(labels) - set(sizes))
    if unknown:
        raise ValidationFailed(
            f"labels for items not in this task: {unknown[:5]}",
            errors=[{"field": f"labels.{u}", "message": "not in this task"} for u in unknown[:50]],
        )
    out: dict[str, Any] = {}
    errors: list[dict[str, str]] = []
    for item_id, item_labels in labels.items():
        width, height = sizes[item_id]
        try:
            parsed = validate_annotation(schema, item_labels, width, height)
        except AnnotationInvalid as exc:
            errors += [
                {"field": f"labels.{item_id}.{e.field}", "message": e.message} for e in exc.errors
            ]
            continue
        out[item_id] = [label.model_dump(mode="json", exclude_none=True) for label in parsed]
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors=errors)
    return out


async def submit(
    runtime: ServiceRuntime, task_id: str, annotator: str, labels: dict[str, Any]
) -> Task:
    now = utcnow()
    async with runtime.db.transaction() as session:
        task = await get_task(session, task_id, lock=runtime.db.is_postgres)
        project = await get_project(session, task.project_id)
        if task.assignee != annotator:
            raise Forbidden("this task is not leased to you")
        if task.status not in (TaskStatus.leased, TaskStatus.rework):
            raise Conflict(f"task is {task.status}; only a leased task can be submitted")
        if task.status == TaskStatus.leased and (
            task.lease_expires_at is None or aware(task.lease_expires_at) < now
        ):
            raise Conflict("your lease has expired; lease the task again")
        task.labels = validate_labels(project, task, labels)
        # Gold tasks are scored against known labels, never reviewed nor committed.
        reviewed = project.review_levels > 0 and task.source != "gold"
        task.status = TaskStatus.in_review if reviewed else TaskStatus.accepted
        task.review_level = 1 if reviewed else 0
        task.lease_expires_at = None
        task.updated_at = now
        session.add(task)
        offered, accepted = prelabel_acceptance(task.prelabels, task.labels)
        boxes_offered, boxes_accepted = box_acceptance(task.prelabels, task.labels)
        audit(
            session,
            task,
            annotator,
            "submitted",
            items=len(task.labels),
            prelabels_offered=offered,
            prelabels_accepted=accepted,
            prelabel_boxes_offered=boxes_offered,
            prelabel_boxes_accepted=boxes_accepted,
        )
    if task.status == TaskStatus.accepted:
        await commit_if_complete(runtime, task.project_id, task.dataset_version)
    return task


async def review(
    runtime: ServiceRuntime, task_id: str, reviewer: str, accept: bool, comment: str
) -> Task:
    async with runtime.db.transaction() as session:
        task = await get_task(session, task_id, lock=runtime.db.is_postgres)
        project = await get_project(session, task.project_id)
        if task.status != TaskStatus.in_review:
            raise Conflict(f"task is {task.status}; only submitted tasks are reviewed")
        if task.assignee == reviewer:
            raise Forbidden("annotators do not review their own work")
        if task.review_level > 1 and await _accepted_this_round(session, task.id, reviewer):
            # Separation of duties: each review level is a different person's judgement.
            raise Forbidden(
                f"you accepted this task at an earlier review level; level "
                f"{task.review_level} needs another reviewer"
            )
        if not accept and not comment.strip():
            raise ValidationFailed(
                "a rejection needs a comment for the annotator",
                errors=[{"field": "comment", "message": "required"}],
            )
        level = task.review_level
        if accept and level < project.review_levels:
            task.review_level = level + 1
        elif accept:
            task.status = TaskStatus.accepted
        else:
            task.status = TaskStatus.rework  # back to its annotator
            task.review_level = 0
        task.updated_at = utcnow()
        session.add(task)
        audit(session, task, reviewer, "accepted" if accept else "rejected", comment, level=level)
    if task.status == TaskStatus.accepted:
        await commit_if_complete(runtime, task.project_id, task.dataset_version)
    return task


async def _accepted_this_round(session: AsyncSession, task_id: str, reviewer: str) -> bool:
    """Whether ``reviewer`` accepted the task since its annotator last submitted it."""
    submitted = (
        await session.exec(
            select(func.max(AuditEntry.id)).where(
                AuditEntry.task_id == task_id, AuditEntry.action == "submitted"
            )
        )
    ).one()
    accepted = await session.exec(
        select(AuditEntry.id).where(
            AuditEntry.task_id == task_id,
            AuditEntry.action == "accepted",
            AuditEntry.actor == reviewer,
            col(AuditEntry.id) > (submitted or 0),
        )
    )
    return accepted.first() is not None


async def commit_if_complete(runtime: ServiceRuntime, project_id: str, version: int) -> None:
    """Auto-commit once every task of a dataset version is accepted."""
    async with runtime.db.session() as session:
        pending = (
            await session.exec(
                select(Task.id)
                .where(
                    Task.project_id == project_id,
                    Task.dataset_version == version,
                    Task.source != "gold",
                    col(Task.status).not_in([TaskStatus.accepted, TaskStatus.committed]),
                )
                .limit(1)
            )
        ).first()
    if pending is None:
        await commit_labels(runtime, project_id, version, actor="auto")


async def commit_labels(
    runtime: ServiceRuntime, project_id: str, version: int, *, actor: str
) -> LabelsCommit | None:
    """Write accepted labels as a manifest and announce them; None if nothing is accepted."""
    async with runtime.db.transaction() as session:
        project = await get_project(session, project_id)
        query = select(Task).where(
            Task.project_id == project_id,
            Task.dataset_version == version,
            Task.status == TaskStatus.accepted,
            Task.source != "gold",
        )
        if runtime.db.is_postgres:
            query = query.with_for_update()
        tasks = list((await session.exec(query)).all())
        if not tasks:
            return None
        by_item: dict[str, list[list[dict[str, Any]]]] = {}
        for task in sorted(tasks, key=lambda t: (t.group_id, t.slot)):
            for item_id, labels in (task.labels or {}).items():
                by_item.setdefault(item_id, []).append(labels)
        records = [
            {"item_id": item_id, "labels": merge_overlap(project, versions)}
            for item_id, versions in sorted(by_item.items())
        ]
        commit = LabelsCommit(
            project_id=project_id,
            dataset_version=version,
            manifest_key="",
            item_count=len(records),
            task_count=len(tasks),
            created_by=actor,
        )
        commit.manifest_key = f"annotation/commits/{commit.id}.jsonl"
        await runtime.store.put(
            commit.manifest_key, "".join(json.dumps(r) + "\n" for r in records).encode()
        )
        session.add(commit)
        for task in tasks:
            task.status = TaskStatus.committed
            task.commit_id = commit.id
            session.add(task)
            audit(session, task, actor, "committed", commit_id=commit.id)
        names = [label["name"] for label in project.label_schema.get("labels", [])]
        await runtime.emit(
            session,
            LabelsCommitted(
                commit_id=commit.id,
                project_id=project_id,
                team=project.team,
                dataset_id=project.dataset_id,
                base_version=version,
                manifest_key=commit.manifest_key,
                item_count=len(records),
                categories=[{"id": i + 1, "name": n} for i, n in enumerate(names)],
            ),
            subject=project_id,
        )
        return commit


def merge_overlap(project: Project, versions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One label set per item: the only one, or the consensus of overlapping annotators."""
    if len(versions) == 1:
        return versions[0]

    adapter = TypeAdapter(list[Label])
    result = consensus(
        [adapter.validate_python(v) for v in versions],
        project.label_schema.get("kind", "classification"),
        multi_label=bool(project.label_schema.get("multi_label")),
    )
    return [label.model_dump(mode="json", exclude_none=True) for label in result.labels]


SWEEP_INTERVAL_S = 15.0


async def complete_uncommitted_versions(runtime: ServiceRuntime) -> int:
    """Commit every version whose tasks are all accepted but whose labels were never committed:
    a submission or review commits its task first and auto-commits afterwards, so an outage
    between the two would otherwise leave finished work waiting for a manual commit."""
    accepted = func.sum(case((col(Task.status) == TaskStatus.accepted, 1), else_=0))
    open_tasks = func.sum(
        case((col(Task.status).not_in([TaskStatus.accepted, TaskStatus.committed]), 1), else_=0)
    )
    async with runtime.db.session() as session:
        rows = (
            await session.exec(
                select(Task.project_id, Task.dataset_version)
                .where(Task.source != "gold")
                .group_by(col(Task.project_id), col(Task.dataset_version))
                .having(and_(accepted > 0, open_tasks == 0))
            )
        ).all()
    committed = 0
    for project_id, version in rows:
        if await commit_labels(runtime, project_id, version, actor="auto") is not None:
            committed += 1
            log.info(
                "committed labels left uncommitted",
                extra={"project_id": project_id, "dataset_version": version},
            )
    return committed


async def sweep_uncommitted_versions(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
    """The worker: :func:`complete_uncommitted_versions` every :data:`SWEEP_INTERVAL_S`."""
    await every(
        SWEEP_INTERVAL_S,
        stop,
        lambda: complete_uncommitted_versions(runtime),
        "committing finished versions",
    )


async def service_token(runtime: ServiceRuntime, project_id: str) -> str:
    """The annotation service's own token for asking a project's team's endpoints (it may
    call them, as the team's viewer, and change nothing)."""
    async with runtime.db.session() as session:
        project = await get_project(session, project_id)
    return issue_token(
        "svc:annotation", ["ml-engineer"], runtime.settings, teams={project.team: "viewer"}
    )
