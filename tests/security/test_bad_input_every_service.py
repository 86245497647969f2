"""Defects found from outside, checked on every service and on both kinds of database: numbers
past 64 bits, 405 without ``Allow``, timestamps without an offset, and documents that leave out
what the server enforces."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.security.conftest import SERVICES, Stack

PAST_INT64 = 2**63
DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
STACKS = ["embedded_stack", pytest.param("stack", marks=pytest.mark.integration)]


@pytest.fixture(params=STACKS)
def any_stack(request: pytest.FixtureRequest) -> Stack:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def admin(stack: Stack, service: str) -> httpx.Client:
    return stack.client(service, "checker", "admin")


def assert_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, (r.request.url, r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"


def test_numbers_past_64_bits_are_a_problem_in_every_service(any_stack: Stack) -> None:
    with admin(any_stack, "registry") as registry:
        assert registry.post("/v1/models", json={"name": "big"}).status_code == 201
        assert_problem(registry.get(f"/v1/models/big/versions/{PAST_INT64}"), 422)
        assert_problem(registry.get(f"/v1/models/big/versions/{PAST_INT64}/log"), 422)
        assert_problem(registry.get("/v1/models", params={"offset": PAST_INT64}), 422)
        assert_problem(registry.get("/v1/models/big/log", params={"offset": PAST_INT64}), 422)
        body = {"version": PAST_INT64}
        assert_problem(registry.post("/v1/models/big/aliases/staging", json=body), 422)
    with admin(any_stack, "annotation") as annotation:
        assert_problem(annotation.get("/v1/projects/p/tasks", params={"offset": PAST_INT64}), 422)
        body = {"dataset_version": PAST_INT64}
        assert_problem(annotation.post("/v1/projects/p/commits", json=body), 422)
    with admin(any_stack, "training") as training:
        assert_problem(training.get("/v1/jobs", params={"offset": PAST_INT64}), 422)


@pytest.mark.parametrize("service", SERVICES)
def test_405_names_the_allowed_methods(any_stack: Stack, service: str) -> None:
    with admin(any_stack, service) as client:
        r = client.put("/healthz")
        assert_problem(r, 405)
        assert r.headers["allow"] == "GET"


def stamps(value: Any) -> list[str]:
    """Every value of a ``…_at`` key in a JSON document."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.endswith("_at") and isinstance(inner, str):
                found.append(inner)
            else:
                found += stamps(inner)
    elif isinstance(value, list):
        for inner in value:
            found += stamps(inner)
    return found


def test_timestamps_read_back_carry_their_offset_in_every_service(any_stack: Stack) -> None:
    read: list[Any] = []
    with admin(any_stack, "training") as training:
        assert training.post("/v1/teams", json={"name": "vision", "weight": 2}).status_code == 201
        assert training.put("/v1/teams/vision", json={"weight": 3}).status_code == 200
        read += [training.get("/v1/teams/vision").json(), training.get("/v1/teams").json()]
    with admin(any_stack, "registry") as registry:
        registry.post("/v1/models", json={"name": "stamped"})
        policy = {"gated_aliases": ["production"], "promoter_roles": ["ml-engineer"]}
        assert registry.put("/v1/models/stamped/policy", json=policy).status_code == 200
        read += [
            registry.get("/v1/models/stamped").json(),
            registry.get("/v1/models/stamped/policy").json(),
            registry.get("/v1/models/stamped/log").json(),
        ]
    with admin(any_stack, "serving") as serving:
        body = {"name": "stamped", "model_name": "stamped"}
        assert serving.post("/v1/endpoints", json=body).status_code == 201
        read.append(serving.get("/v1/endpoints/stamped").json())
    found = stamps(read)
    assert len(found) >= 6 and all(DATE_TIME.match(s) for s in found), found


def test_documents_declare_what_the_servers_enforce(embedded_stack: Stack) -> None:
    docs = {s: httpx.get(f"{url}/openapi.json").json() for s, url in embedded_stack.urls.items()}
    schemas = {s: d["components"]["schemas"] for s, d in docs.items()}
    # Tag lengths.
    tag = schemas["dataset"]["DatasetCreate"]["properties"]["tags"]["items"]
    assert (tag["minLength"], tag["maxLength"]) == (1, 100)
    assert schemas["registry"]["ModelCreate"]["properties"]["tags"]["items"]["maxLength"] == 100
    # Quota never negative; whole GPUs.
    quota = schemas["training"]["TeamCreate"]["properties"]["quota"]["additionalProperties"]
    assert quota["minimum"] == 0
    # Endpoint names.
    assert "pattern" in schemas["serving"]["EndpointCreate"]["properties"]["name"]
    # The label schema's and the recipe's shape.
    label_schema = schemas["annotation"]["ProjectCreate"]["properties"]["label_schema"]
    assert label_schema["$ref"] == "#/components/schemas/LabelSchema"  # (and a description)
    recipe = schemas["dataset"]["AugmentRequest"]["properties"]["recipe"]
    assert recipe["$ref"] == "#/components/schemas/Recipe"
    # Version numbers and offsets have a maximum.
    versions = docs["dataset"]["paths"]["/v1/datasets/{dataset_id}/versions/{version}"]["get"]
    version = next(p for p in versions["parameters"] if p["name"] == "version")
    assert version["schema"]["maximum"] == 2**31 - 1
    # :predict answers 503 until a model is deployed.
    predict = docs["serving"]["paths"]["/v1/endpoints/{name}:predict"]["post"]
    assert "503" in predict["responses"]
