"""REST API of the registry service, under ``/v1``."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Path, Query, Request, UploadFile, status
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.auth import Admin, Principal, Reader, require_roles
from kiln_core.catalog import ModelArtifact, ModelVersionLineage
from kiln_core.db import INT32_MAX, utcnow
from kiln_core.errors import Conflict, NotFound, PayloadTooLarge, ValidationFailed
from kiln_core.http import Limit, Offset, SessionDep, get_runtime
from kiln_registry import torchscript
from kiln_registry.models import (
    ALIAS_PATTERN,
    Accepted,
    Alias,
    AliasPublic,
    CompressBody,
    ImportMetadata,
    Job,
    JobPublic,
    MetadataUpdate,
    ModelCreate,
    ModelPublic,
    ModelVersion,
    Operation,
    OperationPublic,
    Page,
    PolicyBody,
    PolicyPublic,
    PromoteBody,
    PromotionPolicy,
    RegisteredModel,
    VersionPublic,
    VersionStatus,
)
from kiln_registry.promotion import (
    alias_target,
    aliases_of_version,
    check_role,
    promote,
    remove_alias,
)
from kiln_registry.versions import (
    aliases_by_version,
    create_model,
    get_model,
    get_version,
    log_operation,
    models_public,
    register_version,
    store_artifact,
    version_public,
)

router = APIRouter(prefix="/v1", tags=["registry"])

WRITERS = ("ml-engineer", "admin")
Writer = Annotated[Principal, require_roles(*WRITERS)]
ModelName = Annotated[str, Path(description="registered model name")]
VersionNumber = Annotated[
    int, Path(ge=1, le=INT32_MAX, description="version number within the model")
]
AliasName = Annotated[str, Path(pattern=ALIAS_PATTERN, description="staging, canary, ...")]

MAX_MODEL_BYTES = 512 * 1024 * 1024


# --- models -------------------------------------------------------------------------------------


@router.post("/models", status_code=status.HTTP_201_CREATED, response_model=ModelPublic)
async def create_registered_model(body: ModelCreate, request: Request, who: Writer) -> ModelPublic:
    """Register a model name; versions come from training, imports and compression."""
    async with get_runtime(request).db.transaction() as session:
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
        )
        return (await models_public(session, [model]))[0]


@router.get("/models", response_model=Page[ModelPublic])
async def list_models(
    session: SessionDep,
    _who: Reader,
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
        changes = _apply_metadata(model, body)
        if changes:
            model.updated_at = utcnow()
            session.add(model)
            await log_operation(session, model, "model.updated", who.subject, changes)
        return (await models_public(session, [model]))[0]


def _apply_metadata(row: RegisteredModel | ModelVersion, body: MetadataUpdate) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for field in ("description", "tags"):
        new = getattr(body, field)
        old = getattr(row, field)
        if new is not None and new != old:
            changes[field] = {"from": old, "to": new}
            setattr(row, field, new)
    return changes


# --- versions -----------------------------------------------------------------------------------


async def _version_out(
    session: AsyncSession, model: RegisteredModel, version: ModelVersion
) -> VersionPublic:
    return version_public(model, version, await aliases_of_version(session, version))


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
    return await _version_out(session, model, await get_version(session, model, version))


@router.patch("/models/{name}/versions/{version}", response_model=VersionPublic)
async def update_version(
    name: ModelName, version: VersionNumber, body: MetadataUpdate, request: Request, who: Writer
) -> VersionPublic:
    """Change a version's description or tags (everything else is immutable); logged."""
    async with get_runtime(request).db.transaction() as session:
        model = await get_model(session, name, lock=True)
        row = await get_version(session, model, version)
        changes = _apply_metadata(row, body)
        if changes:
            row.updated_at = utcnow()
            session.add(row)
            await log_operation(session, model, "version.updated", who.subject, changes, row)
        return await _version_out(session, model, row)


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
    check = await asyncio.to_thread(torchscript.check_isolated, raw, meta.signature, meta.label_map)
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
        return await _version_out(session, model, version)


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
        return await _version_out(session, model, row)


ARTIFACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the TorchScript file; ETag and X-Kiln-Checksum carry its sha256",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    304: {"description": "If-None-Match matched the current ETag: nothing to download"},
}


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
    return await _artifact_response(request, model, row, if_none_match)


# --- aliases and promotion ----------------------------------------------------------------------


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
        return await _version_out(session, model, candidate)


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
    return await _artifact_response(request, model, row, if_none_match)


def _etag_matches(header: str | None, sha256: str) -> bool:
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/").strip('"') == sha256:
            return True
    return False


async def _artifact_response(
    request: Request, model: RegisteredModel, version: ModelVersion, if_none_match: str | None
) -> Response:
    headers = {
        "ETag": f'"{version.sha256}"',
        "X-Kiln-Checksum": f"sha256:{version.sha256}",
        "Repr-Digest": f"sha-256=:{base64.b64encode(bytes.fromhex(version.sha256)).decode()}:",
        "X-Kiln-Model": model.name,
        "X-Kiln-Model-Version": str(version.number),
        "X-Kiln-Model-Version-Id": version.id,
        "Cache-Control": "no-cache",
    }
    if _etag_matches(if_none_match, version.sha256):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    artifact = ModelArtifact.model_validate(version.artifact)
    store = get_runtime(request).store

    async def body() -> AsyncIterator[bytes]:
        async for chunk in store.stream(artifact.key):
            yield chunk

    filename = f"{model.name}-v{version.number}.pt"
    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={
            **headers,
            "Content-Length": str(version.size_bytes),
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


@router.get("/models/{name}/promotions", response_model=list[OperationPublic])
async def list_promotions(
    name: ModelName, session: SessionDep, _who: Reader, limit: Limit = 100
) -> list[OperationPublic]:
    """Every alias move of the model, newest first, with who made it."""
    model = await get_model(session, name)
    return await _operations(
        session, model, actions=["alias.promoted", "alias.removed"], limit=limit
    )


# --- policies -----------------------------------------------------------------------------------


@router.get("/models/{name}/policy", response_model=PolicyPublic)
async def read_policy(name: ModelName, session: SessionDep, _who: Reader) -> PolicyPublic:
    """The model's promotion policy (no gates and writer roles when none was set)."""
    model = await get_model(session, name)
    row = await session.get(PromotionPolicy, model.id)
    if row is None:
        return PolicyPublic(
            gated_aliases=[],
            promoter_roles=["ml-engineer", "admin"],  # WRITERS
            model_name=model.name,
            updated_by="",
            updated_at=None,
        )
    return PolicyPublic(
        **PolicyBody.model_validate(row.rules).model_dump(),
        model_name=model.name,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


@router.put("/models/{name}/policy", response_model=PolicyPublic)
async def set_policy(
    name: ModelName, body: PolicyBody, request: Request, who: Admin
) -> PolicyPublic:
    """Set the promotion policy: metric gates, regression gates against production, and the
    roles allowed to move the gated aliases. Only an admin may change it (it decides who may
    promote)."""
    for alias in body.gated_aliases:
        if not re.fullmatch(ALIAS_PATTERN, alias):
            raise ValidationFailed(f"gated_aliases: {alias!r} is not an alias name")
    async with get_runtime(request).db.transaction() as session:
        model = await get_model(session, name, lock=True)
        row = await session.get(PromotionPolicy, model.id)
        before = row.rules if row else None
        if row is None:
            row = PromotionPolicy(model_id=model.id, rules={})
        row.rules = body.model_dump(mode="json")
        row.updated_by = who.subject
        row.updated_at = utcnow()
        session.add(row)
        await log_operation(
            session, model, "policy.updated", who.subject, {"from": before, "to": row.rules}
        )
        return PolicyPublic(
            **body.model_dump(),
            model_name=model.name,
            updated_by=row.updated_by,
            updated_at=row.updated_at,
        )


# --- operation log ------------------------------------------------------------------------------


async def _operations(
    session: AsyncSession,
    model: RegisteredModel,
    *,
    version: ModelVersion | None = None,
    actions: list[str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[OperationPublic]:
    query = select(Operation).where(Operation.model_id == model.id)
    if version is not None:
        query = query.where(Operation.version_id == version.id)
    if actions:
        query = query.where(col(Operation.action).in_(actions))
    query = query.order_by(col(Operation.seq).desc())
    rows = (await session.exec(query.offset(offset).limit(limit))).all()
    numbers = dict(
        (
            await session.exec(
                select(ModelVersion.id, ModelVersion.number).where(
                    ModelVersion.model_id == model.id
                )
            )
        ).all()
    )
    return [
        OperationPublic(
            id=op.id,
            version=numbers.get(op.version_id) if op.version_id else None,
            action=op.action,
            actor=op.actor,
            details=op.details,
            at=op.at,
        )
        for op in rows
    ]


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
    items = await _operations(session, model, limit=limit, offset=offset)
    return Page(items=items, total=total, limit=limit, offset=offset)


@router.get("/models/{name}/versions/{version}/log", response_model=list[OperationPublic])
async def version_log(
    name: ModelName, version: VersionNumber, session: SessionDep, _who: Reader
) -> list[OperationPublic]:
    """Every change to one version, newest first."""
    model = await get_model(session, name)
    row = await get_version(session, model, version)
    return await _operations(session, model, version=row, limit=500)


# --- compression jobs ---------------------------------------------------------------------------


def _job_public(job: Job, model: RegisteredModel, number: int | None) -> JobPublic:
    return JobPublic(
        id=job.id,
        kind=job.kind,
        model_name=model.name,
        version=number,
        status=job.status,
        message=job.message,
        params=job.params,
        result=job.result,
        error=job.error,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


@router.post(
    "/models/{name}/versions/{version}/compress",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
)
async def compress_version(
    name: ModelName,
    version: VersionNumber,
    request: Request,
    who: Writer,
    body: CompressBody | None = None,
) -> Accepted:
    """Start a compression job (dynamic int8 quantisation of the Linear layers); it registers
    a derived version and reports the size change and top-1 agreement with this one."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        model = await get_model(session, name, lock=True)
        row = await get_version(session, model, version)
        if row.status == VersionStatus.archived:
            raise Conflict(f"version {version} is archived")
        job = Job(
            kind="compression",
            model_id=model.id,
            version_id=row.id,
            params=(body or CompressBody()).model_dump(mode="json"),
            created_by=who.subject,
        )
        session.add(job)
        await log_operation(
            session, model, "compression.requested", who.subject, {"job_id": job.id}, row
        )
    runtime.enqueue(job.id)
    return Accepted(job_id=job.id, status_url=f"/v1/jobs/{job.id}")


@router.get("/jobs/{job_id}", response_model=JobPublic)
async def read_job(job_id: str, session: SessionDep, _who: Reader) -> JobPublic:
    job = await session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id!r} does not exist")
    model = await session.get(RegisteredModel, job.model_id)
    version = await session.get(ModelVersion, job.version_id)
    if model is None:
        raise NotFound(f"job {job_id!r} belongs to a model that no longer exists")
    return _job_public(job, model, version.number if version else None)
