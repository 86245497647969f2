"""The verified-token cache: a token is verified once, and the cache never lets in what a
fresh verification would refuse (an expired token, another key, a tampered copy)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from starlette.requests import Request

from kiln_core import auth
from kiln_core.auth import issue_token, principal_from_request
from kiln_core.errors import Unauthorized
from kiln_core.settings import Settings


class _State:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


class _App:
    def __init__(self, settings: Settings) -> None:
        self.state = _State(settings)


def request(settings: Settings, token: str) -> Request:
    scope: dict[str, Any] = {
        "type": "http",
        "headers": [(b"authorization", f"Bearer {token}".encode())],
        "app": _App(settings),
    }
    return Request(scope)


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    auth._verified.clear()


SECRET = "a-test-secret-of-at-least-32-bytes!"


def settings(secret: str = SECRET) -> Settings:
    return Settings(jwt_secret=secret, auth_required=True)


def test_a_token_is_verified_once_then_answered_from_the_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = settings()
    token = issue_token("alice", ["viewer"], s)
    calls: list[str] = []
    real = auth._verify

    def counted(token: str, s: Settings) -> tuple[auth.Principal, float]:
        calls.append(token)
        return real(token, s)

    monkeypatch.setattr(auth, "_verify", counted)
    first = principal_from_request(request(s, token))
    second = principal_from_request(request(s, token))
    assert first == second and first.subject == "alice" and first.roles == {"viewer"}
    assert len(calls) == 1


def test_a_cached_token_stops_working_when_it_expires() -> None:
    s = settings()
    now = int(time.time())
    token = jwt.encode(
        {"sub": "bob", "roles": ["viewer"], "exp": now + 2}, SECRET, algorithm=s.jwt_algorithm
    )
    assert principal_from_request(request(s, token)).subject == "bob"
    while time.time() < now + 2:
        time.sleep(0.05)
    with pytest.raises(Unauthorized, match="expired"):
        principal_from_request(request(s, token))
    with pytest.raises(Unauthorized, match="expired"):  # and not cached back in
        principal_from_request(request(s, token))


def test_a_token_verified_under_one_key_is_verified_again_under_another() -> None:
    token = issue_token("carol", ["viewer"], settings())
    assert principal_from_request(request(settings(), token)).subject == "carol"
    with pytest.raises(Unauthorized, match="invalid token"):
        principal_from_request(request(settings("another-secret-of-at-least-32-bytes"), token))


def test_a_tampered_copy_of_a_cached_token_is_refused() -> None:
    s = settings()
    token = issue_token("dave", ["viewer"], s)
    principal_from_request(request(s, token))
    head, payload, signature = token.split(".")
    forged = jwt.encode({"sub": "dave", "roles": ["admin"], "exp": 2**31}, "x" * 32)
    tampered = ".".join([head, forged.split(".")[1], signature])
    with pytest.raises(Unauthorized, match="invalid token"):
        principal_from_request(request(s, tampered))


def test_the_cache_is_bounded() -> None:
    s = settings()
    for i in range(auth.VERIFIED_TOKENS + 10):
        principal_from_request(request(s, issue_token(f"user-{i}", ["viewer"], s)))
    assert len(auth._verified) <= auth.VERIFIED_TOKENS
