"""Lifecycle: soft deletes with retention, archive, and the purge that deletes only blobs that
no live version and no open draft references (checked again under a row lock per blob)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import exists, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import DatasetVersionDeleted
from kiln_core.db import utcnow
from kiln_core.jobs import FINISHED
from kiln_core.service import ServiceRuntime
from kiln_core.storage import SpooledBlob, blob_key
from kiln_dataset.models import (
    Blob,
    Dataset,
    DatasetStatus,
    DatasetVersion,
    Draft,
    DraftItem,
    Job,
    VersionBlob,
)

log = logging.getLogger(__name__)
BLOBS = Blob.__table__  # type: ignore[attr-defined]


class HashedBlob(Protocol):
    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...


async def store_blobs(
    runtime: ServiceRuntime, blobs: list[tuple[SpooledBlob, str]], *, concurrency: int = 16
) -> None:
    """Store spooled blobs with their media types: the one way bytes enter this service.

    The blobs are recorded first, so a purge running meanwhile sees them as fresh; then the
    bytes of those not already stored are written (content-addressed, so without asking the
    store first) and marked stored. Every temporary file is removed, whatever happens.
    """
    try:
        async with runtime.db.transaction() as session:
            already = await record_blobs(session, blobs)
        fresh = {spooled.sha256: spooled for spooled, _ in blobs if spooled.sha256 not in already}
        await runtime.store.put_spooled_many(fresh.values(), concurrency=concurrency)
        async with runtime.db.transaction() as session:
            await mark_stored(session, list(fresh))
    finally:
        for spooled, _ in blobs:
            if spooled.path:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(spooled.path)


async def record_blobs(session: AsyncSession, refs: Sequence[tuple[HashedBlob, str]]) -> set[str]:
    """Register blobs (or refresh when they were last seen) in one statement, sorted for a
    stable lock order.

    Returns the hashes whose bytes are already in the object store.
    """
    if not refs:
        return set()
    shas = sorted({ref.sha256 for ref, _ in refs})
    stored = set(
        (
            await session.exec(
                select(Blob.sha256).where(col(Blob.sha256).in_(shas), col(Blob.stored))
            )
        ).all()
    )
    now = utcnow()
    unique = {ref.sha256: (ref, media_type) for ref, media_type in refs}
    rows = [
        {
            "sha256": sha,
            "size_bytes": ref.size,
            "media_type": media_type,
            "created_at": now,
            "last_seen_at": now,
        }
        for sha, (ref, media_type) in sorted(unique.items())
    ]
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert_fn = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert_fn(BLOBS).values(rows)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["sha256"], set_={"last_seen_at": now})
    )
    return stored


async def mark_stored(session: AsyncSession, shas: list[str]) -> None:
    if shas:
        await session.execute(
            update(Blob).where(col(Blob.sha256).in_(sorted(shas))).values(stored=True)
        )


async def delete_version(
    session: AsyncSession, runtime: ServiceRuntime, version: DatasetVersion, reason: str
) -> None:
    """Soft-delete one version and announce it; its blobs become purge candidates."""
    version.status = "deleted"
    version.deleted_at = utcnow()
    session.add(version)
    await runtime.emit(
        session,
        DatasetVersionDeleted(
            dataset_id=version.dataset_id,
            version=version.number,
            version_id=version.id,
            reason=reason,
        ),
        subject=version.dataset_id,
    )


def _referenced(blob_column: Any) -> Any:
    live = exists().where(
        col(VersionBlob.blob) == blob_column,
        col(DatasetVersion.id) == col(VersionBlob.version_id),
        col(DatasetVersion.status) == "live",
    )
    drafted = exists().where(
        col(DraftItem.blob) == blob_column,
        col(Draft.id) == col(DraftItem.draft_id),
        col(Draft.status) == "open",
    )
    return live | drafted


async def purge(
    runtime: ServiceRuntime,
    *,
    grace: timedelta = timedelta(hours=1),
    progress: Callable[[int, int, str], Awaitable[None]] | None = None,
) -> dict[str, int]:
    """Expire datasets past their retention, then delete unreferenced blobs.

    A blob is deleted only if, inside a transaction holding its row lock, no live version and
    no open draft references it and no upload has touched it within ``grace``.
    """
    db = runtime.db
    expired_versions = 0
    async with db.transaction() as session:
        due = (
            await session.exec(
                select(Dataset).where(
                    Dataset.status == DatasetStatus.deleted,
                    col(Dataset.purge_after) <= utcnow(),
                )
            )
        ).all()
        for dataset in due:
            versions = (
                await session.exec(
                    select(DatasetVersion).where(
                        DatasetVersion.dataset_id == dataset.id, DatasetVersion.status == "live"
                    )
                )
            ).all()
            for version in versions:
                await delete_version(session, runtime, version, "dataset retention expired")
                expired_versions += 1
            await session.execute(
                update(Draft).where(col(Draft.dataset_id) == dataset.id).values(status="discarded")
            )
    cutoff = utcnow() - grace
    async with db.session() as session:
        candidates = list(
            (
                await session.exec(
                    select(Blob.sha256).where(
                        col(Blob.last_seen_at) <= cutoff, ~_referenced(Blob.sha256)
                    )
                )
            ).all()
        )
    deleted = 0
    for index, sha in enumerate(candidates):
        async with db.transaction() as session:
            query = select(Blob).where(
                Blob.sha256 == sha, col(Blob.last_seen_at) <= cutoff, ~_referenced(Blob.sha256)
            )
            if db.is_postgres:
                query = query.with_for_update()
            row = (await session.exec(query)).first()
            if row is None:
                continue  # referenced or touched since the scan: keep it
            await runtime.store.delete(blob_key(sha))
            await session.delete(row)
            deleted += 1
        if progress is not None and (index + 1) % 50 == 0:
            await progress(index + 1, len(candidates), f"purged {deleted} blobs")
    return {
        "expired_versions": expired_versions,
        "deleted_blobs": deleted,
        "candidates": len(candidates),
        "deleted_archives": await _purge_import_archives(runtime),
    }


async def _purge_import_archives(runtime: ServiceRuntime) -> int:
    """Delete uploaded archives (``imports/<job id>/archive``) of imports that are over: an
    import deletes its own, but one that failed before that was done left it behind."""
    keys = await runtime.store.list("imports/")
    by_job = {key.split("/")[1]: key for key in keys if key.count("/") == 2}
    if not by_job:
        return 0
    async with runtime.db.session() as session:
        over = (
            await session.exec(
                select(Job.id).where(
                    col(Job.id).in_(sorted(by_job)),
                    col(Job.status).in_(FINISHED),
                )
            )
        ).all()
    for job_id in over:
        await runtime.store.delete(by_job[job_id])
    return len(over)
