"""Every route of every service, called by every role and without a token, against the policy
written down in tests/security/policy.py."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.security.conftest import SERVICES, Stack
from tests.security.policy import POLICY, ROLES, UNDOCUMENTED

# Path parameters: ids that name nothing, except the registry model the fixture creates (the
# alias routes look their model up before they can tell which roles its policy allows).
MATRIX_MODEL = "matrix-model"
PATH_VALUES = {
    "dataset_id": "ds-none",
    "draft_id": "draft-none",
    "item_id": "none.png",
    "version": "1",
    "import_id": "job-none",
    "job_id": "job-none",
    "project_id": "project-none",
    "task_id": "task-none",
    "trigger_id": "trigger-none",
    "alias": "staging",
    "sha256": "0" * 64,
    "team": "green",
    "subject": "someone",
}
PATH_VALUES_BY_SERVICE = {"registry": {"name": MATRIX_MODEL}, "training": {"name": "none"}}


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, ops in doc["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }


def concrete(service: str, path: str) -> str:
    values = {**PATH_VALUES, "name": "none", **PATH_VALUES_BY_SERVICE.get(service, {})}
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m.group(1)], path)


def is_problem(response: httpx.Response, status: int) -> bool:
    """A refusal in the service's error format: problem+json, or on the Open Inference
    Protocol's /v2 routes that protocol's ``{"error": "..."}``."""
    if response.request.url.path.startswith("/v2/"):
        try:
            body = response.json()
        except ValueError:
            return False
        return response.status_code == status and isinstance(body.get("error"), str)
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return False
    body = response.json()
    return body.get("status") == status and bool(body.get("type")) and bool(body.get("title"))


def call(client: httpx.Client, method: str, url: str, token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
    return client.request(method, url, json=body, headers=headers)


@pytest.fixture(scope="module")
def matrix_model(stack: Stack) -> str:
    with stack.client("registry", "matrix-setup", "ml-engineer") as client:
        response = client.post("/v1/models", json={"name": MATRIX_MODEL})
        assert response.status_code == 201, response.text
    return MATRIX_MODEL


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_every_route_has_a_policy(stack: Stack, service: str) -> None:
    """A route in the OpenAPI document without a row in the policy table (or a row for a route
    that no longer exists) fails: every new endpoint needs a decision on who may call it."""
    doc = httpx.get(f"{stack.urls[service]}/openapi.json").json()
    served = operations(doc)
    written = set(POLICY[service])
    assert served - written == set(), f"{service}: routes without a policy"
    assert written - served == set(), f"{service}: policy rows for routes that do not exist"


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_every_role_gets_what_the_policy_says(
    stack: Stack, service: str, matrix_model: str
) -> None:
    """No token → 401, a role the policy leaves out → 403 (both problem+json, or v2 errors on
    /v2); a role it names → neither, and never a server error."""
    tokens = {role: stack.token(f"matrix-{role}", role) for role in ROLES}
    failures: list[str] = []
    rows = {**POLICY[service], **UNDOCUMENTED}
    with httpx.Client(base_url=stack.urls[service], timeout=60) as client:
        for (method, path), allowed in sorted(rows.items()):
            url = concrete(service, path)
            anonymous = call(client, method, url, None)
            if allowed is None:
                if anonymous.status_code in (401, 403) or anonymous.status_code >= 500:
                    failures.append(f"{method} {path} public, no token: {anonymous.status_code}")
                continue
            if not is_problem(anonymous, 401):
                failures.append(
                    f"{method} {path} without a token: {anonymous.status_code} "
                    f"{anonymous.headers.get('content-type')} (want 401 problem+json)"
                )
            for role, token in tokens.items():
                response = call(client, method, url, token)
                code = response.status_code
                if role in allowed and (code in (401, 403) or code >= 500):
                    failures.append(f"{method} {path} as {role} (allowed): {code} {response.text}")
                if role not in allowed and not is_problem(response, 403):
                    failures.append(f"{method} {path} as {role} (not allowed): {code} (want 403)")
    assert failures == [], "\n".join(failures)
