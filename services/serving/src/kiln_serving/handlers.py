"""What the serving service does when other services' events arrive."""

from __future__ import annotations

import logging

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import ModelVersionPromoted
from kiln_core.db import new_id
from kiln_core.events import CloudEvent
from kiln_core.inbox import EventHandler
from kiln_core.ping import ping_handlers
from kiln_serving.model_repository import triton_model_name
from kiln_serving.models import Deployment, DeploymentState, Endpoint

log = logging.getLogger(__name__)


def follows(endpoint: Endpoint, alias: str) -> bool:
    """Whether a promotion to ``alias`` concerns this endpoint: its own alias always, the
    candidate alias on endpoints that roll out gradually (canary, shadow, A/B)."""
    if alias == endpoint.alias:
        return True
    return endpoint.strategy != "direct" and alias == endpoint.candidate_alias


async def on_model_version_promoted(
    session: AsyncSession, event: CloudEvent, data: ModelVersionPromoted
) -> None:
    """Record a pending deployment on every endpoint that follows the promoted alias; the
    controller loads it, warms it up and only then moves traffic."""
    endpoints = (
        await session.exec(select(Endpoint).where(Endpoint.model_name == data.model_name))
    ).all()
    for endpoint in endpoints:
        if not follows(endpoint, data.alias):
            continue
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
        if any(d.version_id == data.version_id for d in current):
            continue  # already serving or on its way (a redelivery, or canary → production)
        deployment_id = new_id()
        session.add(
            Deployment(
                id=deployment_id,
                endpoint=endpoint.name,
                model_name=data.model_name,
                version=data.version,
                version_id=data.version_id,
                alias=data.alias,
                triton_model=triton_model_name(endpoint.name, data.version, deployment_id),
                artifact=data.artifact.model_dump(mode="json"),
                dataset_id=data.dataset_id,
                event_id=event.id,
            )
        )
        log.info(
            "deployment requested",
            extra={"endpoint": endpoint.name, "model": data.model_name, "version": data.version},
        )


HANDLERS: dict[str, EventHandler] = {
    **ping_handlers("serving"),
    ModelVersionPromoted.event_type: on_model_version_promoted,  # type: ignore[dict-item]
}
