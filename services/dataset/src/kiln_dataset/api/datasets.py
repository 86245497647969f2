"""Datasets: create, list, read, update, archive, restore and soft delete."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, status
from sqlmodel import col, select

from kiln_core.auth import Reader
from kiln_core.db import aware, utcnow
from kiln_core.errors import Conflict, NotFound
from kiln_core.http import Limit, Offset, SessionDep, get_runtime
from kiln_core.teams import team_for_new, visible_teams
from kiln_dataset.api.common import Writer, dataset_public, datasets_public
from kiln_dataset.models import (
    Dataset,
    DatasetCreate,
    DatasetPublic,
    DatasetStatus,
    DatasetUpdate,
    Page,
)
from kiln_dataset.versions import get_dataset

router = APIRouter(prefix="/v1", tags=["datasets"])


@router.post("/datasets", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic)
async def create_dataset(body: DatasetCreate, request: Request, who: Writer) -> DatasetPublic:
    """Create a dataset. Names are unique among datasets that are not deleted."""
    runtime = get_runtime(request)
    team = team_for_new(who, body.team, runtime.settings.default_team)
    async with runtime.db.transaction() as session:
        clash = (
            await session.exec(
                select(Dataset).where(
                    Dataset.name == body.name, Dataset.team == team, Dataset.status != "deleted"
                )
            )
        ).first()
        if clash is not None:
            raise Conflict(f"a dataset named {body.name!r} already exists", dataset_id=clash.id)
        dataset = Dataset(
            **body.model_dump(mode="json", exclude={"team"}), team=team, owner=who.subject
        )
        session.add(dataset)
    async with runtime.db.session() as session:
        return await dataset_public(session, dataset)


@router.get("/datasets", response_model=Page[DatasetPublic])
async def list_datasets(
    session: SessionDep,
    who: Reader,
    limit: Limit = 50,
    offset: Offset = 0,
    team: Annotated[str | None, Query(description="only this team's datasets")] = None,
    task_type: str | None = None,
    source_channel: str | None = None,
    product_standard: str | None = None,
    media_format: str | None = None,
    usability: str | None = None,
    owner: str | None = None,
    tag: Annotated[str | None, Query(description="datasets carrying this tag")] = None,
    q: Annotated[str | None, Query(max_length=200, description="name contains")] = None,
    status_: Annotated[
        Literal["active", "archived", "deleted"] | None, Query(alias="status")
    ] = None,
) -> Page[DatasetPublic]:
    """Datasets, newest first, filtered by task type and tags."""
    query = select(Dataset)
    if status_:
        query = query.where(Dataset.status == status_)
    else:
        query = query.where(Dataset.status != DatasetStatus.deleted)
    for column, value in (
        (Dataset.task_type, task_type),
        (Dataset.source_channel, source_channel),
        (Dataset.product_standard, product_standard),
        (Dataset.media_format, media_format),
        (Dataset.usability, usability),
        (Dataset.owner, owner),
        (Dataset.team, team),
    ):
        if value is not None:
            query = query.where(column == value)
    if q:
        # autoescape: a '%' or '_' in the search is that character, not a wildcard.
        query = query.where(col(Dataset.name).contains(q, autoescape=True))
    rows = list((await session.exec(query.order_by(col(Dataset.created_at).desc()))).all())
    if tag:
        rows = [d for d in rows if tag in (d.tags or [])]
    teams = visible_teams(who)
    if teams is not None:
        rows = [d for d in rows if d.team in teams or teams.intersection(d.shared_with or [])]
    page = rows[offset : offset + limit]
    return Page(
        items=await datasets_public(session, page),
        total=len(rows),
        limit=limit,
        offset=offset,
    )


@router.get("/datasets/{dataset_id}", response_model=DatasetPublic)
async def read_dataset(dataset_id: str, session: SessionDep, _who: Reader) -> DatasetPublic:
    dataset = await session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id!r}")
    return await dataset_public(session, dataset)


@router.patch("/datasets/{dataset_id}", response_model=DatasetPublic)
async def update_dataset(
    dataset_id: str, body: DatasetUpdate, request: Request, _who: Writer
) -> DatasetPublic:
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        dataset = await get_dataset(session, dataset_id)
        for field, value in body.model_dump(exclude_unset=True, mode="json").items():
            setattr(dataset, field, sorted(set(value)) if field == "tags" else value)
        dataset.updated_at = utcnow()
        session.add(dataset)
    async with runtime.db.session() as session:
        return await dataset_public(session, dataset)


@router.delete("/datasets/{dataset_id}", response_model=DatasetPublic)
async def delete_dataset(
    dataset_id: str,
    request: Request,
    _who: Writer,
    retention_days: Annotated[int, Query(ge=0, le=3650)] = 7,
) -> DatasetPublic:
    """Soft delete: restorable until the retention period ends; a purge then removes it."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        dataset = await get_dataset(session, dataset_id, lock=True)
        dataset.status = DatasetStatus.deleted
        dataset.deleted_at = utcnow()
        dataset.purge_after = dataset.deleted_at + timedelta(days=retention_days)
        session.add(dataset)
    async with runtime.db.session() as session:
        return await dataset_public(session, dataset)


async def _set_status(request: Request, dataset_id: str, new: str, allowed: set[str]) -> Dataset:
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        dataset = await session.get(Dataset, dataset_id, with_for_update=runtime.db.is_postgres)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id!r}")
        if dataset.status not in allowed:
            raise Conflict(f"dataset is {dataset.status}; cannot become {new}")
        if (
            dataset.status == DatasetStatus.deleted
            and dataset.purge_after
            and (aware(dataset.purge_after) <= utcnow())
        ):
            raise Conflict("the retention period has ended; the dataset is being purged")
        if new == DatasetStatus.active and dataset.status == DatasetStatus.deleted:
            clash = (
                await session.exec(
                    select(Dataset).where(
                        Dataset.name == dataset.name,
                        Dataset.team == dataset.team,
                        Dataset.status != "deleted",
                        Dataset.id != dataset.id,
                    )
                )
            ).first()
            if clash is not None:
                raise Conflict(f"another dataset is now named {dataset.name!r}")
        dataset.status = new
        dataset.deleted_at = None
        dataset.purge_after = None
        dataset.updated_at = utcnow()
        session.add(dataset)
    return dataset


@router.post("/datasets/{dataset_id}/archive", response_model=DatasetPublic)
async def archive_dataset(
    dataset_id: str, request: Request, session: SessionDep, _who: Writer
) -> DatasetPublic:
    """Archive: read-only, kept, hidden from default lists only by status filter."""
    dataset = await _set_status(request, dataset_id, DatasetStatus.archived, {"active"})
    return await dataset_public(session, dataset)


@router.post("/datasets/{dataset_id}/restore", response_model=DatasetPublic)
async def restore_dataset(
    dataset_id: str, request: Request, session: SessionDep, _who: Writer
) -> DatasetPublic:
    """Undo an archive or a soft delete (within its retention period)."""
    dataset = await _set_status(request, dataset_id, DatasetStatus.active, {"archived", "deleted"})
    return await dataset_public(session, dataset)
