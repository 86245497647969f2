"""Hostile filter, paging and path values: SQL fragments, wildcards, NUL bytes, numbers no
column can hold and parameters no route declares. Each gets a 2xx that leaks nothing or a 4xx
problem+json, never a server error."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import httpx
import pytest

from tests.security.conftest import Stack

HOSTILE_STRINGS = [
    "' OR '1'='1",
    "x' OR 1=1 --",
    "'; DROP TABLE datasets; --",
    '" OR ""="',
    "%",
    "_",
    "\\",
    "*",
    "a\x00b",
    "') UNION SELECT id, name FROM pg_catalog.pg_tables --",
    "{{7*7}}",
    "${jndi:ldap://x/y}",
    "é" * 5000,
]
HOSTILE_NUMBERS = ["-1", "99999999999999999999999999", "9223372036854775808", "1e9", "NaN", "0x10"]

# Listings with their string filters and paging parameters, per service.
LISTINGS = {
    "dataset": {
        "/v1/datasets": ["task_type", "source_channel", "owner", "tag", "q", "status", "usability"],
        "/v1/jobs": ["dataset_id", "kind", "status"],
    },
    "annotation": {"/v1/projects": ["dataset_id"]},
    "registry": {"/v1/models": ["name", "tag"]},
    "training": {
        "/v1/jobs": ["status", "team", "kind", "parent_id"],
        "/v1/triggers": ["dataset_id"],
    },
}
PAGED = {
    "dataset": ["/v1/datasets", "/v1/jobs"],
    "registry": ["/v1/models"],
    "training": ["/v1/jobs"],
}
# Paths whose ids reach the database: a hostile id must be "not found", not an error.
BY_ID = {
    "dataset": ["/v1/datasets/{}", "/v1/jobs/{}", "/v1/datasets/{}/versions/1"],
    "annotation": ["/v1/projects/{}", "/v1/tasks/{}"],
    "registry": ["/v1/models/{}", "/v1/jobs/{}"],
    "training": ["/v1/jobs/{}", "/v1/teams/{}", "/v1/triggers/{}"],
    "serving": ["/v1/endpoints/{}"],
}


def acceptable(response: httpx.Response) -> bool:
    if response.status_code < 300:
        return True
    return 400 <= response.status_code < 500 and response.headers.get(
        "content-type", ""
    ).startswith("application/problem+json")


@pytest.fixture(scope="module")
def canary(stack: Stack) -> str:
    """One dataset that no hostile filter may reveal."""
    name = f"canary-{uuid.uuid4().hex[:8]}"
    with stack.client("dataset", "dora", "data-engineer") as client:
        r = client.post(
            "/v1/datasets",
            json={"name": name, "task_type": "classification", "source_channel": "secret-line"},
        )
        assert r.status_code == 201, r.text
    return name


@pytest.mark.integration
@pytest.mark.parametrize("service", sorted(LISTINGS))
def test_hostile_filters_never_break_a_listing(stack: Stack, service: str, canary: str) -> None:
    failures = []
    with stack.client(service, "val", "viewer") as client:
        for path, filters in LISTINGS[service].items():
            for name in filters:
                for value in HOSTILE_STRINGS:
                    r = client.get(path, params={name: value})
                    if not acceptable(r):
                        failures.append(f"{path}?{name}={value[:40]!r}: {r.status_code}")
                    elif r.status_code == 200 and canary in r.text:
                        # A filter fed SQL or wildcards must not match everything.
                        failures.append(f"{path}?{name}={value[:40]!r} returned the canary")
    assert failures == [], "\n".join(failures)


@pytest.mark.integration
def test_sql_in_a_filter_does_not_widen_the_listing(stack: Stack, canary: str) -> None:
    with stack.client("dataset", "val", "viewer") as client:
        for value in ("' OR '1'='1", "secret-line' OR 'a'='a", "%"):
            r = client.get("/v1/datasets", params={"source_channel": value})
            assert r.status_code == 200 and r.json()["total"] == 0, (value, r.text)
        for value in ("%", "_", "canary%"):
            r = client.get("/v1/datasets", params={"q": value})
            assert r.status_code == 200 and canary not in r.text, (value, r.text)
        r = client.get("/v1/datasets", params={"source_channel": "secret-line"})
        assert canary in r.text  # the control: the honest filter finds it
        assert canary in client.get("/v1/datasets", params={"q": canary[:-2]}).text


@pytest.mark.integration
def test_wildcards_in_a_model_search_are_literal(stack: Stack) -> None:
    name = f"wild-{uuid.uuid4().hex[:8]}"
    with stack.client("registry", "mel", "ml-engineer") as client:
        assert client.post("/v1/models", json={"name": name}).status_code == 201
        for value in ("%", "_", "wild%", "w_ld"):
            r = client.get("/v1/models", params={"name": value})
            assert r.status_code == 200 and name not in r.text, (value, r.text)
        assert name in client.get("/v1/models", params={"name": name[:-2]}).text


@pytest.mark.integration
@pytest.mark.parametrize("service", sorted(PAGED))
def test_hostile_paging_is_refused_cleanly(stack: Stack, service: str) -> None:
    failures = []
    with stack.client(service, "val", "viewer") as client:
        for path in PAGED[service]:
            for name in ("limit", "offset"):
                for value in HOSTILE_NUMBERS:
                    r = client.get(path, params={name: value})
                    # Refused, or (an offset past the end) an honest empty page.
                    empty = r.status_code == 200 and r.json()["items"] == []
                    if not acceptable(r) or (r.status_code < 300 and not empty):
                        failures.append(f"{path}?{name}={value}: {r.status_code}")
    assert failures == [], "\n".join(failures)


@pytest.mark.integration
@pytest.mark.parametrize("service", sorted(BY_ID))
def test_hostile_ids_are_not_found(stack: Stack, service: str) -> None:
    failures = []
    with stack.client(service, "adm", "admin") as client:
        for template in BY_ID[service]:
            for value in HOSTILE_STRINGS[:10]:
                r = client.get(template.format(quote(value, safe="")))
                if r.status_code not in (404, 422) or not acceptable(r):
                    failures.append(
                        f"GET {template} with {value!r}: {r.status_code} {r.text[:200]}"
                    )
    assert failures == [], "\n".join(failures)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("service", "template"),
    [
        ("dataset", "/v1/datasets/ds-none/versions/{}"),
        ("dataset", "/v1/datasets/ds-none/versions/1/diff?against={}"),
        ("registry", "/v1/models/none/versions/{}"),
    ],
)
def test_numbers_no_column_can_hold_are_refused(stack: Stack, service: str, template: str) -> None:
    """Integers past PostgreSQL's int4/int8 range reach the query: refused, never a 500."""
    with stack.client(service, "adm", "admin") as client:
        for value in ("2147483648", "9223372036854775808", "99999999999999999999999999"):
            r = client.get(template.format(value))
            assert r.status_code in (404, 422) and acceptable(r), (value, r.text)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("dataset", "/v1/datasets"),
        ("annotation", "/v1/projects"),
        ("registry", "/v1/models"),
        ("training", "/v1/jobs"),
        ("serving", "/v1/endpoints"),
    ],
)
def test_unknown_query_parameters_are_refused(stack: Stack, service: str, path: str) -> None:
    """A misspelt or invented filter must not quietly return the unfiltered list."""
    with stack.client(service, "adm", "admin") as client:
        r = client.get(path, params={"stauts": "failed", "order_by": "id; DROP TABLE x"})
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        fields = {e["field"] for e in r.json()["errors"]}
        assert fields == {"query.stauts", "query.order_by"}


@pytest.mark.integration
def test_unknown_body_fields_are_refused(stack: Stack) -> None:
    with stack.client("dataset", "dora", "data-engineer") as client:
        r = client.post(
            "/v1/datasets",
            json={"name": "x-extra", "task_type": "classification", "owner_override": "root"},
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
