"""Registered models: create, list, read and update."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from sqlmodel import col, select

from kiln_core.auth import Reader
from kiln_core.db import utcnow
from kiln_core.errors import Conflict
from kiln_core.http import Limit, Offset, SessionDep, get_runtime
from kiln_core.teams import team_for_new, visible_teams
from kiln_registry.api.common import (
    ModelName,
    Writer,
    apply_metadata,
)
from kiln_registry.models import (
    MetadataUpdate,
    ModelCreate,
    ModelPublic,
    Page,
    RegisteredModel,
)
from kiln_registry.versions import (
    create_model,
    get_model,
    log_operation,
    models_public,
)

router = APIRouter(prefix="/v1", tags=["registry"])


@router.post("/models", status_code=status.HTTP_201_CREATED, response_model=ModelPublic)
async def create_registered_model(body: ModelCreate, request: Request, who: Writer) -> ModelPublic:
    """Register a model name; versions come from training, imports and compression."""
    runtime = get_runtime(request)
    team = team_for_new(who, body.team, runtime.settings.default_team)
    async with runtime.db.transaction() as session:
        exists = (
            await session.exec(select(RegisteredModel).where(RegisteredModel.name == body.name))
        ).first()
        if exists is not None:
            raise Conflict(f"model {body.name!r} already exists")
        model = await create_model(
            session,
            body.name,
            who.subject,
            description=body.description,
            tags=body.tags,
            task_type=body.task_type,
            team=team,
        )
        return (await models_public(session, [model]))[0]


@router.get("/models", response_model=Page[ModelPublic])
async def list_models(
    session: SessionDep,
    who: Reader,
    name: Annotated[str | None, Query(max_length=200, description="name contains")] = None,
    tag: Annotated[list[str] | None, Query(description="has every one of these tags")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[ModelPublic]:
    query = select(RegisteredModel).order_by(col(RegisteredModel.name))
    if name:
        # autoescape: a '%' or '_' in the search is that character, not a wildcard.
        query = query.where(col(RegisteredModel.name).contains(name, autoescape=True))
    rows = list((await session.exec(query)).all())
    # Tags are a JSON list; filtered here, which is fine at registry scale.
    wanted = set(tag or [])
    rows = [m for m in rows if wanted <= set(m.tags)]
    teams = visible_teams(who)
    if teams is not None:
        rows = [m for m in rows if m.team in teams]
    page = rows[offset : offset + limit]
    return Page(
        items=await models_public(session, page), total=len(rows), limit=limit, offset=offset
    )


@router.get("/models/{name}", response_model=ModelPublic)
async def read_model(name: ModelName, session: SessionDep, _who: Reader) -> ModelPublic:
    return (await models_public(session, [await get_model(session, name)]))[0]


@router.patch("/models/{name}", response_model=ModelPublic)
async def update_model(
    name: ModelName, body: MetadataUpdate, request: Request, who: Writer
) -> ModelPublic:
    """Change the description or tags; the change is logged with its author."""
    async with get_runtime(request).db.transaction() as session:
        model = await get_model(session, name, lock=True)
        changes = apply_metadata(model, body)
        if changes:
            model.updated_at = utcnow()
            session.add(model)
            await log_operation(session, model, "model.updated", who.subject, changes)
        return (await models_public(session, [model]))[0]
