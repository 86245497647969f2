"""A team's storage quota: the bytes of the distinct blobs its datasets' live versions and
open drafts reference (a blob shared by two of its versions counts once)."""

from __future__ import annotations

from sqlalchemy import func, union
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.manifest import ManifestItem
from kiln_core.teams import locked_limits, within
from kiln_dataset.models import Blob, Dataset, DatasetVersion, Draft, DraftItem, VersionBlob


def _team_blobs(team: str):  # type: ignore[no-untyped-def]
    datasets = select(Dataset.id).where(Dataset.team == team)
    in_versions = (
        select(VersionBlob.blob)
        .join(DatasetVersion, col(DatasetVersion.id) == col(VersionBlob.version_id))
        .where(col(DatasetVersion.dataset_id).in_(datasets), DatasetVersion.status == "live")
    )
    in_drafts = (
        select(DraftItem.blob)
        .join(Draft, col(Draft.id) == col(DraftItem.draft_id))
        .where(col(Draft.dataset_id).in_(datasets), Draft.status == "open")
    )
    return union(in_versions, in_drafts).subquery()


async def check_storage(session: AsyncSession, dataset_id: str, items: list[ManifestItem]) -> None:
    """Refuse ``items`` if their new bytes would take the dataset's team past its
    ``storage_bytes`` limit; the team's limits row stays locked until the caller commits."""
    dataset = await session.get(Dataset, dataset_id)
    if dataset is None:
        return
    limits = await locked_limits(session, dataset.team)
    if "storage_bytes" not in limits:
        return
    blobs = _team_blobs(dataset.team)
    usage = (
        await session.exec(
            select(func.coalesce(func.sum(Blob.size_bytes), 0)).where(
                col(Blob.sha256).in_(select(blobs.c.blob))
            )
        )
    ).one()
    wanted = {item.blob: item.size_bytes or 0 for item in items}
    held = set(
        (await session.exec(select(blobs.c.blob).where(blobs.c.blob.in_(list(wanted))))).all()
    )
    adding = sum(size for blob, size in wanted.items() if blob not in held)
    within(limits, "storage_bytes", dataset.team, int(usage), adding)
