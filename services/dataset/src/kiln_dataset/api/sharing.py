"""Sharing a dataset read-only with another team, and the log of who shared what."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from sqlmodel import col, select

from kiln_core.auth import Reader
from kiln_core.catalog import DatasetShared
from kiln_core.errors import ValidationFailed
from kiln_core.http import Limit, Offset, SessionDep, get_runtime
from kiln_core.teams import (
    TEAM_NAME,
    TeamOperation,
    TeamOperationPublic,
    record_operation,
    visible_teams,
)
from kiln_dataset.api.common import Writer, dataset_public
from kiln_dataset.models import DatasetPublic, Page
from kiln_dataset.versions import get_dataset

router = APIRouter(prefix="/v1", tags=["sharing"])
TeamName = Annotated[str, PathParam(max_length=100, pattern=TEAM_NAME, description="a team")]


async def _share(
    request: Request, dataset_id: str, team: str, who: str, share: bool
) -> DatasetPublic:
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        dataset = await get_dataset(session, dataset_id, lock=runtime.db.is_postgres)
        if team == dataset.team:
            raise ValidationFailed(f"team '{team}' owns the dataset; share it with another team")
        before = set(dataset.shared_with or [])
        after = before | {team} if share else before - {team}
        if after != before:
            dataset.shared_with = sorted(after)
            session.add(dataset)
            action = "dataset.shared" if share else "dataset.unshared"
            record_operation(
                session,
                who,
                action,
                dataset.team,
                dataset_id,
                with_team=team,
                shared_with=sorted(after),
            )
            await runtime.emit(
                session,
                DatasetShared(
                    dataset_id=dataset_id,
                    team=dataset.team,
                    shared_with=sorted(after),
                    actor=who,
                ),
                subject=dataset_id,
            )
    async with runtime.db.session() as session:
        return await dataset_public(session, dataset)


@router.put("/datasets/{dataset_id}/shares/{team}", response_model=DatasetPublic)
async def share_dataset(
    dataset_id: str, team: TeamName, request: Request, who: Writer
) -> DatasetPublic:
    """Let ``team`` read the dataset and train on it (not change it). Sharing twice is a no-op."""
    return await _share(request, dataset_id, team, who.subject, share=True)


@router.delete("/datasets/{dataset_id}/shares/{team}", response_model=DatasetPublic)
async def unshare_dataset(
    dataset_id: str, team: TeamName, request: Request, who: Writer
) -> DatasetPublic:
    """Stop sharing the dataset with ``team``; models already trained on it keep their lineage."""
    return await _share(request, dataset_id, team, who.subject, share=False)


@router.get("/team-operations", response_model=Page[TeamOperationPublic])
async def list_team_operations(
    session: SessionDep,
    who: Reader,
    limit: Limit = 50,
    offset: Offset = 0,
    team: Annotated[str | None, Query(max_length=100)] = None,
) -> Page[TeamOperationPublic]:
    """The append-only log of sharing changes, newest first, for the caller's teams."""
    query = select(TeamOperation)
    teams = visible_teams(who)
    if teams is not None:
        query = query.where(col(TeamOperation.team).in_(sorted(teams)))
    if team is not None:
        query = query.where(TeamOperation.team == team)
    rows = list((await session.exec(query.order_by(col(TeamOperation.id).desc()))).all())
    return Page(
        items=[
            TeamOperationPublic.model_validate(r, from_attributes=True)
            for r in rows[offset : offset + limit]
        ],
        total=len(rows),
        limit=limit,
        offset=offset,
    )
