"""What the registry does when other services' events arrive."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.auth import Principal
from kiln_core.catalog import ModelVersionLineage, TrainingJobSucceeded
from kiln_core.errors import EventRejected, NotFound
from kiln_core.events import CloudEvent
from kiln_core.inbox import EventHandler
from kiln_core.membership import membership_handlers
from kiln_core.ping import ping_handlers
from kiln_core.service import runtime_of
from kiln_core.storage import ObjectNotFound
from kiln_registry import torchscript
from kiln_registry.models import ModelVersion, PolicyBody, PromotionPolicy
from kiln_registry.promotion import PromotionRefused, promote
from kiln_registry.versions import (
    create_model,
    get_model,
    log_operation,
    register_version,
    store_artifact,
)

log = logging.getLogger(__name__)


async def on_training_job_succeeded(
    session: AsyncSession, event: CloudEvent, data: TrainingJobSucceeded
) -> None:
    """A finished training job becomes a new version of its model, once per job.

    The inbox already drops a redelivered event; the training job id guards against the same
    job announced by two different events. The artifact is verified against its checksum and
    checked like an import (loaded as TorchScript and run once against its signature), then
    copied into the registry's content-addressed store.
    """
    runtime = runtime_of(session)
    known = (
        await session.exec(select(ModelVersion).where(ModelVersion.training_job_id == data.job_id))
    ).first()
    if known is not None:
        log.info("training job already registered", extra={"job_id": data.job_id})
        return
    try:
        raw = await runtime.store.read_bytes(data.artifact.key)
    except ObjectNotFound:
        raise EventRejected(f"artifact {data.artifact.key!r} does not exist") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != data.artifact.sha256:
        raise EventRejected(
            f"artifact {data.artifact.key!r} has sha256 {digest}, the event says "
            f"{data.artifact.sha256}"
        )
    try:
        await asyncio.to_thread(
            torchscript.check_isolated, raw, data.artifact.signature, data.artifact.label_map
        )
    except torchscript.InvalidModel as exc:
        raise EventRejected(f"artifact of job {data.job_id}: {exc.detail}") from None
    artifact = await store_artifact(
        runtime,
        raw,
        signature=data.artifact.signature,
        label_map=data.artifact.label_map,
        preprocessing=data.artifact.preprocessing,
    )
    actor = f"training:{data.team}"
    try:
        model = await get_model(session, data.model_name)
    except NotFound:
        model = await create_model(session, data.model_name, actor, team=data.team)
    if model.team != data.team:
        raise EventRejected(
            f"job {data.job_id} of team {data.team!r} may not add a version to team "
            f"{model.team!r}'s model {data.model_name!r}"
        )
    version = await register_version(
        session,
        runtime,
        model,
        artifact=artifact,
        lineage=ModelVersionLineage(
            source="training",
            dataset_id=data.dataset_id,
            dataset_version=data.dataset_version,
            training_job_id=data.job_id,
            parent_model_version_id=data.parent_model_version_id,
        ),
        lineage_extra={
            "dataset_version_id": data.dataset_version_id,
            "template": data.template,
            "team": data.team,
            # Trained on another team's dataset, shared with this one: the lineage says whose.
            "dataset_team": data.dataset_team or data.team,
            "shared_dataset": (data.dataset_team or data.team) != data.team,
            "training_artifact_uri": data.artifact.uri,
        },
        actor=actor,
        metrics=data.metrics,
        params=data.params,
        evaluation_split=data.evaluation_split,
        training_job_id=data.job_id,
        description=f"trained by job {data.job_id} ({data.template})",
    )
    await auto_promote(session, runtime, model, version)


async def auto_promote(
    session: AsyncSession, runtime: Any, model: Any, version: ModelVersion
) -> None:
    """Continuous delivery: move the policy's ``auto_promote`` alias to a new trained version
    if it passes the gates. A refusal is logged, never an error: the version stays registered
    for a person to look at."""
    row = await session.get(PromotionPolicy, model.id)
    policy = PolicyBody.model_validate(row.rules) if row else None
    if policy is None or not policy.auto_promote:
        return
    robot = Principal("registry:auto-promote", frozenset({"admin"}))
    try:
        await promote(session, runtime, model, policy.auto_promote, version, robot, "auto-promote")
    except PromotionRefused as exc:
        await log_operation(
            session,
            model,
            "promotion.refused",
            robot.subject,
            {"alias": policy.auto_promote, "failed_gates": exc.extra.get("failed_gates", [])},
            version=version,
        )


HANDLERS: dict[str, EventHandler] = {
    **ping_handlers("registry"),
    **membership_handlers(),
    TrainingJobSucceeded.event_type: on_training_job_succeeded,
}
