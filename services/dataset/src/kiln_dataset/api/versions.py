"""Versions: items, manifests, diffs, splits, statistics, exports, augmentation and quality."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import func
from sqlmodel import col, select

from kiln_core.auth import Reader
from kiln_core.catalog import VersionLineage
from kiln_core.db import INT32_MAX, MAX_PARAM_INT
from kiln_core.errors import NotFound, ValidationFailed
from kiln_core.http import Limit, Offset, SessionDep, get_runtime
from kiln_core.manifest import Category, ManifestItem
from kiln_dataset.api.common import (
    Accepted,
    ExportFormat,
    VersionNumber,
    Writer,
    start_version_job,
    version_out,
)
from kiln_dataset.augment import Recipe
from kiln_dataset.formats import export_stream
from kiln_dataset.formats.common import PrefetchingReader
from kiln_dataset.lifecycle import delete_version
from kiln_dataset.models import DatasetVersion, Page, VersionPublic
from kiln_dataset.splits import assign_splits
from kiln_dataset.versions import (
    create_version,
    diff_versions,
    get_dataset,
    get_version,
    version_items,
)

router = APIRouter(prefix="/v1", tags=["datasets"])


@router.get("/datasets/{dataset_id}/versions", response_model=Page[VersionPublic])
async def list_versions(
    dataset_id: str, session: SessionDep, _who: Reader, limit: Limit = 50, offset: Offset = 0
) -> Page[VersionPublic]:
    await get_dataset(session, dataset_id)
    query = select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset_id, DatasetVersion.status == "live"
    )
    total = int((await session.exec(select(func.count()).select_from(query.subquery()))).one())
    rows = (
        await session.exec(
            query.order_by(col(DatasetVersion.number).desc()).offset(offset).limit(limit)
        )
    ).all()
    return Page(
        items=[await version_out(session, v) for v in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/datasets/{dataset_id}/versions/{version}", response_model=VersionPublic)
async def read_version(
    dataset_id: str, version: VersionNumber, session: SessionDep, _who: Reader
) -> VersionPublic:
    return await version_out(session, await get_version(session, dataset_id, version))


@router.get("/datasets/{dataset_id}/versions/{version}/items", response_model=Page[ManifestItem])
async def list_items(
    dataset_id: str,
    version: VersionNumber,
    request: Request,
    session: SessionDep,
    _who: Reader,
    limit: Limit = 100,
    offset: Offset = 0,
    split: Literal["train", "val", "test", "unassigned"] | None = None,
    label: str | None = None,
) -> Page[ManifestItem]:
    row = await get_version(session, dataset_id, version)
    items = await version_items(get_runtime(request).store, row)
    if split:
        items = [i for i in items if (i.split or "unassigned") == split]
    if label:
        items = [i for i in items if any(x.label == label for x in i.labels)]
    return Page(items=items[offset : offset + limit], total=len(items), limit=limit, offset=offset)


@router.get(
    "/datasets/{dataset_id}/versions/{version}/manifest",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def download_manifest(
    dataset_id: str, version: VersionNumber, request: Request, session: SessionDep, _who: Reader
) -> StreamingResponse:
    """The version's JSONL manifest, streamed."""
    row = await get_version(session, dataset_id, version)
    store = get_runtime(request).store
    return StreamingResponse(
        store.stream(row.manifest_key),
        media_type="application/x-ndjson",
        headers={"etag": f'"{row.manifest_sha256}"'},
    )


@router.get("/datasets/{dataset_id}/versions/{version}/diff")
async def diff_version(
    dataset_id: str,
    version: VersionNumber,
    request: Request,
    session: SessionDep,
    _who: Reader,
    against: Annotated[
        int, Query(ge=1, le=INT32_MAX, description="the other version (the 'before')")
    ],
) -> dict[str, Any]:
    """Items added, removed, relabelled between ``against`` and this version."""
    store = get_runtime(request).store
    new = await get_version(session, dataset_id, version)
    old = await get_version(session, dataset_id, against)
    diff = diff_versions(await version_items(store, old), await version_items(store, new))
    return {"from_version": against, "to_version": version, **diff}


class SplitRequest(BaseModel):
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    stratify: bool = True
    message: str = PydField(default="", max_length=2000)


@router.post(
    "/datasets/{dataset_id}/versions/{version}/splits",
    status_code=201,
    response_model=VersionPublic,
)
async def split_version(
    dataset_id: str, version: VersionNumber, body: SplitRequest, request: Request, who: Writer
) -> VersionPublic:
    """A derived version whose items carry deterministic train/val/test splits."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        parent = await get_version(session, dataset_id, version)
        items = await version_items(runtime.store, parent)
        try:
            assignment = assign_splits(
                items, ratios=body.ratios, seed=body.seed, stratify=body.stratify
            )
        except ValueError as exc:
            raise ValidationFailed(str(exc), field="ratios") from None
        items = [i.model_copy(update={"split": assignment[i.item_id]}) for i in items]
        created = await create_version(
            session,
            runtime,
            dataset_id,
            items,
            parent=parent,
            categories=[Category.model_validate(c) for c in parent.categories or []],
            lineage=VersionLineage(
                source="split",
                parent_version=parent.number,
                parent_version_id=parent.id,
                seed=body.seed,
            ),
            created_by=who.subject,
            message=body.message or f"splits {body.ratios} seed {body.seed}",
        )
        return await version_out(session, created)


@router.get("/datasets/{dataset_id}/versions/{version}/stats")
async def version_stats(
    dataset_id: str, version: VersionNumber, session: SessionDep, _who: Reader
) -> dict[str, Any]:
    """Items per label and split, image sizes, media types."""
    return (await get_version(session, dataset_id, version)).stats or {}


@router.get(
    "/datasets/{dataset_id}/versions/{version}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}, "application/x-ndjson": {}}}},
)
async def export_version(
    dataset_id: str,
    version: VersionNumber,
    request: Request,
    session: SessionDep,
    _who: Reader,
    format: Annotated[ExportFormat, Query(description="output layout")] = "jsonl",
) -> StreamingResponse:
    """The version in a standard layout, streamed (zip for image formats)."""
    runtime = get_runtime(request)
    row = await get_version(session, dataset_id, version)
    dataset = await get_dataset(session, dataset_id)
    items = await version_items(runtime.store, row)
    categories = [Category.model_validate(c) for c in row.categories or []]

    read_blob = PrefetchingReader(runtime.store, items)
    media = "application/x-ndjson" if format == "jsonl" else "application/zip"
    suffix = "jsonl" if format == "jsonl" else "zip"
    name = f"{dataset.name}-v{row.number}-{format}.{suffix}".replace(" ", "_")
    return StreamingResponse(
        export_stream(format, items, categories, read_blob),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.delete("/datasets/{dataset_id}/versions/{version}", status_code=204)
async def delete_dataset_version(
    dataset_id: str,
    version: VersionNumber,
    request: Request,
    _who: Writer,
    reason: Annotated[str, Query(max_length=500)] = "",
) -> None:
    """Soft-delete a version; its blobs are purged later unless another version uses them."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        row = await get_version(session, dataset_id, version)
        await delete_version(session, runtime, row, reason or "deleted by request")


class AugmentRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "recipe": {
                        "copies_per_item": 2,
                        "steps": [
                            {"strategy": "horizontal_flip", "probability": 0.5},
                            {
                                "strategy": "rotate",
                                "probability": 1.0,
                                "params": {"degrees": [-10, 10]},
                            },
                        ],
                    },
                    "seed": 7,
                    "message": "flips and small rotations",
                }
            ]
        }
    )

    # Its steps and keys are in the document, so clients know them.
    recipe: Recipe = PydField(description="the steps, in order, and copies per item")
    seed: int = PydField(
        default=0, ge=0, le=MAX_PARAM_INT, description="the same seed gives the same version"
    )
    message: str = PydField(default="", max_length=2000, description="the new version's message")


@router.post(
    "/datasets/{dataset_id}/versions/{version}/augmentations",
    status_code=202,
    response_model=Accepted,
)
async def augment_version(
    dataset_id: str, version: VersionNumber, body: AugmentRequest, request: Request, who: Writer
) -> Accepted:
    """Start a job producing a derived, augmented version (reproducible by seed)."""
    recipe = body.recipe
    return await start_version_job(
        request,
        who,
        dataset_id,
        version,
        "augmentation",
        {"recipe": recipe.model_dump(mode="json"), "seed": body.seed, "message": body.message},
    )


@router.post(
    "/datasets/{dataset_id}/versions/{version}/quality", status_code=202, response_model=Accepted
)
async def evaluate_quality(
    dataset_id: str, version: VersionNumber, request: Request, who: Writer
) -> Accepted:
    """Start a quality evaluation; the report is stored with the version."""
    return await start_version_job(request, who, dataset_id, version, "quality", {})


@router.get("/datasets/{dataset_id}/versions/{version}/quality")
async def read_quality(
    dataset_id: str, version: VersionNumber, session: SessionDep, _who: Reader
) -> dict[str, Any]:
    row = await get_version(session, dataset_id, version)
    if row.quality is None:
        raise NotFound("no quality report yet; POST to this path to evaluate")
    return row.quality
