"""The operation log: every change to a model and its versions."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func
from sqlmodel import select

from kiln_core.auth import Reader
from kiln_core.http import Limit, Offset, SessionDep
from kiln_registry.api.common import (
    ModelName,
    VersionNumber,
    operations,
)
from kiln_registry.models import (
    Operation,
    OperationPublic,
    Page,
)
from kiln_registry.versions import (
    get_model,
    get_version,
)

router = APIRouter(prefix="/v1", tags=["registry"])


@router.get("/models/{name}/log", response_model=Page[OperationPublic])
async def model_log(
    name: ModelName, session: SessionDep, _who: Reader, limit: Limit = 100, offset: Offset = 0
) -> Page[OperationPublic]:
    """Every change to the model and its versions, newest first: who, when, what."""
    model = await get_model(session, name)
    total = (
        await session.exec(
            select(func.count()).select_from(Operation).where(Operation.model_id == model.id)
        )
    ).one()
    items = await operations(session, model, limit=limit, offset=offset)
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/models/{name}/versions/{version}/log", response_model=list[OperationPublic])
async def version_log(
    name: ModelName, version: VersionNumber, session: SessionDep, _who: Reader
) -> list[OperationPublic]:
    """Every change to one version, newest first."""
    model = await get_model(session, name)
    row = await get_version(session, model, version)
    return await operations(session, model, version=row, limit=500)
