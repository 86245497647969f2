"""What the training service does when other services' events arrive."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import DatasetShared, DatasetVersionCreated, ModelVersionCreated
from kiln_core.events import CloudEvent
from kiln_core.inbox import EventHandler
from kiln_core.membership import membership_handlers
from kiln_core.ping import ping_handlers
from kiln_training.models import KnownModelVersion, KnownVersion
from kiln_training.triggers import fire_triggers


async def on_version_created(
    session: AsyncSession, event: CloudEvent, data: DatasetVersionCreated
) -> None:
    """Remember the version (jobs name it; its manifest key comes from here), and for a fully
    labelled one fire the retraining rules of its dataset."""
    known = await session.get(KnownVersion, data.version_id)
    if known is None:
        known = KnownVersion(
            version_id=data.version_id,
            dataset_id=data.dataset_id,
            dataset_name=data.dataset_name,
            team=data.team,
            shared_with=list(data.shared_with),
            version=data.version,
            manifest_key=data.manifest_key,
            labelled=data.labelled,
            labels=list(data.labels),
        )
        session.add(known)
        await session.flush()
    # Only a fully labelled version retrains: one with items still waiting for labels (new
    # active-learning inputs, say) would train on the old labels again.
    if data.labelled and data.labelled_count == data.item_count:
        await fire_triggers(session, known)


async def on_model_version_created(
    session: AsyncSession, event: CloudEvent, data: ModelVersionCreated
) -> None:
    """Remember registered versions trained here, so incremental jobs can start from them."""
    if await session.get(KnownModelVersion, data.version_id) is not None:
        return
    session.add(
        KnownModelVersion(
            version_id=data.version_id,
            model_name=data.model_name,
            training_job_id=data.lineage.training_job_id,
            artifact_key=data.artifact.key,
        )
    )


async def on_dataset_shared(session: AsyncSession, event: CloudEvent, data: DatasetShared) -> None:
    """Who may train on a dataset's versions changed (the event carries the whole set)."""
    await session.execute(
        update(KnownVersion)
        .where(col(KnownVersion.dataset_id) == data.dataset_id)
        .values(shared_with=sorted(data.shared_with))
    )


HANDLERS: dict[str, EventHandler] = {
    **ping_handlers("training"),
    **membership_handlers(),
    DatasetVersionCreated.event_type: on_version_created,
    DatasetShared.event_type: on_dataset_shared,
    ModelVersionCreated.event_type: on_model_version_created,
}
