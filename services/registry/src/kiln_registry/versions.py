"""Registered models and their versions: lookup, registration, artifacts and the operation log."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import (
    ModelArtifact,
    ModelSignature,
    ModelVersionCreated,
    ModelVersionLineage,
    Preprocessing,
)
from kiln_core.db import utcnow
from kiln_core.errors import NotFound
from kiln_core.service import ServiceRuntime
from kiln_core.storage import blob_key
from kiln_registry.models import (
    Alias,
    ModelPublic,
    ModelVersion,
    Operation,
    RegisteredModel,
    VersionPublic,
)


async def get_model(session: AsyncSession, name: str, *, lock: bool = False) -> RegisteredModel:
    query = select(RegisteredModel).where(RegisteredModel.name == name)
    if lock:
        query = query.with_for_update()
    model = (await session.exec(query)).first()
    if model is None:
        raise NotFound(f"model {name!r} does not exist")
    return model


async def get_version(session: AsyncSession, model: RegisteredModel, number: int) -> ModelVersion:
    version = (
        await session.exec(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.number == number
            )
        )
    ).first()
    if version is None:
        raise NotFound(f"model {model.name!r} has no version {number}")
    return version


async def log_operation(
    session: AsyncSession,
    model: RegisteredModel,
    action: str,
    actor: str,
    details: dict[str, Any] | None = None,
    version: ModelVersion | None = None,
) -> None:
    """Append to the operation log in the caller's transaction, with the change it records."""
    session.add(
        Operation(
            model_id=model.id,
            version_id=version.id if version else None,
            action=action,
            actor=actor,
            details=details or {},
        )
    )


async def create_model(
    session: AsyncSession,
    name: str,
    actor: str,
    *,
    description: str = "",
    tags: list[str] | None = None,
    task_type: str | None = None,
    team: str = "default",
) -> RegisteredModel:
    model = RegisteredModel(
        name=name,
        team=team,
        description=description,
        tags=tags or [],
        task_type=task_type,
        created_by=actor,
    )
    session.add(model)
    await log_operation(
        session, model, "model.created", actor, {"description": description, "tags": model.tags}
    )
    await session.flush()
    return model


async def known_check(
    session: AsyncSession, raw: bytes, signature: ModelSignature, label_map: list[str]
) -> dict[str, Any] | None:
    """The check of an imported version with these very bytes and the same declared signature
    and labels, if the registry already ran it (the check is deterministic: same file, same
    zero inputs), so registering a stored artifact again skips loading it in a child."""
    digest = hashlib.sha256(raw).hexdigest()
    wanted = signature.model_dump(mode="json")
    rows = await session.exec(
        select(ModelVersion.artifact, ModelVersion.lineage)
        .where(ModelVersion.sha256 == digest)
        .order_by(col(ModelVersion.created_at).desc())
        .limit(20)
    )
    for artifact, lineage in rows.all():
        if (
            "checked_outputs" in lineage
            and artifact.get("signature") == wanted
            and artifact.get("label_map") == label_map
        ):
            return {"output_shapes": lineage["checked_outputs"]}
    return None


async def store_artifact(
    runtime: ServiceRuntime,
    raw: bytes,
    *,
    signature: ModelSignature,
    label_map: list[str],
    preprocessing: Preprocessing,
) -> ModelArtifact:
    """Put checked model bytes in the content-addressed store (the registry's own copy)."""
    ref = await runtime.store.put_blob(raw)
    return ModelArtifact(
        uri=runtime.store.uri(blob_key(ref.sha256)),
        key=blob_key(ref.sha256),
        sha256=ref.sha256,
        size_bytes=ref.size,
        format="torchscript",
        signature=signature,
        label_map=label_map,
        preprocessing=preprocessing,
    )


async def register_version(
    session: AsyncSession,
    runtime: ServiceRuntime,
    model: RegisteredModel,
    *,
    artifact: ModelArtifact,
    lineage: ModelVersionLineage,
    actor: str,
    metrics: dict[str, float] | None = None,
    params: dict[str, Any] | None = None,
    evaluation_split: str | None = None,
    training_job_id: str | None = None,
    compression: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    description: str = "",
    lineage_extra: dict[str, Any] | None = None,
) -> ModelVersion:
    """Number a new version of ``model``, log it and stage ``model_version.created``."""
    locked = await get_model(session, model.name, lock=True)
    number = locked.next_version
    locked.next_version = number + 1
    locked.updated_at = utcnow()
    session.add(locked)
    version = ModelVersion(
        model_id=locked.id,
        number=number,
        metrics=metrics or {},
        params=params or {},
        evaluation_split=evaluation_split,
        artifact=artifact.model_dump(mode="json"),
        sha256=artifact.sha256,
        size_bytes=artifact.size_bytes,
        lineage={**lineage.model_dump(mode="json"), **(lineage_extra or {})},
        training_job_id=training_job_id,
        compression=compression,
        tags=tags or [],
        description=description,
        created_by=actor,
    )
    session.add(version)
    await log_operation(
        session,
        locked,
        "version.created",
        actor,
        {"version": number, "source": lineage.source, "sha256": artifact.sha256},
        version,
    )
    await session.flush()
    await runtime.emit(
        session,
        ModelVersionCreated(
            model_name=locked.name,
            version=number,
            version_id=version.id,
            artifact=artifact,
            metrics=version.metrics,
            lineage=lineage,
        ),
        subject=locked.name,
    )
    return version


async def aliases_by_version(session: AsyncSession, model: RegisteredModel) -> dict[str, list[str]]:
    rows = (await session.exec(select(Alias).where(Alias.model_id == model.id))).all()
    out: dict[str, list[str]] = {}
    for alias in rows:
        out.setdefault(alias.version_id, []).append(alias.name)
    return {k: sorted(v) for k, v in out.items()}


def version_public(
    model: RegisteredModel, version: ModelVersion, aliases: list[str]
) -> VersionPublic:
    return VersionPublic(
        model_name=model.name,
        version=version.number,
        version_id=version.id,
        status=version.status,
        aliases=aliases,
        description=version.description,
        tags=version.tags,
        metrics=version.metrics,
        params=version.params,
        evaluation_split=version.evaluation_split,
        artifact=ModelArtifact.model_validate(version.artifact),
        sha256=version.sha256,
        size_bytes=version.size_bytes,
        lineage=version.lineage,
        compression=version.compression,
        created_by=version.created_by,
        created_at=version.created_at,
        updated_at=version.updated_at,
    )


async def models_public(session: AsyncSession, models: list[RegisteredModel]) -> list[ModelPublic]:
    """API views of models with their latest version and aliases, in two queries."""
    ids = [m.id for m in models]
    aliases: dict[str, dict[str, int]] = {i: {} for i in ids}
    latest: dict[str, int] = {}
    if ids:
        rows = await session.exec(
            select(Alias.model_id, Alias.name, ModelVersion.number)
            .join(ModelVersion, col(ModelVersion.id) == col(Alias.version_id))
            .where(col(Alias.model_id).in_(ids))
        )
        for model_id, alias, number in rows.all():
            aliases[model_id][alias] = number
        numbers = await session.exec(
            select(ModelVersion.model_id, func.max(ModelVersion.number))
            .where(col(ModelVersion.model_id).in_(ids))
            .group_by(col(ModelVersion.model_id))
        )
        latest = {model_id: number for model_id, number in numbers.all()}
    return [
        ModelPublic(
            id=m.id,
            name=m.name,
            team=m.team,
            description=m.description,
            task_type=m.task_type,
            tags=m.tags,
            created_by=m.created_by,
            latest_version=latest.get(m.id),
            aliases=aliases.get(m.id, {}),
            created_at=m.created_at,
            updated_at=m.updated_at,
        )
        for m in models
    ]
