"""Make Triton hold exactly the models the database says should be loaded: reload stable and
candidate versions from their stored artifacts, unload retired ones. Runs at start-up, when
Triton comes back after being unavailable, and every few seconds as a cheap check."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlmodel import col, select

from kiln_core.db import utcnow
from kiln_serving.models import Deployment, DeploymentState, Endpoint, EndpointConfig

if TYPE_CHECKING:
    from kiln_serving.controller import Controller

log = logging.getLogger(__name__)


async def reconcile(controller: Controller, *, startup: bool = False) -> None:
    runtime, triton = controller.runtime, controller.triton
    async with runtime.db.transaction() as session:
        # A load cut short by a crash starts over: at once in a single-process (SQLite) setup,
        # else once it is stale, since another API process may still be loading it.
        stale = utcnow() - timedelta(seconds=0 if startup and not runtime.db.is_postgres else 120)
        for d in (
            await session.exec(
                select(Deployment).where(
                    Deployment.state == DeploymentState.loading, Deployment.updated_at < stale
                )
            )
        ).all():
            d.state, d.updated_at = DeploymentState.pending, utcnow()
            session.add(d)
        rows = (
            await session.exec(
                select(Deployment, Endpoint)
                .join(Endpoint, col(Endpoint.name) == col(Deployment.endpoint), isouter=True)
                .where(
                    col(Deployment.state).in_(
                        [
                            DeploymentState.stable,
                            DeploymentState.candidate,
                            DeploymentState.draining,
                            DeploymentState.retired,
                            DeploymentState.failed,
                        ]
                    )
                )
            )
        ).all()
        # Asked after reading the database: a version going live meanwhile is loaded already.
        loaded = await triton.loaded_models()
        missing: list[tuple[Deployment, EndpointConfig]] = []
        unwanted: list[str] = []
        for d, endpoint in rows:
            wanted = d.state in (DeploymentState.stable, DeploymentState.candidate)
            if wanted and d.triton_model not in loaded and endpoint is not None:
                missing.append((d, EndpointConfig.model_validate(endpoint.config)))
            elif d.state == DeploymentState.draining and d.triton_model not in loaded:
                d.state, d.updated_at = DeploymentState.retired, utcnow()
                session.add(d)
            elif (
                d.state in (DeploymentState.retired, DeploymentState.failed)
                and d.triton_model in loaded
            ):
                unwanted.append(d.triton_model)
    for name in unwanted:
        log.info("unloading a model serving no longer wants", extra={"triton_model": name})
        await triton.unload(name)
    if missing:
        log.info("reloading models Triton lost", extra={"count": len(missing)})
        results = await asyncio.gather(
            *(controller.load_version(d, config) for d, config in missing), return_exceptions=True
        )
        for (d, _), result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "reloading %s failed; will retry: %r",
                    d.triton_model,
                    result,
                    extra={"triton_model": d.triton_model},
                )
