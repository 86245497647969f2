"""Bearer tokens that must not get anyone in: tampered, wrongly signed, unsigned, expired,
incomplete or malformed tokens are refused with 401 problem+json by every service."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from tests.security.conftest import SERVICES, Stack

# One read every role may make, per service: a refusal here is the token's fault alone.
READS = {
    "dataset": "/v1/datasets",
    "annotation": "/v1/projects",
    "registry": "/v1/models",
    "training": "/v1/teams",
    "serving": "/v1/endpoints",
}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "mallory", "roles": ["viewer"], "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(stack: Stack, payload: dict[str, Any], **kwargs: Any) -> str:
    key = kwargs.pop("key", stack.settings.jwt_secret)
    return jwt.encode(payload, key, algorithm=kwargs.pop("algorithm", "HS256"), **kwargs)


def tampered(stack: Stack) -> str:
    """A genuine viewer token whose payload was rewritten to claim admin, signature kept."""
    header, _, signature = stack.token("mallory", "viewer").split(".")
    return f"{header}.{b64(claims(roles=['admin']))}.{signature}"


def unsigned(stack: Stack) -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(roles=['admin']))}."


BAD_TOKENS: dict[str, Callable[[Stack], str]] = {
    "tampered payload": tampered,
    "wrong key": lambda s: signed(
        s, claims(roles=["admin"]), key="not-the-secret-0123456789abcdef"
    ),
    "alg none": unsigned,
    "other HMAC algorithm": lambda s: signed(s, claims(), algorithm="HS512"),
    "expired": lambda s: s.token("mallory", "viewer", ttl_s=-60),
    "not yet valid": lambda s: signed(s, claims(nbf=int(time.time()) + 3600)),
    "no expiry": lambda s: signed(s, claims(exp=None)),
    "no subject": lambda s: signed(s, claims(sub=None)),
    "empty subject": lambda s: signed(s, claims(sub="")),
    "no roles claim": lambda s: signed(s, claims(roles=None)),
    "roles not a list": lambda s: signed(s, claims(roles="admin")),
    "roles of non-strings": lambda s: signed(s, claims(roles=[{"role": "admin"}])),
    "garbage": lambda s: "not-a-jwt",
    "truncated": lambda s: s.token("mallory", "viewer")[:-10],
}
BAD_HEADERS = {
    "basic scheme": "Basic bWFsbG9yeTpzZWNyZXQ=",
    "bearer without token": "Bearer",
    "token without scheme": "eyJhbGciOiJIUzI1NiJ9.e30.sig",
}


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 401 and body["type"].endswith("/unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_token_is_refused(stack: Stack, service: str, kind: str) -> None:
    token = BAD_TOKENS[kind](stack)
    response = httpx.get(
        stack.urls[service] + READS[service], headers={"authorization": f"Bearer {token}"}
    )
    assert_unauthorized(response)
    # The refusal never echoes the secret it checked against.
    assert stack.settings.jwt_secret not in response.text


@pytest.mark.integration
@pytest.mark.parametrize("kind", sorted(BAD_HEADERS))
def test_malformed_authorization_header_is_refused(stack: Stack, kind: str) -> None:
    response = httpx.get(
        stack.urls["dataset"] + READS["dataset"], headers={"authorization": BAD_HEADERS[kind]}
    )
    assert_unauthorized(response)


@pytest.mark.integration
@pytest.mark.parametrize("service", SERVICES)
def test_a_valid_token_is_accepted(stack: Stack, service: str) -> None:
    """The control: the same read with a genuine token succeeds, so the refusals above are
    about the tokens."""
    response = httpx.get(stack.urls[service] + READS[service], headers=stack.headers("v", "viewer"))
    assert response.status_code == 200, response.text
