"""Which team owns what a dataset-service path names (kiln_core.teams)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.teams import Owner, OwnerLookup, missing
from kiln_dataset.models import Dataset, Job


async def _dataset(session: AsyncSession, dataset_id: str, not_found: str) -> Owner:
    dataset = await session.get(Dataset, dataset_id)
    if dataset is None:
        return missing(not_found)
    return Owner(dataset.team, frozenset(dataset.shared_with or []), not_found)


async def dataset_owner(session: AsyncSession, dataset_id: str) -> Owner:
    return await _dataset(session, dataset_id, f"no dataset {dataset_id!r}")


def _job_owner(noun: str) -> OwnerLookup:
    async def lookup(session: AsyncSession, job_id: str) -> Owner | None:
        job = await session.get(Job, job_id)
        if job is None:
            return missing(f"no {noun} {job_id!r}")
        if job.dataset_id is None:
            return None  # a purge: the platform's, and its routes are for admins
        return await _dataset(session, job.dataset_id, f"no {noun} {job_id!r}")

    return lookup


OWNERSHIP: dict[str, OwnerLookup] = {
    "dataset_id": dataset_owner,
    "import_id": _job_owner("import"),
    "job_id": _job_owner("job"),
}
