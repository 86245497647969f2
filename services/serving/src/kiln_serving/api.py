"""REST API of the serving service, under ``/v1``: endpoints and ``:predict``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response, status
from sqlmodel import col, select

from kiln_core.auth import (
    Principal,
    check_ownership,
    principal_from_request,
    require_roles,
    with_memberships,
)
from kiln_core.db import utcnow
from kiln_core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from kiln_core.http import PROBLEM_JSON, SessionDep, get_runtime
from kiln_core.teams import locked_limits, team_for_new, visible_teams, within
from kiln_serving import canary
from kiln_serving.controller import Controller, _endpoint_for_update, _pair
from kiln_serving.handlers import request_deployment
from kiln_serving.models import (
    Deployment,
    DeploymentPublic,
    DeploymentState,
    Endpoint,
    EndpointConfig,
    EndpointCreate,
    EndpointPublic,
    EndpointUpdate,
    Promotion,
)
from kiln_serving.oip import infer_v2
from kiln_serving.predict import CALLERS, VERSION_HEADER, VERSION_ID_HEADER
from kiln_serving.predict import install as install_predict_route
from kiln_serving.predict import predict as predict_once
from kiln_serving.traffic import ROUTE_KEY_HEADER
from kiln_serving.triton import TritonGateway

WRITERS = ("ml-engineer", "admin")
READERS = ("viewer", "ml-engineer", "data-engineer", "admin")
Writer = Annotated[Principal, require_roles(*WRITERS)]
Reader = Annotated[Principal, require_roles(*READERS)]


@asynccontextmanager
async def controller_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs in every API process: the Triton client, the routing table and the controller."""
    runtime = app.state.runtime
    triton = TritonGateway(runtime.settings.triton_url)
    await triton.start()
    controller = Controller(runtime, triton)
    app.state.controller = controller
    install_predict_route(app, controller, infer_v2)
    runtime.checks["triton"] = controller.check_triton  # /readyz: Triton and routed models
    stop = asyncio.Event()
    task = asyncio.ensure_future(controller.run(stop))
    try:
        yield
    finally:
        runtime.checks.pop("triton", None)
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await triton.stop()


router = APIRouter(prefix="/v1", tags=["serving"], lifespan=controller_lifespan)


def _controller(request: Request) -> Controller:
    return request.app.state.controller  # type: ignore[no-any-return]


# --- endpoints ----------------------------------------------------------------------------------


async def _public(session: SessionDep, endpoint: Endpoint) -> EndpointPublic:
    deployments = (
        await session.exec(
            select(Deployment)
            .where(Deployment.endpoint == endpoint.name)
            .order_by(col(Deployment.created_at).desc())
            .limit(20)
        )
    ).all()
    by_id = {d.id: d for d in deployments}
    stable = by_id.get(endpoint.stable_id or "")
    candidate = by_id.get(endpoint.candidate_id or "")
    traffic: dict[str, float] = {}
    w = endpoint.candidate_weight / 100 if candidate else 0.0
    if stable:
        traffic[str(stable.version)] = round(1 - w, 4)
    if candidate:
        traffic[str(candidate.version)] = round(w, 4)
    busy = any(d.state in (DeploymentState.pending, DeploymentState.loading) for d in deployments)
    state = (
        "rolling_out" if candidate else "deploying" if busy else "serving" if stable else "empty"
    )
    return EndpointPublic(
        name=endpoint.name,
        team=endpoint.team,
        model_name=endpoint.model_name,
        alias=endpoint.alias,
        candidate_alias=endpoint.candidate_alias,
        strategy=endpoint.strategy,
        config=EndpointConfig.model_validate(endpoint.config),
        state=state,
        traffic=traffic,
        stable=DeploymentPublic.of(stable) if stable else None,
        candidate=DeploymentPublic.of(candidate) if candidate else None,
        deployments=[DeploymentPublic.of(d) for d in deployments],
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


@router.post("/endpoints", status_code=status.HTTP_201_CREATED)
async def create_endpoint(
    body: EndpointCreate, request: Request, session: SessionDep, who: Writer
) -> EndpointPublic:
    """An endpoint serving ``model_name`` at ``alias``; versions arrive with promotions."""
    team = team_for_new(who, body.team, get_runtime(request).settings.default_team)
    await _within_team_limits(session, team, endpoints=1, instances=body.instance_count)
    if await session.get(Endpoint, body.name) is not None:
        raise Conflict(f"endpoint {body.name!r} exists")
    endpoint = Endpoint(
        name=body.name,
        team=team,
        model_name=body.model_name,
        alias=body.alias,
        candidate_alias=body.candidate_alias,
        strategy=body.strategy,
        config=body.config().model_dump(),
        created_by=who.subject,
    )
    session.add(endpoint)
    # The alias may have been promoted before the endpoint existed: start with that version.
    promotion = await session.get(Promotion, (endpoint.model_name, endpoint.alias))
    if promotion is not None:
        await request_deployment(session, endpoint, promotion)
    await session.commit()
    return await _public(session, endpoint)


async def _within_team_limits(
    session: SessionDep, team: str, *, endpoints: int, instances: int, besides: str = ""
) -> None:
    """Refuse more endpoints or model instances than the team's limits; the team's limits row
    stays locked until the caller commits, so concurrent requests count one at a time."""
    limits = await locked_limits(session, team)
    if not limits:
        return
    rows = (
        await session.exec(select(Endpoint).where(Endpoint.team == team, Endpoint.name != besides))
    ).all()
    within(limits, "endpoints", team, len(rows), endpoints)
    used = sum(int(e.config.get("instance_count", 1)) for e in rows)
    within(limits, "model_instances", team, used, instances)


@router.get("/endpoints")
async def list_endpoints(session: SessionDep, who: Reader) -> list[EndpointPublic]:
    query = select(Endpoint).order_by(col(Endpoint.name))
    teams = visible_teams(who)
    if teams is not None:
        query = query.where(col(Endpoint.team).in_(sorted(teams)))
    rows = (await session.exec(query)).all()
    return [await _public(session, e) for e in rows]


@router.get("/endpoints/{name}")
async def get_endpoint(name: str, session: SessionDep, _: Reader) -> EndpointPublic:
    """The endpoint with its traffic split, versions and rollout analysis."""
    endpoint = await session.get(Endpoint, name)
    if endpoint is None:
        raise NotFound(f"no endpoint {name!r}")
    return await _public(session, endpoint)


@router.patch("/endpoints/{name}")
async def update_endpoint(
    name: str, body: EndpointUpdate, session: SessionDep, _: Writer
) -> EndpointPublic:
    endpoint = await _endpoint_for_update(session, name)
    if endpoint is None:
        raise NotFound(f"no endpoint {name!r}")
    changes = body.model_dump(exclude_unset=True)
    if "instance_count" in changes:
        await _within_team_limits(
            session, endpoint.team, endpoints=0, instances=changes["instance_count"], besides=name
        )
    for field in ("alias", "candidate_alias", "strategy"):
        if field in changes:
            setattr(endpoint, field, changes.pop(field))
    try:
        endpoint.config = EndpointConfig.model_validate({**endpoint.config, **changes}).model_dump()
    except ValueError as exc:
        raise ValidationFailed(str(exc)) from None
    if endpoint.candidate_id and {"strategy", "ab_weight", "canary_steps"} & body.model_fields_set:
        # A rollout in progress continues under the new strategy from its first step.
        config = EndpointConfig.model_validate(endpoint.config)
        endpoint.candidate_weight = canary.initial_weight(endpoint.strategy, config)
        candidate = await session.get(Deployment, endpoint.candidate_id)
        if candidate is not None:
            candidate.analysis = {
                **canary.fresh_analysis(warmed=canary.warmed(candidate.analysis)),
                "shadow": candidate.analysis.get("shadow") or {},
            }
            session.add(candidate)
    endpoint.generation += 1
    endpoint.updated_at = utcnow()
    session.add(endpoint)
    await session.commit()
    return await _public(session, endpoint)


@router.delete("/endpoints/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_endpoint(name: str, session: SessionDep, _: Writer) -> Response:
    """Stop serving; its models drain and are unloaded."""
    endpoint = await _endpoint_for_update(session, name)
    if endpoint is None:
        raise NotFound(f"no endpoint {name!r}")
    for d in (await session.exec(select(Deployment).where(Deployment.endpoint == name))).all():
        if d.state in (DeploymentState.stable, DeploymentState.candidate):
            d.state, d.updated_at = DeploymentState.draining, utcnow()
        elif d.state == DeploymentState.pending:
            d.state, d.reason = DeploymentState.failed, "endpoint deleted"
        session.add(d)
    await session.delete(endpoint)
    await session.commit()
    return Response(status_code=204)


async def _rollout_action(request: Request, session: SessionDep, name: str, promote: bool) -> Any:
    runtime = get_runtime(request)
    endpoint = await _endpoint_for_update(session, name)
    if endpoint is None:
        raise NotFound(f"no endpoint {name!r}")
    stable, cand = await _pair(session, endpoint)
    if cand is None:
        raise Conflict(f"endpoint {name!r} has no rollout in progress")
    if promote:
        await canary.promote(runtime, session, endpoint, stable, cand, "promoted by hand")
    else:
        await canary.rollback(runtime, session, endpoint, stable, cand, "rolled back by hand")
    for row in (endpoint, stable, cand):
        if row is not None:
            session.add(row)
    await session.commit()
    await _controller(request).table.refresh(session)
    return await _public(session, endpoint)


@router.post("/endpoints/{name}:promote")
async def promote_candidate(
    name: str, request: Request, session: SessionDep, _: Writer
) -> EndpointPublic:
    """End a rollout (shadow, A/B or canary) by making the candidate the stable version."""
    return await _rollout_action(request, session, name, promote=True)  # type: ignore[no-any-return]


@router.post("/endpoints/{name}:rollback")
async def rollback_candidate(
    name: str, request: Request, session: SessionDep, _: Writer
) -> EndpointPublic:
    """End a rollout by sending all traffic back to the stable version."""
    return await _rollout_action(request, session, name, promote=False)  # type: ignore[no-any-return]


# --- predict ------------------------------------------------------------------------------------


@router.post(
    "/endpoints/{name}:predict",
    responses={
        502: {"description": "The model failed on this input", "content": {PROBLEM_JSON: {}}},
        503: {
            "description": "No model version is deployed yet, or the model server is down",
            "content": {PROBLEM_JSON: {}},
        },
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def predict(
    name: str,
    request: Request,
    probabilities: Annotated[
        bool, Query(description="each prediction carries every class's probability")
    ] = False,
) -> Response:
    """Predict with the endpoint's model: JSON ``{"inputs": [...]}`` (feature rows, texts, or
    base64 images) or an image body. The answer names the model version that gave it.

    Served by :class:`kiln_serving.predict.PredictRoute` in front of FastAPI; this route
    documents it and answers the same way should a request reach the router."""
    # Checked inline: a sync dependency would cost a thread hop on the hottest path.
    principal = principal_from_request(request)
    if not principal.has(*CALLERS):
        raise Forbidden(f"requires one of the roles: {', '.join(CALLERS)}")
    principal = await with_memberships(request.app.state, principal)
    await check_ownership(request, principal, frozenset(CALLERS))
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    body, version = await predict_once(
        _controller(request),
        name,
        request.headers.get(ROUTE_KEY_HEADER),
        content_type,
        await request.body(),
        probabilities=probabilities,
    )
    return Response(
        body,
        media_type="application/json",
        headers={VERSION_HEADER: str(version.version), VERSION_ID_HEADER: version.version_id},
    )
