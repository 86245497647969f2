"""Aliases and promotion: move, remove, resolve (with the edge pull) and the promotion history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, status
from fastapi.responses import Response, StreamingResponse
from sqlmodel import col, select

from kiln_core.auth import Principal, Reader
from kiln_core.errors import NotFound
from kiln_core.http import Limit, SessionDep, get_runtime
from kiln_registry.api.common import (
    ARTIFACT_RESPONSES,
    AliasName,
    ModelName,
    artifact_response,
    operations,
    version_out,
)
from kiln_registry.models import (
    Alias,
    AliasPublic,
    ModelVersion,
    OperationPublic,
    PromoteBody,
    VersionPublic,
)
from kiln_registry.promotion import (
    alias_target,
    check_role,
    promote,
    remove_alias,
)
from kiln_registry.versions import (
    get_model,
    get_version,
)

router = APIRouter(prefix="/v1", tags=["registry"])


@router.get("/models/{name}/aliases", response_model=list[AliasPublic])
async def list_aliases(name: ModelName, session: SessionDep, _who: Reader) -> list[AliasPublic]:
    model = await get_model(session, name)
    rows = await session.exec(
        select(Alias, ModelVersion.number)
        .join(ModelVersion, col(ModelVersion.id) == col(Alias.version_id))
        .where(Alias.model_id == model.id)
        .order_by(col(Alias.name))
    )
    return [
        AliasPublic(
            alias=a.name,
            version=number,
            version_id=a.version_id,
            updated_by=a.updated_by,
            updated_at=a.updated_at,
        )
        for a, number in rows.all()
    ]


async def alias_mover(
    name: ModelName, alias: AliasName, request: Request, who: Reader
) -> Principal:
    """The caller, if the model's policy lets their role move ``alias`` (else 403), checked
    before the body is read so a caller who may not learns nothing of the model's versions."""
    async with get_runtime(request).db.session() as session:
        await check_role(session, await get_model(session, name), alias, who)
    return who


AliasMover = Annotated[Principal, Depends(alias_mover)]


@router.post(
    "/models/{name}/aliases/{alias}",
    response_model=VersionPublic,
    responses={
        403: {"description": "the caller's role may not move this alias"},
        409: {"description": "the version is archived"},
        422: {"description": "promotion-refused: the failing gates are listed"},
    },
)
async def promote_version(
    name: ModelName, alias: AliasName, body: PromoteBody, request: Request, who: AliasMover
) -> VersionPublic:
    """Point an alias (``staging``, ``canary``, ``production`` or a custom one) at a version.

    The model's promotion policy decides who may and which metric gates the version must pass;
    a refusal changes nothing. On success ``kiln.registry.model_version.promoted`` is emitted
    in the same transaction, carrying what serving needs."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        model = await get_model(session, name, lock=True)
        candidate = await get_version(session, model, body.version)
        await promote(session, runtime, model, alias, candidate, who, body.reason)
        return await version_out(session, model, candidate)


@router.delete("/models/{name}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_alias(
    name: ModelName, alias: AliasName, request: Request, who: AliasMover
) -> None:
    """Remove an alias (the same roles as moving it)."""
    async with get_runtime(request).db.transaction() as session:
        model = await get_model(session, name, lock=True)
        # Again under the model's lock: the policy may have changed since the first check.
        await check_role(session, model, alias, who)
        await remove_alias(session, model, alias, who)


@router.get(
    "/models/{name}/aliases/{alias}/artifact",
    response_class=StreamingResponse,
    responses=ARTIFACT_RESPONSES,
)
async def pull_alias_artifact(
    name: ModelName,
    alias: AliasName,
    request: Request,
    _who: Reader,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Edge pull: the TorchScript file the alias points at, streamed, with ``ETag`` (the
    sha256) and checksum headers. A matching ``If-None-Match`` answers 304 without reading
    the object store, so devices can poll cheaply."""
    async with get_runtime(request).db.session() as session:
        model = await get_model(session, name)
        row = await alias_target(session, model, alias)
    if row is None:
        raise NotFound(f"model {name!r} has no alias {alias!r}")
    return await artifact_response(request, model, row, if_none_match)


@router.get("/models/{name}/promotions", response_model=list[OperationPublic])
async def list_promotions(
    name: ModelName, session: SessionDep, _who: Reader, limit: Limit = 100
) -> list[OperationPublic]:
    """Every alias move of the model, newest first, with who made it."""
    model = await get_model(session, name)
    return await operations(
        session, model, actions=["alias.promoted", "alias.removed"], limit=limit
    )
