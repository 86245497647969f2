"""What the registry API's route modules share: path parameters, the writer role and the
views several of them answer with."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Path, Request, status
from fastapi.responses import Response, StreamingResponse
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.auth import Principal, require_roles
from kiln_core.catalog import ModelArtifact
from kiln_core.db import INT32_MAX
from kiln_core.http import get_runtime
from kiln_registry.models import (
    ALIAS_PATTERN,
    MetadataUpdate,
    ModelVersion,
    Operation,
    OperationPublic,
    RegisteredModel,
    VersionPublic,
)
from kiln_registry.promotion import (
    aliases_of_version,
)
from kiln_registry.versions import (
    version_public,
)

WRITERS = ("ml-engineer", "admin")
Writer = Annotated[Principal, require_roles(*WRITERS)]
ModelName = Annotated[str, Path(description="registered model name")]
VersionNumber = Annotated[
    int, Path(ge=1, le=INT32_MAX, description="version number within the model")
]
AliasName = Annotated[str, Path(pattern=ALIAS_PATTERN, description="staging, canary, ...")]

MAX_MODEL_BYTES = 512 * 1024 * 1024
ARTIFACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the TorchScript file; ETag and X-Kiln-Checksum carry its sha256",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    304: {"description": "If-None-Match matched the current ETag: nothing to download"},
}


def apply_metadata(row: RegisteredModel | ModelVersion, body: MetadataUpdate) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for field in ("description", "tags"):
        new = getattr(body, field)
        old = getattr(row, field)
        if new is not None and new != old:
            changes[field] = {"from": old, "to": new}
            setattr(row, field, new)
    return changes


async def version_out(
    session: AsyncSession, model: RegisteredModel, version: ModelVersion
) -> VersionPublic:
    return version_public(model, version, await aliases_of_version(session, version))


async def artifact_response(
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
    if etag_matches(if_none_match, version.sha256):
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


async def operations(
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


def etag_matches(header: str | None, sha256: str) -> bool:
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/").strip('"') == sha256:
            return True
    return False
