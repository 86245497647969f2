"""What the dataset service does when other services' events arrive."""

from __future__ import annotations

import logging

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import LabelsCommitted, PredictionFlagged, VersionLineage
from kiln_core.errors import EventRejected, NotFound
from kiln_core.events import CloudEvent
from kiln_core.inbox import EventHandler
from kiln_core.manifest import Category, Label
from kiln_core.membership import membership_handlers
from kiln_core.ping import ping_handlers
from kiln_core.service import ServiceRuntime, runtime_of
from kiln_core.storage import ObjectNotFound
from kiln_dataset.active_learning import on_prediction_flagged
from kiln_dataset.models import Dataset
from kiln_dataset.versions import create_version, get_version, version_items

log = logging.getLogger(__name__)


async def on_labels_committed(
    session: AsyncSession, event: CloudEvent, data: LabelsCommitted
) -> None:
    """Annotation accepted labels for items of a version: make the labelled version.

    Labels in the commit replace the labels of those items; other items keep theirs.
    """
    runtime = runtime_of(session)
    try:
        base = await get_version(session, data.dataset_id, data.base_version)
    except NotFound as exc:
        raise EventRejected(f"labels for an unknown dataset version: {exc.detail}") from None
    dataset = await session.get(Dataset, data.dataset_id)
    if dataset is not None and dataset.team != data.team:
        # Sharing is read-only: only the owning team's labels make its versions.
        raise EventRejected(
            f"project of team {data.team!r} may not label team {dataset.team!r}'s dataset"
        )
    try:
        commit = await read_manifest_labels(runtime, data.manifest_key)
    except ObjectNotFound:
        raise EventRejected(f"labels manifest {data.manifest_key!r} does not exist") from None
    items = await version_items(runtime.store, base)
    known = {i.item_id for i in items}
    unknown = sorted(set(commit) - known)
    if unknown:
        raise EventRejected(f"labels for items not in version {base.number}: {unknown[:5]}")
    items = [
        i.model_copy(update={"labels": commit[i.item_id]}) if i.item_id in commit else i
        for i in items
    ]
    categories = [Category.model_validate(c) for c in base.categories or []]
    categories += [
        Category.model_validate(c)
        for c in data.categories
        if c.get("name") not in {x.name for x in categories}
    ]
    await create_version(
        session,
        runtime,
        data.dataset_id,
        items,
        parent=base,
        categories=categories,
        lineage=VersionLineage(
            source="labels",
            parent_version=base.number,
            parent_version_id=base.id,
            labels_commit_id=data.commit_id,
        ),
        created_by=f"annotation:{data.project_id}",
        message=f"labels from annotation project {data.project_id}",
    )


async def read_manifest_labels(runtime: ServiceRuntime, key: str) -> dict[str, list[Label]]:
    """The commit's ``{item_id, labels}`` records, validated with the manifest label models."""
    import json

    from pydantic import TypeAdapter

    adapter = TypeAdapter(list[Label])
    store = runtime.store
    out: dict[str, list[Label]] = {}
    raw = await store.read_bytes(key)
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            out[str(record["item_id"])] = adapter.validate_python(record.get("labels", []))
        except (ValueError, KeyError, TypeError) as exc:
            raise EventRejected(f"labels manifest line {number}: {exc}") from None
    return out


HANDLERS: dict[str, EventHandler] = {
    **ping_handlers("dataset"),
    **membership_handlers(),
    LabelsCommitted.event_type: on_labels_committed,
    PredictionFlagged.event_type: on_prediction_flagged,
}
