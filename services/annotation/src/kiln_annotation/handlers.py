"""What the annotation service does when other services' events arrive."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_annotation.models import Project, ProjectItem
from kiln_annotation.prelabel import box_suggestion, class_suggestion, model_source
from kiln_annotation.workflow import create_tasks
from kiln_core.catalog import DatasetVersionCreated
from kiln_core.events import CloudEvent
from kiln_core.inbox import EventHandler
from kiln_core.manifest import ManifestItem, read_manifest
from kiln_core.membership import membership_handlers
from kiln_core.ping import ping_handlers
from kiln_core.service import runtime_of

PROJECT_ITEMS: Table = ProjectItem.__table__  # type: ignore[attr-defined]
ACTIVE_LEARNING_PRIORITY = 100  # flagged inputs are labelled before anything else


async def on_version_created(
    session: AsyncSession, event: CloudEvent, data: DatasetVersionCreated
) -> None:
    """A new dataset version: auto-annotation projects on that dataset get tasks for its
    unlabelled items they have not tasked yet. Versions made from our own label commits are
    skipped (no loop). Inputs added by active learning come first, with the model's
    prediction attached as a suggestion."""
    if data.lineage.source == "labels":
        return
    projects = (
        await session.exec(
            select(Project).where(
                Project.dataset_id == data.dataset_id,
                Project.auto_annotate,
                Project.team == data.team,  # another team's project on a shared dataset: no tasks
            )
        )
    ).all()
    if not projects:
        return
    items = [
        i for i in await read_manifest(runtime_of(session).store, data.manifest_key) if not i.labels
    ]
    active = data.lineage.source == "active-learning"
    suggested = {i.item_id: s for i in items if (s := _prediction_suggestion(i))}

    def suggest(payload: list[dict[str, Any]]) -> dict[str, Any] | None:
        found = {
            e["item_id"]: suggested[e["item_id"]] for e in payload if e["item_id"] in suggested
        }
        return found or None

    for project in projects:
        fresh = await untasked_items(session, project.id, items)
        await create_tasks(
            session,
            project,
            data.version,
            fresh,
            priority=ACTIVE_LEARNING_PRIORITY if active else 0,
            source="active-learning" if active else "dataset",
            prelabels=suggest if suggested else None,
        )


def _prediction_suggestion(item: ManifestItem) -> dict[str, Any] | None:
    """The serving model's guess that flagged the item, as a pre-label."""
    prediction = item.metadata.get("prediction")
    if not isinstance(prediction, dict):
        return None
    source = model_source(prediction.get("model_name"), prediction.get("version"))
    if isinstance(prediction.get("predicted_boxes"), list):  # a detector's boxes
        return box_suggestion(prediction["predicted_boxes"], prediction.get("confidence"), source)
    if not prediction.get("predicted_label"):
        return None
    return class_suggestion(
        prediction["predicted_label"],
        prediction.get("confidence"),
        source,
    )


async def untasked_items(
    session: AsyncSession, project_id: str, items: list[ManifestItem]
) -> list[ManifestItem]:
    """The items the project has no task for yet; records them as tasked."""
    tasked: set[str] = set()
    ids = [i.item_id for i in items]
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        tasked.update(
            (
                await session.exec(
                    select(ProjectItem.item_id).where(
                        ProjectItem.project_id == project_id, col(ProjectItem.item_id).in_(chunk)
                    )
                )
            ).all()
        )
    fresh = [i for i in items if i.item_id not in tasked]
    if fresh:  # rows in bulk: an ORM object each cost seconds at tens of thousands of items
        rows = [{"project_id": project_id, "item_id": i.item_id} for i in fresh]
        await session.execute(insert(PROJECT_ITEMS), rows)
    return fresh


HANDLERS: dict[str, EventHandler] = {
    **ping_handlers("annotation"),
    **membership_handlers(),
    DatasetVersionCreated.event_type: on_version_created,
}
