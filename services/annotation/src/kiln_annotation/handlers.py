"""What the annotation service does when other services' events arrive."""

from __future__ import annotations

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_annotation.models import Project
from kiln_annotation.workflow import create_tasks
from kiln_core.catalog import DatasetVersionCreated
from kiln_core.events import CloudEvent
from kiln_core.inbox import EventHandler
from kiln_core.manifest import read_manifest
from kiln_core.ping import ping_handlers
from kiln_core.service import runtime_of


async def on_version_created(
    session: AsyncSession, event: CloudEvent, data: DatasetVersionCreated
) -> None:
    """A new dataset version: auto-annotation projects on that dataset get tasks for its
    unlabelled items. Versions made from our own label commits are skipped (no loop)."""
    if data.lineage.source == "labels":
        return
    projects = (
        await session.exec(
            select(Project).where(Project.dataset_id == data.dataset_id, Project.auto_annotate)
        )
    ).all()
    if not projects:
        return
    items = [
        i for i in await read_manifest(runtime_of(session).store, data.manifest_key) if not i.labels
    ]
    for project in projects:
        create_tasks(session, project, data.version, items)


HANDLERS: dict[str, EventHandler] = {
    **ping_handlers("annotation"),
    DatasetVersionCreated.event_type: on_version_created,
}
