"""FastAPI app factory: health and readiness, request ids, tracing, metrics, problem+json."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from fastapi import Depends, FastAPI, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute, iter_route_contexts
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kiln_core.db import MAX_PARAM_INT
from kiln_core.errors import PROBLEM_BASE, KilnError, PayloadTooLarge, ValidationFailed
from kiln_core.metrics import HTTP_REQUESTS, HTTP_SECONDS, REQUESTS_SHED, record_checks
from kiln_core.telemetry import extract_context, tracer

if TYPE_CHECKING:
    from kiln_core.service import ServiceRuntime

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a paginated list: the shape every service's list endpoints answer with."""

    items: list[T]
    total: int
    limit: int
    offset: int


# The paging parameters of every list endpoint.
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_PARAM_INT, description="items to skip")]


def problem_response(status: int, body: dict[str, Any]) -> JSONResponse:
    response = JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)
    if status in (429, 503):  # shed or waiting on a dependency: say when to come back
        response.headers["retry-after"] = str(RETRY_AFTER_S)
    return response


RETRY_AFTER_S = 1
# Served even at capacity: an orchestrator must still see the process alive and how it is.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def overloaded(detail: str) -> JSONResponse:
    """503 problem for a request shed because the process is at capacity."""
    return problem_response(
        503,
        {
            "type": PROBLEM_BASE + "overloaded",
            "title": "Overloaded",
            "status": 503,
            "detail": detail,
        },
    )


def _problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update(extra)
    return problem_response(status, body)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KilnError)
    async def kiln_error(request: Request, exc: KilnError) -> JSONResponse:
        response = problem_response(exc.status, exc.problem(instance=request.url.path))
        if exc.status == 401:
            response.headers["www-authenticate"] = 'Bearer realm="kiln"'  # RFC 6750
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid"}
        return _problem(
            422,
            "validation-failed",
            "Request validation failed",
            f"{first['field']}: {first['message']}",
            errors=errors,
            instance=request.url.path,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        response = _problem(
            exc.status_code, slug, str(exc.detail), str(exc.detail), instance=request.url.path
        )
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["allow"] = ", ".join(_allowed_methods(request))  # RFC 9110 15.5.6
        return response

    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Every database connection was busy for the pool's whole wait: overload, not a bug.
        REQUESTS_SHED.labels("database_pool").inc()
        return _problem(
            503,
            "overloaded",
            "Overloaded",
            "no database connection became free in time; retry shortly",
            instance=request.url.path,
        )

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if not _bad_value(exc):
            return await unexpected(request, exc)
        log.warning("value refused by the database", extra={"path": request.url.path})
        return _problem(
            422,
            "invalid-value",
            "Invalid value",
            "a value is out of range or holds characters that cannot be stored",
            instance=request.url.path,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return _problem(
            500,
            "internal-error",
            "Internal error",
            "an unexpected error occurred; it has been logged",
            instance=request.url.path,
        )


def _allowed_methods(request: Request) -> list[str]:
    """The methods served at the request's path by its most specific path template (Starlette
    names only the first route's; ``/x/{name}`` also matches ``/x/a:predict``, whose own
    template is the one a client reads in the document)."""
    by_template: dict[str, set[str]] = {}
    for route in iter_route_contexts(request.app.routes):
        if route.path and route.methods:
            regex, _, _ = compile_path(route.path)
            if regex.match(request.url.path):
                by_template.setdefault(route.path, set()).update(route.methods)
    if not by_template:
        return []
    best = max(by_template, key=lambda template: len(re.sub(r"{[^}]*}", "", template)))
    return sorted(by_template[best])


def _bad_value(exc: DBAPIError) -> bool:
    """Whether the database refused a value the caller sent (a number out of its column's
    range, a NUL character in text): SQLSTATE class 22, or the driver's own encoding check."""
    cause = exc.orig
    cause = getattr(cause, "__cause__", None) or cause
    sqlstate = getattr(cause, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith("22"):
        return True
    try:
        from asyncpg.exceptions._base import DataError as ArgumentRefused
    except ImportError:  # pragma: no cover - asyncpg is only there for PostgreSQL
        return False
    return isinstance(cause, ArgumentRefused)


_ids = RandomIdGenerator()


def _exporting(provider: trace.TracerProvider) -> bool:
    """Whether finished spans go anywhere: an SDK provider without span processors (no
    exporter configured) drops every span, so recording one per request is pure cost."""
    processor = getattr(provider, "_active_span_processor", None)
    return processor is None or bool(getattr(processor, "_span_processors", True))


_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_NO_STATE = trace.TraceState()


def _unrecorded_span(parent_ctx: Context) -> trace.Span:
    """A span that records nothing but has real ids, so logs still carry a trace id and
    events still propagate the caller's trace (or a new, sampled one)."""
    parent = trace.get_current_span(parent_ctx).get_span_context()
    if parent.is_valid:
        trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
    else:
        trace_id, flags, state = _ids.generate_trace_id(), _SAMPLED, _NO_STATE
    return trace.NonRecordingSpan(
        trace.SpanContext(trace_id, _ids.generate_span_id(), False, flags, state)
    )


class _Current:
    """``trace.use_span`` for a span that records nothing, without its generator: the span is
    current inside, and there is nothing to record or end (a third of the CPU)."""

    __slots__ = ("_span", "_ctx", "_token")

    def __init__(self, span: trace.Span, parent_ctx: Context) -> None:
        self._span = span
        self._ctx = parent_ctx

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span, self._ctx))
        return self._span

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)


def request_id_of(raw: bytes) -> str:
    """The caller's ``x-request-id`` (latin-1, as header values are; at most 128 characters),
    or 128 random bits as hex when it sent none (like uuid4().hex, a third the CPU)."""
    return raw.decode("latin-1")[:128] or os.urandom(16).hex()


class EdgeMiddleware:
    """Request id, server span, metrics and the request size limit, as pure ASGI."""

    def __init__(self, app: ASGIApp, service: str, max_body: int, max_inflight: int = 0) -> None:
        self.app = app
        self.service = service
        self.max_body = max_body
        # Requests served at once before more are shed with 503 + Retry-After (0: no limit):
        # past it a request would only wait for a database connection or the CPU, and every
        # caller's latency would grow until clients time out.
        self.max_inflight = max_inflight
        self.inflight = 0
        self.tracer = tracer("kiln.http")  # looked up once: get_tracer per request is not free
        # The metric children of each (method, route, status) seen: labels() takes a lock and
        # builds a key on every call.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (
            self.max_inflight
            and self.inflight >= self.max_inflight
            and scope.get("path") not in PROBE_PATHS
        ):
            REQUESTS_SHED.labels("overload").inc()
            await overloaded(f"{self.service} is at capacity; retry shortly")(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self._serve(scope, receive, send)
        finally:
            self.inflight -= 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode().lower(): v for k, v in scope.get("headers", [])}
        request_id = request_id_of(headers.get("x-request-id", b""))
        scope.setdefault("state", {})["request_id"] = request_id
        if self.declares_too_much(headers.get("content-length")):
            await problem_response(413, self.too_large().problem())(scope, receive, send)
            return
        ctx = extract_context([(k, v) for k, v in headers.items()])
        started = time.perf_counter()
        status_holder = {"status": 500}
        received = {"bytes": 0, "over": False}

        async def receive_limited() -> Message:
            # A chunked body declares no length: count what arrives and stop at the limit.
            message = await receive()
            if message["type"] == "http.request":
                received["bytes"] += len(message.get("body", b""))
                if received["bytes"] > self.max_body:
                    received["over"] = True
                    raise self.too_large()
            return message

        async def send_wrapper(message: Message) -> None:
            if received["over"]:
                # Whatever the app answers to a body cut short, the caller learns it was too big.
                if message["type"] == "http.response.start":
                    status_holder["status"] = 413
                    too_large = problem_response(413, self.too_large().problem())
                    too_large.headers["x-request-id"] = request_id
                    await too_large(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"x-request-id", request_id.encode("latin-1"))
                ]
            await send(message)

        method, path = scope.get("method", ""), scope.get("path", "")
        with self.server_span(method, path, ctx, request_id) as span:
            try:
                await self.app(scope, receive_limited, send_wrapper)
            except PayloadTooLarge:
                if not received["over"]:
                    raise
                if status_holder["status"] != 413:  # the app had not answered yet
                    await send_wrapper({"type": "http.response.start", "status": 413})
            finally:
                route = scope.get("route")
                route_path = getattr(route, "path", "unmatched")
                status = status_holder["status"]
                span.set_attribute("http.response.status_code", status)
                self.observe(method, route_path, status, started)

    def declares_too_much(self, content_length: bytes | None) -> bool:
        """Whether a request's Content-Length is over the body limit."""
        return (
            content_length is not None
            and content_length.isdigit()
            and int(content_length) > self.max_body
        )

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body exceeds {self.max_body} bytes")

    def server_span(
        self, method: str, path: str, ctx: Context, request_id: str
    ) -> AbstractContextManager[trace.Span]:
        """The request's server span, current while the request is served: recorded when
        spans are exported, otherwise one that only carries ids (see :func:`_unrecorded_span`)."""
        if _exporting(trace.get_tracer_provider()):
            return self.tracer.start_as_current_span(
                f"{method} {path}",
                context=ctx,
                kind=trace.SpanKind.SERVER,
                attributes={
                    "http.request.method": method,
                    "url.path": path,
                    "kiln.service": self.service,
                    "kiln.request_id": request_id,
                },
            )
        return _Current(_unrecorded_span(ctx), ctx)

    def observe(self, method: str, route_path: str, status: int, started: float) -> None:
        """Count a finished request and its duration (since ``started``, perf_counter)."""
        key = (method, route_path, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                HTTP_REQUESTS.labels(method, route_path, status),
                HTTP_SECONDS.labels(route_path),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)


def _query_names(dependant: Dependant) -> frozenset[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


_known_query: dict[int, frozenset[str]] = {}


async def reject_unknown_query(request: Request) -> None:
    """Refuse (422) query parameters an API route does not declare: a misspelt filter must
    not quietly widen a listing to everything."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.path.startswith("/v1/"):
        return
    known = _known_query.get(id(route))
    if known is None:
        known = _known_query[id(route)] = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise ValidationFailed(
            f"unknown query parameter(s): {', '.join(unknown)}",
            errors=[{"field": f"query.{name}", "message": "unknown parameter"} for name in unknown],
        )


def get_runtime(request: Request) -> ServiceRuntime:
    return request.app.state.runtime  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with get_runtime(request).db.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI ``operationId``: its function's name in lower camel case
    (``create_dataset`` → ``createDataset``), stable across paths and methods, so generated
    clients and request-body schemas get readable names instead of FastAPI's
    ``create_dataset_v1_datasets_post``."""
    head, *rest = route.name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


BEARER_SCHEME = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A token with the caller's roles (`kiln token --role …` locally).",
    }
}


def _rename_form_bodies(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI names a multipart body ``Body_<operationId>``: call it ``<OperationId>Form``."""
    components = schema.get("components", {}).get("schemas", {})
    renames = {
        old: old.removeprefix("Body_")[:1].upper() + old.removeprefix("Body_")[1:] + "Form"
        for old in components
        if old.startswith("Body_")
    }
    if not renames:
        return schema
    text = json.dumps(schema)
    for old, new in renames.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    renamed: dict[str, Any] = json.loads(text)
    schemas = renamed["components"]["schemas"]
    for old, new in renames.items():
        schemas[new] = schemas.pop(old)
        schemas[new]["title"] = new
    return renamed


def _nullable(prop: dict[str, Any]) -> bool:
    return prop.get("type") == "null" or any(
        option.get("type") == "null" for option in prop.get("anyOf", [])
    )


def _restore_null_examples(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI drops every null from the document, the nulls of a schema's examples too: put a
    required nullable field an example lacks back as null, so the example stays valid."""
    for component in schema.get("components", {}).get("schemas", {}).values():
        properties = component.get("properties", {})
        for example in component.get("examples", []):
            if not isinstance(example, dict):
                continue
            for name in component.get("required", []):
                if name not in example and _nullable(properties.get(name, {})):
                    example[name] = None
    return schema


def _with_security(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` that also declares the bearer scheme every ``/v1`` route accepts."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                servers=app.servers,
            )
            schema.setdefault("components", {})["securitySchemes"] = BEARER_SCHEME
            for path, operations in schema.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation.setdefault("security", [{"bearer": []}])
            app.openapi_schema = _restore_null_examples(_rename_form_bodies(schema))
        return app.openapi_schema

    return openapi


def create_app(
    runtime: ServiceRuntime,
    *,
    background: list[Callable[[asyncio.Event], Awaitable[None]]] | None = None,
) -> FastAPI:
    """The app of one service: its routers plus /healthz, /readyz and /metrics."""
    spec = runtime.spec

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(job(stop)) for job in (background or [])]
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runtime.stop()

    app = FastAPI(
        title=f"Kiln {spec.name} service",
        description=spec.description,
        version="0.1.0",
        lifespan=lifespan,
        # EdgeMiddleware makes the server span and the metrics; FastAPI's own would double both.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        responses={
            "4XX": {"description": "Problem details (RFC 9457)", "content": {PROBLEM_JSON: {}}}
        },
        dependencies=[Depends(reject_unknown_query)],
        generate_unique_id_function=operation_id,
        # Swagger UI is served below with a relative document URL, so it works both at the
        # service's own /docs and behind the gateway at /api/<service>/docs.
        docs_url=None,
        redoc_url=None,
    )
    app.openapi = _with_security(app)  # type: ignore[method-assign]
    app.state.runtime = runtime
    app.state.settings = runtime.settings
    install_error_handlers(app)
    app.add_middleware(
        EdgeMiddleware,
        service=spec.name,
        max_body=runtime.settings.max_request_bytes,
        max_inflight=runtime.settings.max_inflight_requests,
    )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "service": spec.name}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> Response:
        checks = await runtime.check_dependencies()
        ready = record_checks(checks)
        if ready:
            return JSONResponse({"status": "ready", "service": spec.name, "checks": checks})
        return _problem(
            503,
            "not-ready",
            "Dependencies unavailable",
            ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok"),
            checks=checks,
        )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> Response:
        return get_swagger_ui_html(openapi_url="openapi.json", title=f"{app.title} (API)")

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in spec.routers:
        app.include_router(router)
    return app
