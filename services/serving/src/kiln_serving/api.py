"""REST API of the serving service, under ``/v1``: endpoints and ``:predict``."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request, Response, status
from sqlmodel import col, select

from kiln_core.auth import Principal, principal_from_request, require_roles
from kiln_core.db import utcnow
from kiln_core.errors import (
    BadRequest,
    Conflict,
    DependencyUnavailable,
    Forbidden,
    KilnError,
    NotFound,
    ValidationFailed,
)
from kiln_core.http import SessionDep, get_runtime
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
from kiln_serving.traffic import ROUTE_KEY_HEADER, Route, ServingVersion
from kiln_serving.triton import InferenceFailed, TritonGateway, TritonUnavailable

WRITERS = ("ml-engineer", "admin")
READERS = ("viewer", "ml-engineer", "data-engineer", "admin")
CALLERS = ("predictor", "viewer", "ml-engineer", "data-engineer", "annotator", "admin")
Writer = Annotated[Principal, require_roles(*WRITERS)]
Reader = Annotated[Principal, require_roles(*READERS)]
VERSION_HEADER = "x-kiln-model-version"
SHADOW_LIMIT = 64  # mirrored requests in flight at most; beyond that shadows are skipped


class ModelFailed(KilnError):
    status = 502
    type = "inference-failed"
    title = "The model failed to answer"


@asynccontextmanager
async def controller_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs in every API process: the Triton client, the routing table and the controller."""
    runtime = app.state.runtime
    triton = TritonGateway(runtime.settings.triton_url)
    await triton.start()
    controller = Controller(runtime, triton)
    app.state.controller = controller
    stop = asyncio.Event()
    task = asyncio.ensure_future(controller.run(stop))
    try:
        yield
    finally:
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
async def create_endpoint(body: EndpointCreate, session: SessionDep, who: Writer) -> EndpointPublic:
    """An endpoint serving ``model_name`` at ``alias``; versions arrive with promotions."""
    if await session.get(Endpoint, body.name) is not None:
        raise Conflict(f"endpoint {body.name!r} exists")
    endpoint = Endpoint(
        name=body.name,
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


@router.get("/endpoints")
async def list_endpoints(session: SessionDep, _: Reader) -> list[EndpointPublic]:
    rows = (await session.exec(select(Endpoint).order_by(col(Endpoint.name)))).all()
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
                **canary.fresh_analysis(),
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


def _sniff(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    return "application/octet-stream"


def parse_inputs(
    version: ServingVersion, body: bytes, content_type: str, max_batch: int
) -> tuple[np.ndarray, list[tuple[bytes, str]] | list[Any]]:
    """The Triton input for a request body, and each row's raw input (for flagging)."""
    kind = version.kind
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        if kind != "image":
            raise BadRequest(f"this endpoint takes {kind} inputs as JSON, not raw bytes")
        if not body:
            raise BadRequest("empty image body")
        return np.array([[body]], dtype=object), [(body, content_type)]
    try:
        payload = json.loads(body)
    except ValueError:
        raise BadRequest("the body must be JSON ({'inputs': [...]}) or image bytes") from None
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    if kind == "tabular" and all(isinstance(x, int | float) for x in inputs):
        inputs = [inputs]  # one row given flat
    if len(inputs) > max_batch:
        raise BadRequest(f"at most {max_batch} inputs per request")
    if kind == "image":
        raws: list[Any] = []
        for item in inputs:
            b64 = item.get("b64") if isinstance(item, dict) else item
            if not isinstance(b64, str):
                raise BadRequest("image inputs must be base64 strings")
            try:
                data = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest("an image input is not valid base64") from None
            raws.append((data, _sniff(data)))
        return np.array([[r[0]] for r in raws], dtype=object), raws
    if kind == "text":
        if not all(isinstance(x, str) for x in inputs):
            raise BadRequest("text inputs must be strings")
        return np.array([[x.encode()] for x in inputs], dtype=object), inputs
    try:
        array = np.asarray(inputs, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest("tabular inputs must be lists of numbers") from None
    dims = version.input.dims
    if array.ndim != 1 + len(dims) or any(
        d > 0 and d != s for d, s in zip(dims, array.shape[1:], strict=True)
    ):
        raise BadRequest(f"each input must have shape {dims}, got {list(array.shape[1:])}")
    return array, inputs


def _raw(row: Any) -> tuple[bytes, str]:
    if isinstance(row, tuple):
        return row
    if isinstance(row, str):
        return row.encode(), "text/plain"
    return json.dumps(row).encode(), "application/json"


async def _infer(
    controller: Controller, version: ServingVersion, data: np.ndarray, config: EndpointConfig
) -> np.ndarray:
    table = controller.table
    table.acquire(version)
    started = time.perf_counter()
    ok = False
    try:
        probs = await controller.triton.infer_shared(
            version.triton_model,
            version.input.name,
            version.input.datatype,
            data,
            max_rows=config.max_batch_size,
            parallel=config.instance_count,
        )
        ok = True
        return probs
    except TritonUnavailable:
        controller.triton_failed()
        raise
    finally:
        table.release(version)
        table.record(version, (time.perf_counter() - started) * 1000, ok)


async def _shadow(
    controller: Controller,
    version: ServingVersion,
    data: np.ndarray,
    answer: np.ndarray,
    config: EndpointConfig,
) -> None:
    try:
        probs = await _infer(controller, version, data, config)
    except Exception:  # noqa: BLE001 - counted as an error of the candidate, never surfaced
        return
    agreed = bool((probs.argmax(axis=1) == answer.argmax(axis=1)).all())
    controller.table.record_shadow(version, agreed)


@router.post(
    "/endpoints/{name}:predict",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
                "image/*": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def predict(name: str, request: Request) -> Response:
    """Predict with the endpoint's model: JSON ``{"inputs": [...]}`` (feature rows, texts, or
    base64 images) or an image body. The answer names the model version that gave it."""
    started = time.perf_counter()
    # Checked inline: a sync dependency would cost a thread hop on the hottest path.
    if not principal_from_request(request).has(*CALLERS):
        raise Forbidden(f"requires one of the roles: {', '.join(CALLERS)}")
    controller = _controller(request)
    route: Route | None = controller.table.routes.get(name)
    if route is None or route.stable is None:
        # Created or first deployed a moment ago: this process may not have re-read it yet.
        await controller.refresh_routes()
        route = controller.table.routes.get(name)
    if route is None:
        raise NotFound(f"no endpoint {name!r}")
    version, shadow = route.pick(request.headers.get(ROUTE_KEY_HEADER))
    if version is None:
        raise DependencyUnavailable(f"endpoint {name!r} has no model version deployed yet")
    body = await request.body()
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    data, raws = parse_inputs(version, body, content_type, route.config.max_batch_size)
    try:
        probs = await _infer(controller, version, data, route.config)
    except TritonUnavailable as exc:
        raise DependencyUnavailable(f"the model server is unavailable: {exc}") from None
    except InferenceFailed as exc:
        stable = route.stable
        if stable is None or version is stable:
            raise ModelFailed(str(exc)[:500]) from None
        # A failing candidate is counted against it; the caller gets the stable answer.
        version = stable
        try:
            probs = await _infer(controller, version, data, route.config)
        except TritonUnavailable as exc2:
            raise DependencyUnavailable(f"the model server is unavailable: {exc2}") from None
        except InferenceFailed as exc2:
            raise ModelFailed(str(exc2)[:500]) from None
    if shadow is not None and sum(controller.table.inflight.values()) < SHADOW_LIMIT:
        task = asyncio.ensure_future(_shadow(controller, shadow, data, probs, route.config))
        controller._tasks.add(task)
        task.add_done_callback(controller._tasks.discard)
    latency_ms = (time.perf_counter() - started) * 1000
    top = probs.argmax(axis=1)
    labels = version.label_map
    predictions = []
    config = route.config
    for i, k in enumerate(top.tolist()):
        confidence = float(probs[i, k])
        label = labels[k] if k < len(labels) else str(k)
        predictions.append({"label": label, "confidence": round(confidence, 6)})
        if config.sample_rate or confidence < config.confidence_threshold:
            raw, ctype = _raw(raws[i]) if confidence < config.confidence_threshold else (None, "")
            controller.predictions.offer(
                name,
                version,
                label,
                confidence,
                latency_ms,
                sample_rate=config.sample_rate,
                threshold=config.confidence_threshold,
                raw_input=raw,
                content_type=ctype,
            )
    answer = {
        "endpoint": name,
        "model_name": version.model_name,
        "version": version.version,
        "version_id": version.version_id,
        "predictions": predictions,
    }
    return Response(
        json.dumps(answer),
        media_type="application/json",
        headers={
            VERSION_HEADER: str(version.version),
            "x-kiln-model-version-id": version.version_id,
        },
    )
