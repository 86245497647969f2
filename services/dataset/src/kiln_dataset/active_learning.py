"""Active learning: inputs of low-confidence predictions join their dataset as new versions.

Serving stores a flagged input in the shared object store (content-addressed) and announces it
with ``kiln.serving.prediction.flagged``. The handler only records it; a worker gathers what
arrived into one new version per dataset every :data:`FLUSH_INTERVAL_S`, so a burst of flagged
predictions makes one version (and one round of annotation tasks), not hundreds: a dataset's
inputs wait until none arrived for :data:`QUIET_S` (or the oldest waited :data:`MAX_WAIT_S`,
or :data:`FLUSH_BATCH` are waiting). The new
version's lineage source is ``active-learning``, which annotation turns into urgent tasks.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import PredictionFlagged, VersionLineage
from kiln_core.db import aware, utcnow
from kiln_core.errors import EventRejected, NotFound
from kiln_core.events import CloudEvent
from kiln_core.manifest import Category, ManifestItem
from kiln_core.service import ServiceRuntime, every
from kiln_core.storage import BlobRef, ObjectNotFound, blob_key
from kiln_dataset.lifecycle import mark_stored, record_blobs
from kiln_dataset.media import SNIFF_BYTES, UnreadableImage, image_size, sniff
from kiln_dataset.models import FlaggedInput
from kiln_dataset.versions import create_version, get_dataset, latest_version, version_items

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
FLUSH_BATCH = 500
QUIET_S = 2.0
MAX_WAIT_S = 30.0
_BLOB_KEY = re.compile(r"^blobs/sha256/([0-9a-f]{2})/([0-9a-f]{62})$")


async def on_prediction_flagged(
    session: AsyncSession, event: CloudEvent, data: PredictionFlagged
) -> None:
    """Remember the flagged input; :func:`add_flagged_inputs` adds it to its dataset."""
    if data.dataset_id is None:
        log.info("flagged prediction %s names no dataset; ignored", data.prediction_id)
        return
    match = _BLOB_KEY.match(data.input_key)
    if match is None:
        raise EventRejected(f"input_key {data.input_key!r} is not a content-addressed blob key")
    if await session.get(FlaggedInput, data.prediction_id) is not None:
        return
    session.add(
        FlaggedInput(
            prediction_id=data.prediction_id,
            dataset_id=data.dataset_id,
            blob=match.group(1) + match.group(2),
            content_type=data.content_type,
            prediction={
                "endpoint": data.endpoint,
                "model_name": data.model_name,
                "version": data.version,
                "predicted_label": data.predicted_label,
                "confidence": data.confidence,
                "threshold": data.threshold,
                **({"predicted_boxes": data.predicted_boxes} if data.predicted_boxes else {}),
            },
        )
    )


@dataclass(frozen=True)
class _Inspected:
    media_type: str
    size: int
    width: int
    height: int


async def _inspect(runtime: ServiceRuntime, row: FlaggedInput) -> _Inspected | str:
    """The input's media facts, or why it cannot join the dataset."""
    try:
        data = await runtime.store.read_bytes(blob_key(row.blob))
    except ObjectNotFound:
        return "the input is not in the object store"
    if hashlib.sha256(data).hexdigest() != row.blob:
        return "the stored bytes do not match their address"
    media_type = sniff(data[:SNIFF_BYTES])
    if media_type is None:
        return "the input is not a supported image type"
    try:
        width, height = image_size(data)
    except UnreadableImage as exc:
        return f"unreadable image: {exc.detail}"
    return _Inspected(media_type, len(data), width, height)


async def add_flagged_inputs(runtime: ServiceRuntime) -> int:
    """Add pending flagged inputs to their datasets: one new version per dataset. Returns
    how many inputs were added."""
    async with runtime.db.session() as session:
        pending = (
            await session.exec(
                select(FlaggedInput)
                .where(FlaggedInput.status == "pending")
                .order_by(col(FlaggedInput.received_at))
                .limit(FLUSH_BATCH)
            )
        ).all()
    now = utcnow()
    ready = set()
    for dataset_id in {row.dataset_id for row in pending}:
        times = [aware(r.received_at) for r in pending if r.dataset_id == dataset_id]
        if (
            len(times) >= FLUSH_BATCH
            or (now - max(times)).total_seconds() >= QUIET_S
            or (now - min(times)).total_seconds() >= MAX_WAIT_S
        ):
            ready.add(dataset_id)
    pending = [row for row in pending if row.dataset_id in ready]
    if not pending:
        return 0
    # Reading the inputs happens outside any transaction; they are immutable.
    facts = {row.prediction_id: await _inspect(runtime, row) for row in pending}
    added = 0
    for dataset_id in sorted({row.dataset_id for row in pending}):
        ids = [row.prediction_id for row in pending if row.dataset_id == dataset_id]
        added += await _add_to_dataset(runtime, dataset_id, ids, facts)
    return added


async def _add_to_dataset(
    runtime: ServiceRuntime, dataset_id: str, ids: list[str], facts: dict[str, _Inspected | str]
) -> int:
    async with runtime.db.transaction() as session:
        query = select(FlaggedInput).where(
            col(FlaggedInput.prediction_id).in_(ids), FlaggedInput.status == "pending"
        )
        if runtime.db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        rows = sorted((await session.exec(query)).all(), key=lambda r: r.received_at)
        if not rows:
            return 0
        try:
            await get_dataset(session, dataset_id, lock=True)
            parent = await latest_version(session, dataset_id)
        except NotFound:
            parent = None
        if parent is None:
            for row in rows:
                row.status, row.reason = "rejected", "the dataset does not exist or has no version"
                session.add(row)
            return 0
        items = await version_items(runtime.store, parent)
        seen = {item.blob for item in items}
        uses_splits = any(item.split for item in items)
        fresh: list[tuple[FlaggedInput, _Inspected]] = []
        for row in rows:
            fact = facts[row.prediction_id]  # every row here was inspected this round
            if isinstance(fact, str):
                row.status, row.reason = "rejected", fact
            elif row.blob in seen:
                row.status, row.reason = "duplicate", "the same bytes are already in the dataset"
            else:
                seen.add(row.blob)
                fresh.append((row, fact))
                continue
            session.add(row)
        if not fresh:
            return 0
        new_items = [
            ManifestItem(
                item_id=f"flagged/{row.prediction_id}",
                blob=row.blob,
                media_type=fact.media_type,
                size_bytes=fact.size,
                width=fact.width,
                height=fact.height,
                source_name=f"prediction {row.prediction_id}",
                # New inputs are for learning: into the training split when the data has splits.
                split="train" if uses_splits else None,
                metadata={"source": "active-learning", "prediction": row.prediction},
            )
            for row, fact in fresh
        ]
        refs = [
            (BlobRef(row.blob, fact.size, blob_key(row.blob), created=False), fact.media_type)
            for row, fact in fresh
        ]
        await record_blobs(session, refs)
        await mark_stored(session, [row.blob for row, _ in fresh])
        version = await create_version(
            session,
            runtime,
            dataset_id,
            items + new_items,
            parent=parent,
            categories=[Category.model_validate(c) for c in parent.categories or []],
            lineage=VersionLineage(
                source="active-learning", parent_version=parent.number, parent_version_id=parent.id
            ),
            created_by="serving:active-learning",
            message=f"{len(new_items)} low-confidence prediction inputs",
        )
        for row, _ in fresh:
            row.status, row.version = "added", version.number
            session.add(row)
        log.info(
            "dataset %s version %d: %d flagged inputs added",
            dataset_id,
            version.number,
            len(new_items),
        )
        return len(new_items)


async def flush_flagged_inputs(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
    """The worker: add what was flagged, every :data:`FLUSH_INTERVAL_S`, until stopped."""
    await every(
        FLUSH_INTERVAL_S, stop, lambda: add_flagged_inputs(runtime), "adding flagged inputs"
    )
