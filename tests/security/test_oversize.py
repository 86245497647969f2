"""Bodies over the request size limit are refused with 413 problem+json, whether they declare
their length or arrive chunked without one, before any handler acts on them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.security.conftest import SERVICES, Stack

WRITES = {
    "dataset": "/v1/datasets",
    "annotation": "/v1/projects",
    "registry": "/v1/models",
    "training": "/v1/jobs",
    "serving": "/v1/endpoints",
}


def oversized_json(limit: int) -> bytes:
    return b'{"name": "' + b"a" * (limit + 1024) + b'"}'


def problem_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("/payload-too-large")


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_declared_oversize_body_is_refused(stack: Stack, service: str) -> None:
    body = oversized_json(stack.settings.max_request_bytes)
    with stack.client(service, "adm", "admin") as client:
        problem_413(
            client.post(WRITES[service], content=body, headers={"content-type": "application/json"})
        )


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_chunked_oversize_body_is_refused(stack: Stack, service: str) -> None:
    limit = stack.settings.max_request_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(limit // (1024 * 1024) + 2):
            yield b"a" * (1024 * 1024)
        yield b'"}'

    with stack.client(service, "adm", "admin") as client:
        problem_413(
            client.post(
                WRITES[service], content=chunks(), headers={"content-type": "application/json"}
            )
        )


@pytest.mark.integration
def test_oversize_multipart_upload_stores_nothing(stack: Stack) -> None:
    """A multipart upload over the limit, chunked: refused, and the draft stays empty."""
    limit = stack.settings.max_request_bytes
    with stack.client("dataset", "dora", "data-engineer") as client:
        ds = client.post(
            "/v1/datasets", json={"name": "oversize-upload", "task_type": "classification"}
        ).json()["id"]
        draft = client.post(f"/v1/datasets/{ds}/drafts", json={}).json()["id"]
        boundary = b"kilnboundary"

        def body() -> Iterator[bytes]:
            yield b"--" + boundary + b"\r\n"
            yield b'Content-Disposition: form-data; name="files"; filename="big.png"\r\n'
            yield b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n"
            for _ in range(limit // (1024 * 1024) + 2):
                yield b"\x00" * (1024 * 1024)
            yield b"\r\n--" + boundary + b"--\r\n"

        r = client.post(
            f"/v1/datasets/{ds}/drafts/{draft}/items",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary.decode()}"},
        )
        problem_413(r)
        commit = client.post(f"/v1/datasets/{ds}/drafts/{draft}/commit", json={"message": "m"})
        assert commit.status_code in (409, 422), commit.text


@pytest.mark.integration
def test_a_body_under_the_limit_is_accepted(stack: Stack) -> None:
    """The control: the limit is about size, not about JSON bodies or chunking."""

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "chunked-but-small", "task_type": "classification"}'

    with stack.client("dataset", "dora", "data-engineer") as client:
        r = client.post(
            "/v1/datasets", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 201, r.text
