"""The Open Inference Protocol (KServe / Triton "v2"), JSON tensor format, beside ``:predict``.

``POST /v2/models/{endpoint}/infer`` goes through the endpoint's traffic split exactly as
``:predict`` does (:func:`kiln_serving.predict.infer_routed`: counted for the canary analysis,
shadowed, sampled and flagged); ``/v2/models/{endpoint}/versions/{n}/infer`` pins a deployed
version. The model's one input is the tensor Kiln feeds Triton: ``BYTES`` for image models
(each element a base64 string of the file) and text models (each element the text), ``FP32``
of shape ``[N, *features]`` for tabular ones. Outputs are ``probabilities`` (``FP32 [N, C]``,
every class) and ``label`` (``BYTES [N]``, the top class); the class names are in the
response's ``parameters``. Errors are ``{"error": "..."}``, as the protocol has them."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from kiln_core.auth import check_ownership, principal_from_request, with_memberships
from kiln_core.errors import BadRequest, Forbidden, KilnError, NotFound
from kiln_serving.predict import (
    CALLERS,
    VERSION_HEADER,
    VERSION_ID_HEADER,
    Answered,
    class_names,
    infer_routed,
    pinned_version,
)
from kiln_serving.traffic import ROUTE_KEY_HEADER, Route, ServingVersion

if TYPE_CHECKING:
    from kiln_serving.controller import Controller

OUTPUTS = ("probabilities", "label")
DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
     "FP16", "FP32", "FP64", "BYTES"}
)  # fmt: skip


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    outputs: list[str]


def error_body(exc: KilnError) -> bytes:
    return orjson.dumps({"error": exc.detail})


def v2_error(exc: KilnError) -> JSONResponse:
    return JSONResponse({"error": exc.detail}, status_code=exc.status)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def read_request(body: bytes) -> InferRequest:
    """The request's one input tensor and the outputs asked for; shape and type checked here,
    against the model in :func:`tensor_rows`."""
    try:
        payload = orjson.loads(body)
    except ValueError:
        raise BadRequest("the body must be a JSON inference request") from None
    if not isinstance(payload, dict):
        raise BadRequest("the body must be a JSON object")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest("'inputs' must hold exactly one tensor (this model takes one input)")
    tensor = inputs[0]
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not isinstance(name, str) or not name:
        raise BadRequest("the input tensor needs a 'name'")
    if datatype not in DATATYPES:
        raise BadRequest(f"unknown datatype {datatype!r}")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise BadRequest("'shape' must be a non-empty list of non-negative integers")
    if "data" not in tensor:
        raise BadRequest("the input tensor has no 'data' (binary tensors are not supported)")
    data = _flatten(tensor["data"])
    if len(data) != math.prod(shape):
        raise BadRequest(f"shape {shape} needs {math.prod(shape)} elements, 'data' has {len(data)}")
    asked = payload.get("outputs")
    outputs = list(OUTPUTS)
    if asked is not None:
        if not isinstance(asked, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked
        ):
            raise BadRequest("'outputs' must be a list of {\"name\": ...}")
        outputs = [o["name"] for o in asked]
        unknown = [o for o in outputs if o not in OUTPUTS]
        if unknown:
            raise BadRequest(f"unknown output {unknown[0]!r}; this model has {list(OUTPUTS)}")
    request_id = payload.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        name=name,
        datatype=datatype,
        shape=shape,
        data=data,
        outputs=outputs,
    )


def tensor_rows(
    version: ServingVersion, request: InferRequest, max_batch: int
) -> tuple[np.ndarray, list[Any]]:
    """The Triton input for a v2 request to ``version`` and each row's raw input."""
    if version.detector:
        raise BadRequest("this endpoint serves a detector: ask :predict for its boxes")
    expected = version.input
    if request.name != expected.name:
        raise BadRequest(f"unknown input {request.name!r}; this model takes {expected.name!r}")
    if request.datatype != expected.datatype:
        raise BadRequest(f"input {expected.name!r} is {expected.datatype}, not {request.datatype}")
    rows = request.shape[0]
    if rows == 0:
        raise BadRequest("the input has no rows")
    if rows > max_batch:
        raise BadRequest(f"at most {max_batch} rows per request")
    if expected.datatype == "BYTES":
        if request.shape not in ([rows], [rows, 1]):
            raise BadRequest(f"input {expected.name!r} has shape [-1, 1], got {request.shape}")
        if not all(isinstance(x, str) for x in request.data):
            raise BadRequest("BYTES elements must be strings")
        if version.kind == "image":
            raws: list[Any] = []
            for text in request.data:
                try:
                    raws.append((base64.b64decode(text, validate=True), "image/*"))
                except (binascii.Error, ValueError):
                    raise BadRequest("image inputs must be base64 strings") from None
            return np.array([[r[0]] for r in raws], dtype=object), raws
        return np.array([[x.encode()] for x in request.data], dtype=object), list(request.data)
    dims = expected.dims
    if len(request.shape) != 1 + len(dims) or any(
        d > 0 and d != s for d, s in zip(dims, request.shape[1:], strict=True)
    ):
        raise BadRequest(f"input {expected.name!r} has shape {[-1, *dims]}, got {request.shape}")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in request.data):
        raise BadRequest("FP32 elements must be numbers")
    array = np.asarray(request.data, dtype=np.float32).reshape(request.shape)
    return array, array.tolist()


def infer_answer(endpoint: str, request: InferRequest, answered: Answered) -> bytes:
    version = answered.version
    rows = answered.probs.tolist()
    classes = len(rows[0]) if rows else len(version.label_map)
    outputs: list[dict[str, Any]] = []
    for name in request.outputs:
        if name == "probabilities":
            outputs.append(
                {
                    "name": "probabilities",
                    "datatype": "FP32",
                    "shape": [len(rows), classes],
                    "data": [p for row in rows for p in row],
                }
            )
        else:
            outputs.append(
                {
                    "name": "label",
                    "datatype": "BYTES",
                    "shape": [len(rows)],
                    "data": [p["label"] for p in answered.predictions],
                }
            )
    answer: dict[str, Any] = {
        "model_name": endpoint,
        "model_version": str(version.version),
        "outputs": outputs,
        "parameters": {
            "labels": ",".join(class_names(version, classes)),
            "kiln_model_name": version.model_name,
            "kiln_version_id": version.version_id,
        },
    }
    if request.id is not None:
        answer["id"] = request.id
    return orjson.dumps(answer)


async def infer_v2(
    controller: Controller, name: str, pinned: int | None, route_key: str | None, body: bytes
) -> tuple[bytes, ServingVersion]:
    """The answer to one v2 infer request and the version that gave it (the caller has been
    authorised)."""
    request = read_request(body)

    def parse(version: ServingVersion, max_batch: int) -> tuple[np.ndarray, list[Any]]:
        return tensor_rows(version, request, max_batch)

    answered = await infer_routed(controller, name, route_key, parse, pinned=pinned)
    return infer_answer(name, request, answered), answered.version


def model_metadata(
    endpoint: str, route: Route, only: ServingVersion | None = None
) -> dict[str, Any]:
    deployed = [v for v in (route.stable, route.candidate) if v is not None]
    shown = only or route.stable or route.candidate
    if shown is None:
        raise NotFound(f"endpoint {endpoint!r} has no model version deployed yet")
    classes = len(shown.label_map) or -1
    return {
        "name": endpoint,
        "versions": [str(v.version) for v in ([only] if only else deployed)],
        "platform": "kiln",
        "inputs": [
            {
                "name": shown.input.name,
                "datatype": shown.input.datatype,
                "shape": [-1, *shown.input.dims],
            }
        ],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
        ],
    }


# --- the routes (the infer POSTs are served by kiln_serving.predict.PredictRoute) --------------

V2_ERROR: dict[str, Any] = {
    "description": 'The protocol\'s error: {"error": "..."}',
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}


class V2Route(APIRoute):
    """A route whose every refusal (its dependencies' and validation's too) is answered in
    the protocol's format, ``{"error": "..."}``, instead of problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except KilnError as exc:
                return v2_error(exc)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                    for e in exc.errors()
                )
                return JSONResponse({"error": problems or "invalid request"}, status_code=422)

        return route


router = APIRouter(
    prefix="/v2",
    tags=["open inference protocol"],
    route_class=V2Route,
    responses={"4XX": V2_ERROR},
)
EndpointName = Annotated[str, Path(min_length=1, max_length=200)]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]


class _NotReady(KilnError):
    status, type, title = 503, "not-ready", "Not ready"


def _controller(request: Request) -> Controller:
    return request.app.state.controller  # type: ignore[no-any-return]


async def _caller(request: Request) -> None:
    """Who may infer may read the models' metadata (checked here: v2 errors, not problems),
    of their own teams' endpoints."""
    principal = principal_from_request(request)
    if not principal.has(*CALLERS):
        raise Forbidden(f"requires one of the roles: {', '.join(CALLERS)}")
    principal = await with_memberships(request.app.state, principal)
    await check_ownership(request, principal, frozenset(CALLERS))


async def _routed(request: Request, name: str) -> Route:
    controller = _controller(request)
    route = controller.table.routes.get(name)
    if route is None or route.stable is None:
        await controller.refresh_routes()
        route = controller.table.routes.get(name)
    if route is None:
        raise NotFound(f"no endpoint {name!r}")
    return route


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """The server's name, version and protocol extensions."""
    return {"name": "kiln", "version": "2", "extensions": []}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """The server is up."""
    return {"live": True}


@router.get("/health/ready", responses={503: V2_ERROR})
async def ready(request: Request) -> dict[str, bool]:
    """Ready when the model server (Triton) answers."""
    if not await _controller(request).triton.ready():
        raise _NotReady("the model server is not ready")
    return {"ready": True}


# The model routes take the same bearer token as :predict (the health routes need none).
BEARER: dict[str, Any] = {"security": [{"bearer": []}]}


@router.get("/models/{name}", openapi_extra=BEARER)
async def model(name: EndpointName, request: Request) -> dict[str, Any]:
    """The endpoint as a model: its deployed versions, input and outputs."""
    await _caller(request)
    return model_metadata(name, await _routed(request, name))


@router.get("/models/{name}/ready", responses={503: V2_ERROR}, openapi_extra=BEARER)
async def model_ready(name: EndpointName, request: Request) -> dict[str, Any]:
    """Ready when a version is deployed and answering."""
    await _caller(request)
    route = await _routed(request, name)
    if route.stable is None and route.candidate is None:
        raise _NotReady(f"endpoint {name!r} has no model version deployed yet")
    return {"name": name, "ready": True}


@router.get("/models/{name}/versions/{version}", openapi_extra=BEARER)
async def model_version(
    name: EndpointName, version: VersionNumber, request: Request
) -> dict[str, Any]:
    """One deployed version as a model."""
    await _caller(request)
    route = await _routed(request, name)
    return model_metadata(name, route, pinned_version(route, version))


@router.get("/models/{name}/versions/{version}/ready", openapi_extra=BEARER)
async def model_version_ready(
    name: EndpointName, version: VersionNumber, request: Request
) -> dict[str, Any]:
    """Ready when that version is deployed on the endpoint."""
    await _caller(request)
    pinned_version(await _routed(request, name), version)
    return {"name": name, "ready": True}


INFER_DOC: dict[str, Any] = {
    **BEARER,
    "requestBody": {
        "content": {"application/json": {"schema": {"type": "object", "required": ["inputs"]}}}
    },
}
INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    502: V2_ERROR,  # the model failed on this input
    503: V2_ERROR,  # no version deployed yet, or the model server is down
}


async def _infer_here(request: Request, name: str, pinned: int | None) -> Response:
    """What PredictRoute answers, should a request reach FastAPI's router."""
    await _caller(request)
    body, version = await infer_v2(
        _controller(request),
        name,
        pinned,
        request.headers.get(ROUTE_KEY_HEADER),
        await request.body(),
    )
    headers = {VERSION_HEADER: str(version.version), VERSION_ID_HEADER: version.version_id}
    return Response(body, media_type="application/json", headers=headers)


@router.post("/models/{name}/infer", openapi_extra=INFER_DOC, responses=INFER_ERRORS)
async def infer(name: EndpointName, request: Request) -> Response:
    """Infer through the endpoint's traffic split (JSON tensors; see the module's notes).
    Served by :class:`kiln_serving.predict.PredictRoute`; documented here."""
    return await _infer_here(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer", openapi_extra=INFER_DOC, responses=INFER_ERRORS
)
async def infer_version(name: EndpointName, version: VersionNumber, request: Request) -> Response:
    """Infer with one deployed version (no traffic split). Served by ``PredictRoute``."""
    return await _infer_here(request, name, version)
