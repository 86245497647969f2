"""Annotator performance: throughput, acceptance rate, agreement with overlapping annotators,
and accuracy on hidden gold tasks whose labels are known."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_annotation.agreement import shape_agreement
from kiln_annotation.models import AuditEntry, Task
from kiln_core.db import aware
from kiln_core.manifest import Label

_LABELS = TypeAdapter(list[Label])


def label_agreement(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    """1.0 for the same classes; shape agreement (matched IoU) for drawn shapes."""
    left, right = _LABELS.validate_python(a), _LABELS.validate_python(b)
    if all(x.type == "class" for x in left + right):
        return 1.0 if sorted(x.label for x in left) == sorted(x.label for x in right) else 0.0
    shapes_a = [x for x in left if x.type in ("box", "polygon", "mask")]
    shapes_b = [x for x in right if x.type in ("box", "polygon", "mask")]
    return float(shape_agreement(shapes_a, shapes_b))


async def annotator_statistics(session: AsyncSession, project_id: str) -> list[dict[str, Any]]:
    tasks = {
        t.id: t
        for t in (await session.exec(select(Task).where(Task.project_id == project_id))).all()
    }
    if not tasks:
        return []
    events = (
        await session.exec(
            select(AuditEntry)
            .where(col(AuditEntry.task_id).in_(list(tasks)))
            .order_by(col(AuditEntry.id))
        )
    ).all()
    submitted: dict[str, list[Any]] = defaultdict(list)
    verdicts: dict[str, list[bool]] = defaultdict(list)
    for event in events:
        task = tasks[event.task_id]
        if event.action == "submitted":
            submitted[event.actor].append(aware(event.at))
        elif event.action in ("accepted", "rejected") and task.assignee:
            verdicts[task.assignee].append(event.action == "accepted")
    gold: dict[str, list[float]] = defaultdict(list)
    agreement: dict[str, list[float]] = defaultdict(list)
    for task in tasks.values():
        if task.assignee and task.labels and task.gold_labels:
            for item_id, truth in task.gold_labels.items():
                gold[task.assignee].append(label_agreement(task.labels.get(item_id, []), truth))
    for members in _overlap_groups(tasks.values()).values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                for item_id in set(a.labels or {}) & set(b.labels or {}):
                    score = label_agreement(a.labels[item_id], b.labels[item_id])  # type: ignore[index]
                    agreement[a.assignee or ""].append(score)
                    agreement[b.assignee or ""].append(score)
    people = sorted(set(submitted) | set(verdicts) | set(gold))
    out = []
    for person in people:
        times = sorted(submitted.get(person, []))
        hours = (times[-1] - times[0]).total_seconds() / 3600 if len(times) > 1 else 0.0
        out.append(
            {
                "annotator": person,
                "submissions": len(times),
                "tasks_per_hour": round(len(times) / hours, 2) if hours > 0 else None,
                "reviews": len(verdicts.get(person, [])),
                "acceptance_rate": _mean([1.0 if v else 0.0 for v in verdicts.get(person, [])]),
                "agreement": _mean(agreement.get(person, [])),
                "gold_tasks": len(gold.get(person, [])),
                "gold_accuracy": _mean(gold.get(person, [])),
            }
        )
    return out


def _overlap_groups(tasks: Iterable[Task]) -> dict[str, list[Task]]:
    """Labelled, non-gold tasks by overlap group (copies of the same items for several people)."""
    groups: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        if task.assignee and task.labels and not task.gold_labels:
            groups[task.group_id].append(task)
    return groups


async def overlapping_annotations(session: AsyncSession, project_id: str) -> list[dict[str, Any]]:
    """Each overlap group labelled by two or more annotators: their labels side by side per
    item and the mean pairwise agreement (as in :func:`annotator_statistics`), least first."""
    tasks = (await session.exec(select(Task).where(Task.project_id == project_id))).all()
    out = []
    for group_id, members in _overlap_groups(tasks).items():
        if len(members) < 2:
            continue
        scores = [
            label_agreement((a.labels or {}).get(item_id, []), (b.labels or {}).get(item_id, []))
            for i, a in enumerate(members)
            for b in members[i + 1 :]
            for item_id in set(a.labels or {}) & set(b.labels or {})
        ]
        out.append(
            {
                "group_id": group_id,
                "items": members[0].items,
                "agreement": _mean(scores),
                "annotations": [
                    {
                        "task_id": t.id,
                        "annotator": t.assignee,
                        "status": t.status,
                        "labels": t.labels,
                    }
                    for t in sorted(members, key=lambda t: t.assignee or "")
                ],
            }
        )
    return sorted(out, key=lambda g: (g["agreement"] is None, g["agreement"] or 0.0))


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
