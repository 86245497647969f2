"""The dataset service's long work: one runner per job kind (import, augmentation, quality,
purge), run by :func:`kiln_core.jobs.run_job`.

The job row is the source of truth: a redelivered task (worker killed, acks late) finds the job
``running`` and runs it again from the start — every step is idempotent (content-addressed
blobs; the version and the job's success commit in one transaction).
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from kiln_core.catalog import VersionLineage
from kiln_core.errors import KilnError, ValidationFailed
from kiln_core.jobs import LongWork, Progress, tracked_jobs
from kiln_core.manifest import Category, ManifestItem
from kiln_core.service import ServiceRuntime
from kiln_core.storage import ObjectNotFound, SpooledBlob, blob_key
from kiln_dataset.archive import extract_archive
from kiln_dataset.augment import Recipe, apply_recipe, item_seed
from kiln_dataset.formats import UnknownFormat, import_dataset
from kiln_dataset.lifecycle import purge, store_blobs
from kiln_dataset.media import UnreadableImage, extension_matches, sniff, verify_image
from kiln_dataset.models import Job
from kiln_dataset.quality import QualityChecker
from kiln_dataset.versions import create_version, get_version, latest_version, version_items

log = logging.getLogger(__name__)

MAX_PROBLEMS_KEPT = 1000
STORE_BATCH = 64  # blobs recorded and written together during an import


class JobFailed(KilnError):
    status, type, title = 422, "job-failed", "The job failed"


async def finish(session: Any, job: Job, result: dict[str, Any], message: str = "") -> None:
    """Mark ``job`` succeeded inside the caller's transaction (with the work it produced)."""
    row = await session.get(Job, job.id)
    row.record_success(result, message)
    row.done = row.total = max(row.total, row.done)
    session.add(row)


async def _download(runtime: ServiceRuntime, key: str, path: Path) -> None:
    with path.open("wb") as out:
        async for chunk in runtime.store.stream(key):
            await asyncio.to_thread(out.write, chunk)


def validate_archive(path: Path) -> None:
    """Extract into a throw-away directory to refuse unsafe archives before accepting them."""
    with tempfile.TemporaryDirectory(prefix="kiln-check-") as tmp:
        extract_archive(path, Path(tmp) / "x")


async def run_import(runtime: ServiceRuntime, job: Job, progress: Progress) -> dict[str, Any]:
    try:
        return await _import(runtime, job, progress)
    except Exception:
        # A failed import keeps nothing: its uploaded archive goes with it (or with a purge,
        # should the store refuse now).
        try:
            await runtime.store.delete(job.params["archive_key"])
        except Exception:  # noqa: BLE001 - the import's own failure is what gets recorded
            log.warning("could not delete a failed import's archive", extra={"job_id": job.id})
        raise


async def _import(runtime: ServiceRuntime, job: Job, progress: Progress) -> dict[str, Any]:
    params = job.params
    fmt = params.get("format") or "auto"
    problems: list[dict[str, str]] = []
    items: list[ManifestItem] = []
    with tempfile.TemporaryDirectory(prefix="kiln-import-") as tmp:
        archive = Path(tmp) / "archive"
        await _download(runtime, params["archive_key"], archive)
        await progress(0, 0, "extracting")
        files = await asyncio.to_thread(extract_archive, archive, Path(tmp) / "files")
        await progress(0, len(files), f"extracted {len(files)} files; reading annotations")
        try:
            result = await asyncio.to_thread(
                import_dataset, Path(tmp) / "files", None if fmt == "auto" else fmt
            )
        except UnknownFormat as exc:
            raise ValidationFailed(f"format: {exc}", field="format") from None
        problems += [
            {"kind": p.kind, "message": p.message, "item": p.source_name} for p in result.problems
        ]
        total = len(result.entries)
        pending: list[tuple[SpooledBlob, str]] = []
        for index, entry in enumerate(result.entries, 1):
            problems += [
                {"kind": p.kind, "message": p.message, "item": entry.source_name}
                for p in entry.problems
            ]
            if entry.path is None:
                continue
            try:
                with entry.path.open("rb") as f:
                    media_type = sniff(f.read(64))
                if media_type is None:
                    raise UnreadableImage("not a supported image type")
                if not extension_matches(entry.source_name, media_type):
                    raise UnreadableImage(f"file name does not match its bytes ({media_type})")
                width, height = await asyncio.to_thread(verify_image, entry.path)
            except UnreadableImage as exc:
                problems.append(
                    {"kind": "unreadable-image", "message": str(exc), "item": entry.source_name}
                )
                continue
            # The extracted file is hashed where it lies and handed to the store: no copy.
            spooled = await runtime.store.adopt_file(str(entry.path))
            pending.append((spooled, media_type))
            if len(pending) >= STORE_BATCH:
                await store_blobs(runtime, pending)
                pending = []
            items.append(
                ManifestItem(
                    item_id=entry.item_id or entry.source_name,
                    blob=spooled.sha256,
                    media_type=media_type,
                    size_bytes=spooled.size,
                    width=width,
                    height=height,
                    source_name=entry.source_name,
                    split=entry.split,
                    labels=entry.labels,
                    metadata=entry.metadata,
                )
            )
            await progress(index, total, f"imported {len(items)} of {total} items")
        await store_blobs(runtime, pending)
    if not items:
        raise ValidationFailed(
            "the archive holds no readable images", problems=problems[:MAX_PROBLEMS_KEPT]
        )
    async with runtime.db.transaction() as session:
        parent = await latest_version(session, job.dataset_id or "")
        merged = {
            i.item_id: i
            for i in (
                await version_items(runtime.store, parent)
                if parent and params.get("mode") != "replace"
                else []
            )
        }
        merged.update({i.item_id: i for i in items})
        categories = [Category.model_validate(c) for c in (parent.categories if parent else [])]
        categories += [c for c in result.categories if c.name not in {x.name for x in categories}]
        version = await create_version(
            session,
            runtime,
            job.dataset_id or "",
            list(merged.values()),
            parent=parent,
            categories=categories,
            lineage=VersionLineage(
                source="import",
                import_id=job.id,
                parent_version=parent.number if parent else None,
                parent_version_id=parent.id if parent else None,
            ),
            created_by=job.created_by,
            message=params.get("message") or f"import of {params.get('filename') or 'archive'}",
        )
        outcome = {
            "version": version.number,
            "format": result.format,
            "items_imported": len(items),
            "problem_count": len(problems),
            "problems": problems[:MAX_PROBLEMS_KEPT],
        }
        await finish(session, job, outcome, f"version {version.number}: {len(items)} items")
    await runtime.store.delete(params["archive_key"])
    return outcome


def _encode(image: Image.Image, media_type: str) -> tuple[bytes, str]:
    buf = io.BytesIO()
    if media_type == "image/jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=95)
        return buf.getvalue(), "image/jpeg"
    image.save(buf, format="PNG")
    return buf.getvalue(), "image/png"


async def run_augmentation(runtime: ServiceRuntime, job: Job, progress: Progress) -> dict[str, Any]:
    recipe = Recipe.model_validate(job.params["recipe"])
    seed = int(job.params.get("seed", 0))
    async with runtime.db.session() as session:
        parent = await get_version(session, job.dataset_id or "", int(job.params["version"]))
    source = await version_items(runtime.store, parent)
    out: list[ManifestItem] = list(source)
    total = len(source) * recipe.copies_per_item
    done = 0
    for item in source:
        raw = await runtime.store.read_bytes(blob_key(item.blob))
        image = Image.open(io.BytesIO(raw))
        image.load()
        for copy in range(recipe.copies_per_item):
            augmented, labels = await asyncio.to_thread(
                apply_recipe, image, list(item.labels), recipe, item_seed(seed, item.item_id, copy)
            )
            data, media_type = _encode(augmented, item.media_type)
            ref = await runtime.store.spool(data)
            await store_blobs(runtime, [(ref, media_type)])
            out.append(
                ManifestItem(
                    item_id=f"{item.item_id}#aug{copy}",
                    blob=ref.sha256,
                    media_type=media_type,
                    size_bytes=ref.size,
                    width=augmented.width,
                    height=augmented.height,
                    source_name=item.source_name,
                    split=item.split,
                    labels=labels,
                    metadata={**item.metadata, "augmented_from": item.item_id, "copy": copy},
                )
            )
            done += 1
            await progress(done, total, f"augmented {done} of {total}")
    async with runtime.db.transaction() as session:
        version = await create_version(
            session,
            runtime,
            job.dataset_id or "",
            out,
            parent=parent,
            categories=[Category.model_validate(c) for c in parent.categories or []],
            lineage=VersionLineage(
                source="augmentation",
                parent_version=parent.number,
                parent_version_id=parent.id,
                seed=seed,
                recipe=recipe.model_dump(mode="json"),
            ),
            created_by=job.created_by,
            message=job.params.get("message") or f"augmented v{parent.number} seed {seed}",
        )
        outcome = {"version": version.number, "augmented_items": done, "item_count": len(out)}
        await finish(session, job, outcome, f"version {version.number}")
    return outcome


async def run_quality(runtime: ServiceRuntime, job: Job, progress: Progress) -> dict[str, Any]:
    async with runtime.db.session() as session:
        version = await get_version(session, job.dataset_id or "", int(job.params["version"]))
    items = await version_items(runtime.store, version)
    checker = QualityChecker()
    fetched: set[str] = set()
    for done, item in enumerate(items, 1):
        # Each distinct blob is read once, one at a time; duplicates reuse the first result.
        data = b"" if item.blob in fetched else await _read_or_empty(runtime, item.blob)
        fetched.add(item.blob)
        await asyncio.to_thread(checker.add, item, data)
        await progress(done, len(items), f"checked {done} of {len(items)} items")
    report = checker.report().model_dump(mode="json")
    async with runtime.db.transaction() as session:
        row = await get_version(session, job.dataset_id or "", version.number)
        row.quality = report
        session.add(row)
        outcome = {"version": version.number, "summary": report.get("summary", [])}
        await finish(session, job, outcome, "; ".join(report.get("summary", []))[:500])
    return outcome


async def _read_or_empty(runtime: ServiceRuntime, sha: str) -> bytes:
    try:
        return await runtime.store.read_bytes(blob_key(sha))
    except ObjectNotFound:
        return b""  # reported as unreadable by the checker


async def run_purge(runtime: ServiceRuntime, job: Job, progress: Progress) -> dict[str, Any]:
    result = await purge(
        runtime,
        grace=timedelta(minutes=int(job.params.get("grace_minutes", 60))),
        progress=progress,
    )
    async with runtime.db.transaction() as session:
        await finish(session, job, result, f"deleted {result['deleted_blobs']} blobs")
    return result


RUNNERS: dict[str, Callable[[ServiceRuntime, Job, Progress], Awaitable[dict[str, Any]]]] = {
    "import": run_import,
    "augmentation": run_augmentation,
    "quality": run_quality,
    "purge": run_purge,
}


async def run(runtime: ServiceRuntime, job: Job, progress: Progress) -> None:
    """Run one job by its kind."""
    work = RUNNERS.get(job.kind)
    if work is None:
        raise JobFailed(f"no runner for job kind {job.kind!r}")
    await work(runtime, job, progress)


LONG_WORK: LongWork = tracked_jobs("kiln.dataset.run_job", "dataset", Job, run)
