"""Immutable dataset versions: creating them (manifest + references + event), reading their
manifests, statistics and diffs."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import JSON, String, bindparam, cast, insert
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import DatasetVersionCreated, VersionLineage
from kiln_core.db import new_id, utcnow
from kiln_core.errors import Conflict, NotFound, ValidationFailed
from kiln_core.manifest import Category, ManifestItem, dump_jsonl, read_manifest
from kiln_core.service import ServiceRuntime
from kiln_core.storage import ObjectStore
from kiln_dataset.models import Dataset, DatasetStatus, DatasetVersion, DraftItem, VersionBlob

VERSION_BLOBS = VersionBlob.__table__  # type: ignore[attr-defined]
DRAFT_ITEMS = DraftItem.__table__  # type: ignore[attr-defined]
# Parsed manifests by (store, key). A manifest never changes once its version exists, so
# paging through items or diffing need not re-read and re-parse it each time.
_MANIFESTS: OrderedDict[tuple[str, str], list[ManifestItem]] = OrderedDict()
_MANIFESTS_KEPT = 8


def manifest_key(dataset_id: str, version_id: str) -> str:
    return f"datasets/{dataset_id}/manifests/{version_id}.jsonl"


def remember_manifest(store: ObjectStore, key: str, items: list[ManifestItem]) -> None:
    _MANIFESTS[(store.url, key)] = list(items)
    while len(_MANIFESTS) > _MANIFESTS_KEPT:
        _MANIFESTS.popitem(last=False)


async def version_items(store: ObjectStore, version: DatasetVersion) -> list[ManifestItem]:
    """The items of ``version`` (a fresh list; the parsed manifest is cached)."""
    key = (store.url, version.manifest_key)
    items = _MANIFESTS.get(key)
    if items is None:
        items = await read_manifest(store, version.manifest_key)
        _MANIFESTS[key] = items
        while len(_MANIFESTS) > _MANIFESTS_KEPT:
            _MANIFESTS.popitem(last=False)
    else:
        _MANIFESTS.move_to_end(key)
    return list(items)


async def copy_into_draft(
    session: AsyncSession,
    store: ObjectStore,
    draft_id: str,
    base: DatasetVersion,
    *,
    postgres: bool,
) -> int:
    """The base version's items as the draft's rows, inserted in bulk (one ORM object per
    item made a draft of 50,000 items take 8.5 s); how many. Each record goes in as the JSON
    text the manifest holds for it (the column's own encoder per row cost as much again)."""
    cached = _MANIFESTS.get((store.url, base.manifest_key))
    rows: list[dict[str, Any]] = []
    if cached is not None:
        for item in cached:
            text = item.model_dump_json(exclude_none=True)
            rows.append({"d": draft_id, "i": item.item_id, "b": item.blob, "r": text})
    else:
        body = await store.read_bytes(base.manifest_key)
        for line in body.splitlines():
            if line.strip():
                fields = json.loads(line)
                rows.append({"d": draft_id, "i": fields["item_id"], "b": fields["blob"]})
                rows[-1]["r"] = line.decode()
    if rows:
        value: Any = bindparam("r", type_=String())  # already JSON text
        if postgres:  # text into a json column; SQLite stores it as it is
            value = cast(value, JSON)
        statement = insert(DRAFT_ITEMS).values(
            draft_id=bindparam("d"), item_id=bindparam("i"), blob=bindparam("b"), record=value
        )
        await session.execute(statement, rows)
    return len(rows)


def label_names(items: Iterable[ManifestItem]) -> list[str]:
    return sorted({label.label for item in items for label in item.labels})


def merge_categories(given: Iterable[Category], items: Iterable[ManifestItem]) -> list[Category]:
    """Keep the given categories (ids and all) and add any label they lack, with new ids."""
    categories = {c.name: c for c in given}
    next_id = max((c.id for c in categories.values()), default=0) + 1
    for name in label_names(items):
        if name not in categories:
            categories[name] = Category(id=next_id, name=name)
            next_id += 1
    return sorted(categories.values(), key=lambda c: c.id)


def compute_stats(items: list[ManifestItem]) -> dict[str, Any]:
    per_label: Counter[str] = Counter()
    per_split: Counter[str] = Counter()
    per_label_split: dict[str, Counter[str]] = defaultdict(Counter)
    media: Counter[str] = Counter()
    widths = [i.width for i in items if i.width]
    heights = [i.height for i in items if i.height]
    for item in items:
        split = item.split or "unassigned"
        per_split[split] += 1
        media[item.media_type] += 1
        for name in {label.label for label in item.labels}:
            per_label[name] += 1
            per_label_split[name][split] += 1

    def summary(values: list[int]) -> dict[str, float] | None:
        if not values:
            return None
        return {"min": min(values), "max": max(values), "mean": round(sum(values) / len(values), 2)}

    return {
        "items": len(items),
        "labelled": sum(1 for i in items if i.labels),
        "annotations": sum(len(i.labels) for i in items),
        "items_per_label": dict(sorted(per_label.items())),
        "items_per_split": dict(sorted(per_split.items())),
        "items_per_label_and_split": {k: dict(v) for k, v in sorted(per_label_split.items())},
        "media_types": dict(media),
        "width": summary(widths),
        "height": summary(heights),
    }


def diff_versions(old: list[ManifestItem], new: list[ManifestItem]) -> dict[str, Any]:
    """Items added, removed, relabelled (labels differ) and changed (other bytes) by item id."""
    before = {i.item_id: i for i in old}
    after = {i.item_id: i for i in new}
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    relabelled, changed, resplit = [], [], []
    for item_id in sorted(before.keys() & after.keys()):
        a, b = before[item_id], after[item_id]
        if a.blob != b.blob:
            changed.append(item_id)
        if [x.model_dump() for x in a.labels] != [x.model_dump() for x in b.labels]:
            relabelled.append(item_id)
        if a.split != b.split:
            resplit.append(item_id)
    return {
        "added": added,
        "removed": removed,
        "relabelled": relabelled,
        "content_changed": changed,
        "split_changed": resplit,
        "counts": {
            "added": len(added),
            "removed": len(removed),
            "relabelled": len(relabelled),
            "content_changed": len(changed),
            "split_changed": len(resplit),
            "unchanged": len(before.keys() & after.keys())
            - len(set(relabelled) | set(changed) | set(resplit)),
        },
    }


async def get_dataset(session: AsyncSession, dataset_id: str, *, lock: bool = False) -> Dataset:
    query = select(Dataset).where(Dataset.id == dataset_id)
    if lock:
        query = query.with_for_update()
    dataset = (await session.exec(query)).first()
    if dataset is None or dataset.status == DatasetStatus.deleted:
        raise NotFound(f"no dataset {dataset_id!r}")
    return dataset


async def get_version(session: AsyncSession, dataset_id: str, number: int) -> DatasetVersion:
    version = (
        await session.exec(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == dataset_id, DatasetVersion.number == number
            )
        )
    ).first()
    if version is None or version.status != "live":
        raise NotFound(f"dataset {dataset_id!r} has no version {number}")
    return version


async def create_version(
    session: AsyncSession,
    runtime: ServiceRuntime,
    dataset_id: str,
    items: list[ManifestItem],
    *,
    lineage: VersionLineage,
    parent: DatasetVersion | None = None,
    categories: Iterable[Category] = (),
    created_by: str = "",
    message: str = "",
) -> DatasetVersion:
    """Write the manifest, record the version and its blob references, and emit the event,
    all inside the caller's transaction (the manifest object is written first; if the
    transaction then fails it is an unreferenced object, never a half-made version)."""
    dataset = await get_dataset(session, dataset_id, lock=True)
    if dataset.status == DatasetStatus.archived:
        raise Conflict(f"dataset {dataset.name!r} is archived; restore it before adding versions")
    seen: set[str] = set()
    for item in items:
        if item.item_id in seen:
            raise ValidationFailed(f"item id {item.item_id!r} appears twice in one version")
        seen.add(item.item_id)
    version_id = new_id()
    key = manifest_key(dataset.id, version_id)
    body = b"".join(dump_jsonl(items))
    await runtime.store.put(key, body)
    # What reads a new version next (its tasks, an export, a draft) finds it parsed.
    remember_manifest(runtime.store, key, items)
    cats = merge_categories(categories, items)
    number = dataset.next_version
    dataset.next_version = number + 1
    dataset.updated_at = utcnow()
    session.add(dataset)
    version = DatasetVersion(
        id=version_id,
        dataset_id=dataset.id,
        number=number,
        parent_id=parent.id if parent else None,
        manifest_key=key,
        manifest_sha256=hashlib.sha256(body).hexdigest(),
        item_count=len(items),
        labelled_count=sum(1 for i in items if i.labels),
        total_bytes=sum(i.size_bytes for i in items),
        categories=[c.model_dump() for c in cats],
        stats=compute_stats(items),
        lineage=lineage.model_dump(exclude_none=True),
        message=message,
        created_by=created_by,
    )
    session.add(version)
    await session.flush()
    blobs = sorted({item.blob for item in items})
    if blobs:
        await session.execute(
            insert(VERSION_BLOBS), [{"version_id": version_id, "blob": b} for b in blobs]
        )
    await runtime.emit(
        session,
        DatasetVersionCreated(
            dataset_id=dataset.id,
            dataset_name=dataset.name,
            team=dataset.team,
            shared_with=list(dataset.shared_with or []),
            task_type=dataset.task_type,
            version=number,
            version_id=version_id,
            manifest_key=key,
            manifest_uri=runtime.store.uri(key),
            manifest_sha256=version.manifest_sha256,
            item_count=version.item_count,
            labelled_count=version.labelled_count,
            labelled=version.labelled_count > 0,
            labels=[c.name for c in cats],
            lineage=lineage,
        ),
        subject=dataset.id,
    )
    return version


async def latest_version(session: AsyncSession, dataset_id: str) -> DatasetVersion | None:
    query = (
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id, DatasetVersion.status == "live")
        .order_by(DatasetVersion.number.desc())  # type: ignore[attr-defined]
        .limit(1)
    )
    return (await session.exec(query)).first()
