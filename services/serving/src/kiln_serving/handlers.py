"""What the serving service does when other services' events arrive."""

from __future__ import annotations

import logging

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import ModelVersionPromoted
from kiln_core.db import aware, new_id
from kiln_core.events import CloudEvent
from kiln_core.inbox import EventHandler
from kiln_core.membership import membership_handlers
from kiln_core.ping import ping_handlers
from kiln_core.service import runtime_of
from kiln_core.wake import wake_on_commit
from kiln_serving.model_repository import triton_model_name
from kiln_serving.models import (
    Deployment,
    DeploymentState,
    Endpoint,
    Promotion,
    deployments_channel,
)

log = logging.getLogger(__name__)


def follows(endpoint: Endpoint, alias: str) -> bool:
    """Whether a promotion to ``alias`` concerns this endpoint: its own alias always, the
    candidate alias on endpoints that roll out gradually (canary, shadow, A/B)."""
    if alias == endpoint.alias:
        return True
    return endpoint.strategy != "direct" and alias == endpoint.candidate_alias


async def request_deployment(session: AsyncSession, endpoint: Endpoint, p: Promotion) -> bool:
    """Record a pending deployment of a promoted version on ``endpoint`` unless it is already
    there or on its way; the controller loads it, warms it up and only then moves traffic."""
    current = (
        await session.exec(
            select(Deployment).where(
                Deployment.endpoint == endpoint.name,
                col(Deployment.state).in_(
                    [
                        DeploymentState.pending,
                        DeploymentState.loading,
                        DeploymentState.candidate,
                        DeploymentState.stable,
                    ]
                ),
            )
        )
    ).all()
    if any(d.version_id == p.version_id for d in current):
        return False  # a redelivery, or a canary version now promoted to production
    deployment_id = new_id()
    session.add(
        Deployment(
            id=deployment_id,
            endpoint=endpoint.name,
            model_name=p.model_name,
            version=p.version,
            version_id=p.version_id,
            alias=p.alias,
            triton_model=triton_model_name(endpoint.name, p.version, deployment_id),
            artifact=p.artifact,
            dataset_id=p.dataset_id,
            event_id=p.event_id,
        )
    )
    # The controller deploys it as soon as this commits, not at its next poll.
    await wake_on_commit(session, deployments_channel(runtime_of(session).db.schema))
    log.info(
        "deployment requested",
        extra={"endpoint": endpoint.name, "model": p.model_name, "version": p.version},
    )
    return True


async def on_model_version_promoted(
    session: AsyncSession, event: CloudEvent, data: ModelVersionPromoted
) -> None:
    """Remember the alias's new version and deploy it on every endpoint following it."""
    promotion = await session.get(Promotion, (data.model_name, data.alias))
    if promotion is not None and aware(promotion.promoted_at) > event.time:
        promotion = None  # an older event arriving late changes nothing about the alias
    else:
        promotion = promotion or Promotion(
            model_name=data.model_name,
            alias=data.alias,
            version=0,
            version_id="",
            artifact={},
            event_id="",
        )
        promotion.version, promotion.version_id = data.version, data.version_id
        promotion.artifact = data.artifact.model_dump(mode="json")
        promotion.dataset_id, promotion.event_id = data.dataset_id, event.id
        promotion.promoted_at = event.time
        session.add(promotion)
    if promotion is None:
        return
    endpoints = (
        await session.exec(select(Endpoint).where(Endpoint.model_name == data.model_name))
    ).all()
    for endpoint in endpoints:
        if follows(endpoint, data.alias):
            await request_deployment(session, endpoint, promotion)


HANDLERS: dict[str, EventHandler] = {
    **ping_handlers("serving"),
    **membership_handlers(),
    ModelVersionPromoted.event_type: on_model_version_promoted,  # type: ignore[dict-item]
}
