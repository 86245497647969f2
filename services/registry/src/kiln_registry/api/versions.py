"""Versions: list, read, update, import, archive and download."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Request, UploadFile, status
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from sqlmodel import col, select

from kiln_core.auth import Reader
from kiln_core.catalog import ModelVersionLineage
from kiln_core.db import utcnow
from kiln_core.errors import Conflict, PayloadTooLarge, ValidationFailed
from kiln_core.http import Limit, Offset, SessionDep, get_runtime
from kiln_registry import torchscript
from kiln_registry.api.common import (
    ARTIFACT_RESPONSES,
    MAX_MODEL_BYTES,
    ModelName,
    VersionNumber,
    Writer,
    apply_metadata,
    artifact_response,
    version_out,
)
from kiln_registry.models import (
    ImportMetadata,
    MetadataUpdate,
    ModelVersion,
    Page,
    VersionPublic,
    VersionStatus,
)
from kiln_registry.promotion import (
    aliases_of_version,
)
from kiln_registry.versions import (
    aliases_by_version,
    get_model,
    get_version,
    known_check,
    log_operation,
    register_version,
    store_artifact,
    version_public,
)

router = APIRouter(prefix="/v1", tags=["registry"])


@router.get("/models/{name}/versions", response_model=Page[VersionPublic])
async def list_versions(
    name: ModelName,
    session: SessionDep,
    _who: Reader,
    status_: Annotated[VersionStatus | None, Query(alias="status")] = None,
    tag: Annotated[list[str] | None, Query(description="has every one of these tags")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[VersionPublic]:
    model = await get_model(session, name)
    query = (
        select(ModelVersion)
        .where(ModelVersion.model_id == model.id)
        .order_by(col(ModelVersion.number).desc())
    )
    if status_ is not None:
        query = query.where(ModelVersion.status == status_)
    rows = list((await session.exec(query)).all())
    wanted = set(tag or [])
    rows = [v for v in rows if wanted <= set(v.tags)]
    aliases = await aliases_by_version(session, model)
    return Page(
        items=[
            version_public(model, v, aliases.get(v.id, [])) for v in rows[offset : offset + limit]
        ],
        total=len(rows),
        limit=limit,
        offset=offset,
    )


@router.get("/models/{name}/versions/{version}", response_model=VersionPublic)
async def read_version(
    name: ModelName, version: VersionNumber, session: SessionDep, _who: Reader
) -> VersionPublic:
    model = await get_model(session, name)
    return await version_out(session, model, await get_version(session, model, version))


@router.patch("/models/{name}/versions/{version}", response_model=VersionPublic)
async def update_version(
    name: ModelName, version: VersionNumber, body: MetadataUpdate, request: Request, who: Writer
) -> VersionPublic:
    """Change a version's description or tags (everything else is immutable); logged."""
    async with get_runtime(request).db.transaction() as session:
        model = await get_model(session, name, lock=True)
        row = await get_version(session, model, version)
        changes = apply_metadata(row, body)
        if changes:
            row.updated_at = utcnow()
            session.add(row)
            await log_operation(session, model, "version.updated", who.subject, changes, row)
        return await version_out(session, model, row)


@router.post(
    "/models/{name}/versions",
    status_code=status.HTTP_201_CREATED,
    response_model=VersionPublic,
    responses={422: {"description": "not TorchScript, or the signature does not match"}},
)
async def import_version(
    name: ModelName,
    request: Request,
    who: Writer,
    file: Annotated[UploadFile, File(description="a TorchScript file (torch.jit.save)")],
    metadata: Annotated[
        str,
        Form(
            description=(
                "JSON: signature, label_map, preprocessing, and optionally metrics, params, "
                "evaluation_split, tags, description, dataset_id, dataset_version"
            )
        ),
    ],
) -> VersionPublic:
    """Import an external TorchScript model. It is loaded with ``torch.jit.load`` (never
    unpickled) and run once on zero inputs built from the declared signature; a file that
    fails either is refused and nothing is stored."""
    runtime = get_runtime(request)
    try:
        meta = ImportMetadata.model_validate_json(metadata)
    except ValidationError as exc:
        errors = [
            {"field": "metadata." + ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors()
        ]
        raise ValidationFailed(
            f"{errors[0]['field']}: {errors[0]['message']}", errors=errors
        ) from None
    async with runtime.db.session() as session:
        await get_model(session, name)
    raw = await file.read(MAX_MODEL_BYTES + 1)
    if len(raw) > MAX_MODEL_BYTES:
        raise PayloadTooLarge(f"a model file may be at most {MAX_MODEL_BYTES} bytes")
    async with runtime.db.session() as session:
        check = await known_check(session, raw, meta.signature, meta.label_map)
    if check is None:
        check = await asyncio.to_thread(
            torchscript.check_isolated, raw, meta.signature, meta.label_map
        )
    artifact = await store_artifact(
        runtime,
        raw,
        signature=meta.signature,
        label_map=meta.label_map,
        preprocessing=meta.preprocessing,
    )
    async with runtime.db.transaction() as session:
        model = await get_model(session, name, lock=True)
        version = await register_version(
            session,
            runtime,
            model,
            artifact=artifact,
            lineage=ModelVersionLineage(
                source="import", dataset_id=meta.dataset_id, dataset_version=meta.dataset_version
            ),
            lineage_extra={"filename": file.filename, "checked_outputs": check["output_shapes"]},
            actor=who.subject,
            metrics=meta.metrics,
            params=meta.params,
            evaluation_split=meta.evaluation_split,
            tags=meta.tags,
            description=meta.description,
        )
        return await version_out(session, model, version)


@router.post("/models/{name}/versions/{version}/archive", response_model=VersionPublic)
async def archive_version(
    name: ModelName, version: VersionNumber, request: Request, who: Writer
) -> VersionPublic:
    """Retire a version; one an alias still points at must be moved off first."""
    async with get_runtime(request).db.transaction() as session:
        model = await get_model(session, name, lock=True)
        row = await get_version(session, model, version)
        aliases = await aliases_of_version(session, row)
        if aliases:
            raise Conflict(
                f"version {version} is still aliased as {', '.join(aliases)}; move them first",
                aliases=aliases,
            )
        if row.status != VersionStatus.archived:
            await log_operation(
                session, model, "version.archived", who.subject, {"from": row.status}, row
            )
            row.status = VersionStatus.archived
            row.updated_at = utcnow()
            session.add(row)
        return await version_out(session, model, row)


@router.get(
    "/models/{name}/versions/{version}/artifact",
    response_class=StreamingResponse,
    responses=ARTIFACT_RESPONSES,
)
async def download_version_artifact(
    name: ModelName,
    version: VersionNumber,
    request: Request,
    _who: Reader,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The version's TorchScript file, with its checksum and ETag."""
    async with get_runtime(request).db.session() as session:
        model = await get_model(session, name)
        row = await get_version(session, model, version)
    return await artifact_response(request, model, row, if_none_match)
