"""The ``:predict`` request path: parse the body, pick the version (traffic split), infer
through Triton, record outcomes for the canary analysis, offer the prediction to the sampling
and flagging log, and answer naming the version.

The path is served by :class:`PredictRoute`, a plain ASGI app placed in front of the FastAPI
stack: FastAPI's routing, dependency solving and exception middleware cost more CPU per call
than the prediction itself on a small model (profiled: ~30% of the process against ~10% for
the handler). It gives what the edge gives every route (request id, server span, HTTP metrics,
body limit), through :class:`~kiln_core.http.EdgeMiddleware`'s span and metrics but inline,
with one pass over the headers and no wrapped ``receive``/``send`` (profiled: ~20 µs less CPU
per request, about a tenth of the process's share), and answers errors as the service's
handlers would (problem+json)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from kiln_core.auth import Principal, principal_from_header, with_memberships
from kiln_core.errors import (
    BadRequest,
    DependencyUnavailable,
    Forbidden,
    KilnError,
    NotFound,
)
from kiln_core.http import EdgeMiddleware, problem_response, request_id_of
from kiln_core.metrics import PREDICTIONS
from kiln_core.teams import Owner, check_access
from kiln_core.telemetry import extract_context
from kiln_serving.detection import image_answer
from kiln_serving.models import EndpointConfig
from kiln_serving.traffic import ROUTE_KEY_HEADER, Route, ServingVersion
from kiln_serving.triton import InferenceFailed, TritonUnavailable

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kiln_serving.controller import Controller

log = logging.getLogger(__name__)
CALLERS = ("viewer", "ml-engineer", "data-engineer", "annotator", "admin")
_CALLER_ROLES = frozenset(CALLERS)
VERSION_HEADER = "x-kiln-model-version"
VERSION_ID_HEADER = "x-kiln-model-version-id"
VERSION_HEADER_B, VERSION_ID_HEADER_B = VERSION_HEADER.encode(), VERSION_ID_HEADER.encode()
SHADOW_LIMIT = 64  # mirrored requests in flight at most; beyond that shadows are skipped
PREFIX, SUFFIX = "/v1/endpoints/", ":predict"
_ROUTE_KEY = ROUTE_KEY_HEADER.encode()


class ModelFailed(KilnError):
    status = 502
    type = "inference-failed"
    title = "The model failed to answer"


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
        payload = orjson.loads(body)
    except ValueError:  # orjson.JSONDecodeError is one
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
    probs: np.ndarray | None = None
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
        scores = answer_scores(version, probs) if probs is not None else ()
        table.record(version, (time.perf_counter() - started) * 1000, ok, scores)


def answer_scores(version: ServingVersion, answer: np.ndarray) -> list[float]:
    """One score per input, what canary analysis compares between versions: a classifier's
    top-class probability, a detector's best box score (0 when it found nothing)."""
    if version.detector:
        if answer.shape[1] == 0:
            return [0.0] * answer.shape[0]
        return [float(v) for v in answer[:, :, 4].max(axis=1).clip(min=0.0)]
    return [float(v) for v in answer.max(axis=1)]


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
    if version.detector:  # the same class for each image's best box
        agreed = bool((_best_classes(probs) == _best_classes(answer)).all())
    else:
        agreed = bool((probs.argmax(axis=1) == answer.argmax(axis=1)).all())
    controller.table.record_shadow(version, agreed)


def _best_classes(boxes: np.ndarray) -> np.ndarray:
    """Each image's highest-scoring box's class (-1 for none), from ``[n, K, 6]`` rows."""
    if boxes.shape[1] == 0:
        return np.full(boxes.shape[0], -1.0)
    return boxes[np.arange(boxes.shape[0]), boxes[:, :, 4].argmax(axis=1), 5]


Parse = Callable[[ServingVersion, int], tuple[np.ndarray, list[Any]]]
# (controller, endpoint, pinned version, route key, body) → (answer, version)
InferV2 = Callable[
    ["Controller", str, int | None, str | None, bytes], Awaitable[tuple[bytes, ServingVersion]]
]


@dataclass(frozen=True)
class Answered:
    """What one routed inference gave: the version that answered, the model's raw answer
    (class probabilities, or a detector's ``[n, K, 6]`` boxes) and each input's prediction."""

    version: ServingVersion
    probs: np.ndarray
    predictions: list[dict[str, Any]]


async def _route(controller: Controller, name: str) -> Route:
    route: Route | None = controller.table.routes.get(name)
    if route is None or route.stable is None:
        # Created or first deployed a moment ago: this process may not have re-read it yet.
        await controller.refresh_routes()
        route = controller.table.routes.get(name)
    if route is None:
        raise NotFound(f"no endpoint {name!r}")
    return route


def pinned_version(route: Route, version: int) -> ServingVersion:
    """The deployed version of that number (stable or candidate) on the endpoint."""
    for deployed in (route.stable, route.candidate):
        if deployed is not None and deployed.version == version:
            return deployed
    raise NotFound(f"endpoint {route.endpoint!r} serves no version {version}")


async def infer_routed(
    controller: Controller,
    name: str,
    route_key: str | None,
    parse: Parse,
    *,
    pinned: int | None = None,
) -> Answered:
    """One inference as every protocol makes it: the endpoint's traffic split picks the
    version (or ``pinned`` names it), the request is counted for the canary analysis, a
    failing candidate falls back to the stable version, shadows are compared, and rows are
    offered to sampling and flagging. The caller has been authorised."""
    started = time.perf_counter()
    route = await _route(controller, name)
    if pinned is not None:
        version: ServingVersion | None = pinned_version(route, pinned)
        shadow = None
    else:
        version, shadow = route.pick(route_key)
    if version is None:
        raise DependencyUnavailable(f"endpoint {name!r} has no model version deployed yet")
    config = route.config
    data, raws = parse(version, config.max_batch_size)
    try:
        probs = await _infer(controller, version, data, config)
    except TritonUnavailable as exc:
        raise DependencyUnavailable(f"the model server is unavailable: {exc}") from None
    except InferenceFailed as exc:
        stable = route.stable
        if stable is None or version is stable or pinned is not None:
            raise ModelFailed(str(exc)[:500]) from None
        # A failing candidate is counted against it; the caller gets the stable answer.
        version = stable
        try:
            probs = await _infer(controller, version, data, config)
        except TritonUnavailable as exc2:
            raise DependencyUnavailable(f"the model server is unavailable: {exc2}") from None
        except InferenceFailed as exc2:
            raise ModelFailed(str(exc2)[:500]) from None
    if shadow is not None and sum(controller.table.inflight.values()) < SHADOW_LIMIT:
        task = asyncio.ensure_future(_shadow(controller, shadow, data, probs, config))
        controller._tasks.add(task)
        task.add_done_callback(controller._tasks.discard)
    latency_ms = (time.perf_counter() - started) * 1000
    if version.detector:
        predictions = _detections(controller, name, version, probs, raws, config, latency_ms)
    else:
        predictions = _classes(controller, name, version, probs, raws, config, latency_ms)
    PREDICTIONS.labels(name, str(version.version)).inc(len(predictions))
    return Answered(version, probs, predictions)


def class_names(version: ServingVersion, classes: int) -> list[str]:
    labels = version.label_map
    return [labels[k] if k < len(labels) else str(k) for k in range(classes)]


async def predict(
    controller: Controller,
    name: str,
    route_key: str | None,
    content_type: str,
    body: bytes,
    *,
    probabilities: bool = False,
) -> tuple[bytes, ServingVersion]:
    """The JSON answer to one ``:predict`` request and the version that gave it (the caller
    has been authorised); with ``probabilities`` a classifier's predictions carry every
    class's."""

    def parse(version: ServingVersion, max_batch: int) -> tuple[np.ndarray, list[Any]]:
        return parse_inputs(version, body, content_type, max_batch)

    answered = await infer_routed(controller, name, route_key, parse)
    version, predictions = answered.version, answered.predictions
    if probabilities and not version.detector and len(answered.probs):
        rows = answered.probs.tolist()
        names = class_names(version, len(rows[0]))
        for prediction, row in zip(predictions, rows, strict=True):
            prediction["probabilities"] = {n: round(p, 6) for n, p in zip(names, row, strict=True)}
    answer = {
        "endpoint": name,
        "model_name": version.model_name,
        "version": version.version,
        "version_id": version.version_id,
        "predictions": predictions,
    }
    return orjson.dumps(answer), version


def _classes(
    controller: Controller,
    name: str,
    version: ServingVersion,
    probs: np.ndarray,
    raws: list[Any],
    config: EndpointConfig,
    latency_ms: float,
) -> list[dict[str, Any]]:
    """A classifier's answer per row; rows under the threshold are offered for flagging."""
    labels = version.label_map
    threshold, sample_rate = config.confidence_threshold, config.sample_rate
    predictions = []
    # Plain lists: numpy's argmax and fancy indexing cost more than they save on a few rows.
    for i, row in enumerate(probs.tolist()):
        k = max(range(len(row)), key=row.__getitem__)  # the first of equal maxima, as argmax
        confidence = row[k]
        label = labels[k] if k < len(labels) else str(k)
        predictions.append({"label": label, "confidence": round(confidence, 6)})
        if sample_rate or confidence < threshold:
            raw, ctype = _raw(raws[i]) if confidence < threshold else (None, "")
            controller.predictions.offer(
                name,
                version,
                label,
                confidence,
                latency_ms,
                sample_rate=sample_rate,
                threshold=threshold,
                raw_input=raw,
                content_type=ctype,
            )
    return predictions


def _detections(
    controller: Controller,
    name: str,
    version: ServingVersion,
    boxes: np.ndarray,
    raws: list[Any],
    config: EndpointConfig,
    latency_ms: float,
) -> list[dict[str, Any]]:
    """A detector's answer per image (``[n, K, 6]`` rows); uncertain images, by the policy
    of :mod:`kiln_serving.detection`, are offered for flagging with their boxes."""
    threshold, sample_rate = config.confidence_threshold, config.sample_rate
    predictions = []
    for i in range(boxes.shape[0]):
        answer, confidence, shown = image_answer(
            boxes[i], version.label_map, config.box_score_floor
        )
        predictions.append(answer)
        if sample_rate or confidence < threshold:
            raw, ctype = _raw(raws[i]) if confidence < threshold else (None, "")
            controller.predictions.offer(
                name,
                version,
                answer["label"],
                confidence,
                latency_ms,
                sample_rate=sample_rate,
                threshold=threshold,
                raw_input=raw,
                content_type=ctype,
                boxes=shown,
            )
    return predictions


@dataclass(frozen=True)
class _RouteLabel:
    """What the edge middleware reads from ``scope["route"]`` to label the HTTP metrics."""

    path: str


class PredictRoute:
    """ASGI app answering ``POST /v1/endpoints/{name}:predict`` itself and passing every
    other request (other methods on that path too) to ``app``'s own stack."""

    def __init__(
        self, app: FastAPI, inner: ASGIApp, controller: Controller, infer_v2: InferV2
    ) -> None:
        self.app = app
        self.inner = inner
        self.controller = controller
        # The Open Inference Protocol's infer (kiln_serving.oip), handed in: oip builds on
        # this module, so this module does not import it.
        self.infer_v2 = infer_v2
        self.settings = app.state.settings
        # The edge's span, metrics and body limit for this route (its own __call__ serves the
        # other routes).
        max_body = int(self.settings.max_request_bytes)
        self.edge = EdgeMiddleware(inner, service="serving", max_body=max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            target = _inference_target(scope["path"])
            if target is not None:
                label, params = target
                scope["app"] = self.app
                scope["route"] = label
                scope["path_params"] = params
                await self._serve(scope, receive, send)
                return
        await self.inner(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The edge's work (request id, server span, body limit, metrics) done inline: one
        pass over the headers, no wrapped ``receive`` and ``send``."""
        started = time.perf_counter()
        content_type, route_key, authorization = b"application/json", None, ""
        request_id, length = b"", None
        trace_headers: list[tuple[str, bytes]] = []
        # uvicorn gives header names in lower case; the last of a repeated header wins, as in
        # the edge, except Authorization (the first, as Headers.get).
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"authorization":
                if not authorization:
                    authorization = value.decode("latin-1")
            elif key == _ROUTE_KEY:
                route_key = value.decode("latin-1")
            elif key == b"x-request-id":
                request_id = value
            elif key == b"content-length":
                length = value
            elif key == b"traceparent" or key == b"tracestate":
                trace_headers.append((key.decode(), value))
        rid = request_id_of(request_id)
        scope.setdefault("state", {})["request_id"] = rid
        ctx = extract_context(trace_headers)
        status = 500
        method, path = scope["method"], scope["path"]
        with self.edge.server_span(method, path, ctx, rid) as span:
            try:
                if self.edge.declares_too_much(length):
                    raise self.edge.too_large()
                principal = principal_from_header(authorization, self.settings)
                if not principal.has(*CALLERS):
                    raise Forbidden(f"requires one of the roles: {', '.join(CALLERS)}")
                params = scope["path_params"]
                if not principal.is_admin:
                    principal = await with_memberships(self.app.state, principal)
                    await self._check_team(principal, params["name"])
                body = await self._body(receive)
                if scope["route"] is PREDICT_LABEL:
                    answer, version = await predict(
                        self.controller,
                        params["name"],
                        route_key,
                        content_type.decode("latin-1").split(";")[0].strip(),
                        body,
                        probabilities=_asks_probabilities(scope.get("query_string", b"")),
                    )
                else:
                    answer, version = await self.infer_v2(
                        self.controller, params["name"], params.get("version"), route_key, body
                    )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(answer)).encode()),
                            (VERSION_HEADER_B, str(version.version).encode()),
                            (VERSION_ID_HEADER_B, version.version_id.encode()),
                            (b"x-request-id", rid.encode("latin-1")),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": answer})
                status = 200
            except _Disconnected:
                pass  # nobody to answer; counted as the edge counts it (500)
            except KilnError as exc:
                status = exc.status
                if scope["route"] is PREDICT_LABEL:
                    await _problem(exc, rid, scope, receive, send)
                else:
                    await _v2_error(exc, rid, send)
            except Exception:  # noqa: BLE001 - answered like the service's catch-all handler
                log.exception("unhandled error", extra={"path": path})
                err = KilnError("an unexpected error occurred; it has been logged")  # a 500
                await _problem(err, rid, scope, receive, send)
            finally:
                span.set_attribute("http.response.status_code", status)
                self.edge.observe(method, scope["route"].path, status, started)

    async def _check_team(self, principal: Principal, name: str) -> None:
        """Only the endpoint's team calls it (another team's is as absent as a missing one);
        the team comes from the in-memory route table, so this costs no query."""
        route = self.controller.table.routes.get(name)
        if route is None:
            await self.controller.refresh_routes()
            route = self.controller.table.routes.get(name)
        # A missing endpoint is refused before the body is read, as another team's is.
        owner = Owner(route.team if route else None, not_found=f"no endpoint {name!r}")
        check_access(principal, owner, "GET", _CALLER_ROLES)

    async def _body(self, receive: Receive) -> bytes:
        """The request body; a body longer than the limit (declared or not) is refused."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.edge.max_body:
                raise self.edge.too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _problem(
    exc: KilnError, request_id: str, scope: Scope, receive: Receive, send: Send
) -> None:
    response = problem_response(exc.status, exc.problem(instance=scope["path"]))
    response.headers["x-request-id"] = request_id  # Starlette encodes it as latin-1
    await response(scope, receive, send)


async def _v2_error(exc: KilnError, request_id: str, send: Send) -> None:
    """The Open Inference Protocol's error answer: ``{"error": "..."}``."""
    body = orjson.dumps({"error": exc.detail})
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode("latin-1")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


PREDICT_LABEL = _RouteLabel("/v1/endpoints/{name}" + SUFFIX)
V2_LABEL = _RouteLabel("/v2/models/{name}/infer")
V2_PINNED_LABEL = _RouteLabel("/v2/models/{name}/versions/{version}/infer")
V2_PREFIX = "/v2/models/"


def _inference_target(path: str) -> tuple[_RouteLabel, dict[str, Any]] | None:
    """Which inference route a POST path is, with its path parameters (None: another)."""
    if path.startswith(PREFIX) and path.endswith(SUFFIX):
        name = path[len(PREFIX) : -len(SUFFIX)]
        return (PREDICT_LABEL, {"name": name}) if name and "/" not in name else None
    if path.startswith(V2_PREFIX) and path.endswith("/infer"):
        parts = path[len(V2_PREFIX) : -len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            return V2_LABEL, {"name": parts[0]}
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2].isdigit():
            version = int(parts[2])
            if 1 <= version <= 2**31 - 1:
                return V2_PINNED_LABEL, {"name": parts[0], "version": version}
    return None


def _asks_probabilities(query: bytes) -> bool:
    """``?probabilities=true`` (or 1/yes) on ``:predict``."""
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"probabilities":
            return value.lower() in (b"true", b"1", b"yes", b"")
    return False


class _Disconnected(Exception):
    """The client went away before its body arrived."""


def install(app: FastAPI, controller: Controller, infer_v2: InferV2) -> None:
    """Put :class:`PredictRoute` in front of ``app``'s middleware stack (from the lifespan,
    when the stack exists or is about to be built)."""
    inner = app.middleware_stack or app.build_middleware_stack()
    app.middleware_stack = PredictRoute(app, inner, controller, infer_v2)
