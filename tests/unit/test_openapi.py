"""Every service's OpenAPI document: readable operation ids, the bearer scheme, and Swagger UI
that finds its document both directly and behind the gateway."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from kiln_cli.gateway import Gateway
from kiln_cli.openapi import documents, service_document
from kiln_cli.services import load_spec
from kiln_core.http import create_app
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")
# FastAPI's default: the function name, then the path and the method, joined by underscores.
FASTAPI_DEFAULT = re.compile(r"_(" + "|".join(HTTP_METHODS) + r")$")
READABLE = re.compile(r"^[a-z][A-Za-z0-9]{2,60}$")


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    return documents()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if method in HTTP_METHODS
    ]


def test_every_operation_has_a_readable_unique_operation_id(docs: dict[str, Any]) -> None:
    for service, doc in docs.items():
        ids = [op.get("operationId", "") for _, _, op in operations(doc)]
        assert len(ids) > 3, service
        unreadable = [i for i in ids if not READABLE.match(i) or FASTAPI_DEFAULT.search(i)]
        assert unreadable == [], f"{service}: {unreadable}"
        assert len(set(ids)) == len(ids), f"{service}: duplicate operation ids"


def test_form_bodies_have_readable_schema_names(docs: dict[str, Any]) -> None:
    for service, doc in docs.items():
        names = list(doc.get("components", {}).get("schemas", {}))
        assert [n for n in names if n.startswith("Body_")] == [], service


def test_bearer_scheme_is_declared_on_every_v1_operation(docs: dict[str, Any]) -> None:
    for service, doc in docs.items():
        scheme = doc["components"]["securitySchemes"]["bearer"]
        assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
        for path, method, op in operations(doc):
            if path.startswith("/v1/"):
                assert op["security"] == [{"bearer": []}], f"{service} {method} {path}"


def test_dataset_document_names_the_media_operations(docs: dict[str, Any]) -> None:
    ids = {op["operationId"] for _, _, op in operations(docs["dataset"])}
    assert {"readItemImage", "readItemThumbnail", "readBlobImage", "readBlobThumbnail"} <= ids


async def test_swagger_ui_loads_its_document_behind_the_gateway() -> None:
    # The real service app, mounted under the gateway as in the embedded stack.
    service = create_app(ServiceRuntime(load_spec("dataset"), Settings(bus_url="embedded://docs")))
    gateway = Gateway({"dataset": service})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://kiln"
    ) as client:
        page = await client.get("/api/dataset/docs")
        assert page.status_code == 200
        # Relative to /api/dataset/docs, so the browser asks the gateway for the right one.
        url = re.search(r"url: '([^']+)'", page.text)
        assert url is not None and url.group(1) == "openapi.json"
        resolved = httpx.URL("http://kiln/api/dataset/docs").join(url.group(1))
        assert resolved.path == "/api/dataset/openapi.json"
        doc = await client.get(resolved.path)
        assert doc.status_code == 200
        assert doc.json()["info"]["title"] == service_document("dataset")["info"]["title"]


# The main bodies of each service: what a client sends to do the service's work and the
# resources it gets back. Each carries an example and a description on every field.
MAIN_SCHEMAS = {
    "dataset": ["DatasetCreate", "AugmentRequest", "CommitRequest", "DatasetPublic"],
    "annotation": ["ProjectCreate", "Submission", "ReviewDecision", "CommitRequest", "TaskPublic"],
    "training": ["JobCreate", "SearchCreate", "JobPublic"],
    "registry": ["ModelCreate", "PolicyBody", "PromoteBody", "CompressBody"],
    "serving": ["EndpointCreate", "EndpointPublic"],
}
DESCRIBED_ONLY = {"registry": ["VersionPublic"], "serving": ["DeploymentPublic"]}


def schema_validator(doc: dict[str, Any], name: str) -> Any:
    import jsonschema

    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(root)


@pytest.mark.parametrize("service", sorted(MAIN_SCHEMAS))
def test_main_bodies_carry_valid_examples_and_described_fields(
    docs: dict[str, Any], service: str
) -> None:
    doc = docs[service]
    schemas = doc["components"]["schemas"]
    for name in MAIN_SCHEMAS[service] + DESCRIBED_ONLY.get(service, []):
        schema = schemas[name]
        undescribed = [k for k, v in schema["properties"].items() if not v.get("description")]
        assert undescribed == [], f"{service} {name}: no description on {undescribed}"
        if name in DESCRIBED_ONLY.get(service, []):
            continue
        examples = schema.get("examples")
        assert examples, f"{service} {name}: no example"
        validator = schema_validator(doc, name)
        for example in examples:
            errors = [e.message for e in validator.iter_errors(example)]
            assert errors == [], f"{service} {name}: example invalid: {errors}"


def test_an_example_that_breaks_its_schema_is_caught(docs: dict[str, Any]) -> None:
    validator = schema_validator(docs["dataset"], "DatasetCreate")
    example = docs["dataset"]["components"]["schemas"]["DatasetCreate"]["examples"][0]
    assert list(validator.iter_errors({**example, "name": ""}))
    assert list(validator.iter_errors({**example, "colour": "red"}))  # extra fields forbidden
