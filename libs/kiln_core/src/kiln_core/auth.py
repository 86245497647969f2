"""Bearer JWT authentication with roles, checked in every service."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args

import jwt
from fastapi import Depends, Request

from kiln_core.errors import Forbidden, Unauthorized
from kiln_core.settings import Settings, get_settings

ROLES = ("admin", "data-engineer", "annotator", "reviewer", "ml-engineer", "viewer")
# The same roles as a type, so request schemas declare which names they take.
Role = Literal["admin", "data-engineer", "annotator", "reviewer", "ml-engineer", "viewer"]
assert get_args(Role) == ROLES


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    anonymous: bool = False

    def has(self, *roles: str) -> bool:
        return "admin" in self.roles or bool(self.roles.intersection(roles))


def issue_token(
    subject: str, roles: list[str], settings: Settings | None = None, ttl_s: int = 3600
) -> str:
    """Mint a signed token (``kiln token`` and tests; production tokens come from the IdP)."""
    settings = settings or get_settings()
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; known: {', '.join(ROLES)}")
    now = int(time.time())
    claims = {"sub": subject, "roles": roles, "iat": now, "exp": now + ttl_s}
    return jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithm)


def principal_from_request(request: Request) -> Principal:
    settings: Settings = getattr(request.app.state, "settings", None) or get_settings()
    return principal_from_header(request.headers.get("authorization", ""), settings)


def principal_from_header(header: str, settings: Settings) -> Principal:
    """The caller named by an ``Authorization`` header's value ("" when there is none)."""
    if not header:
        if settings.auth_required:
            raise Unauthorized("send 'Authorization: Bearer <token>'")
        # Embedded quickstart without an identity provider: act as a local administrator.
        return Principal("local", frozenset({"admin"}), anonymous=True)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    key = (token, settings.jwt_secret, settings.jwt_algorithm)
    known = _verified.get(key)
    if known is not None:
        principal, expires = known
        if time.time() < expires:
            return principal
        _verified.pop(key, None)
        raise Unauthorized("token expired")
    principal, expires = _verify(token, settings)
    if len(_verified) >= VERIFIED_TOKENS:
        _verified.clear()  # a burst of distinct tokens; the live ones are verified again
    _verified[key] = (principal, expires)
    return principal


# Tokens whose signature and claims checked out, with their expiry: a caller sends the same
# token with every request, and verifying it (HMAC, base64, JSON, claim checks) cost ~80 µs,
# a quarter of the CPU of a :predict request. Expiry is checked on every use; ``nbf`` and
# ``iat`` only grow truer with time. Keyed with the secret, so a changed key verifies anew.
VERIFIED_TOKENS = 4096
_verified: dict[tuple[str, str, str], tuple[Principal, float]] = {}


def _verify(token: str, settings: Settings) -> tuple[Principal, float]:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[settings.jwt_algorithm],
            # A token that never expires or names nobody is not one Kiln or its IdP issues.
            options={"require": ["exp", "sub", "roles"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    subject, roles = claims["sub"], claims["roles"]
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("token claim 'sub' must be a non-empty string")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise Unauthorized("token claim 'roles' must be a list of role names")
    return Principal(subject, frozenset(roles)), float(claims["exp"])


PrincipalDep = Annotated[Principal, Depends(principal_from_request)]


def require_roles(*roles: str):  # type: ignore[no-untyped-def]
    """Dependency: the caller must hold one of ``roles`` (admin always may)."""

    def check(principal: PrincipalDep) -> Principal:
        if not principal.has(*roles):
            raise Forbidden(f"requires one of the roles: {', '.join(roles)}")
        return principal

    return Depends(check)


# Everyone who signs in may read the catalogue of datasets, jobs and models.
READERS = ("viewer", "data-engineer", "ml-engineer", "annotator", "reviewer", "admin")
Reader = Annotated[Principal, require_roles(*READERS)]
Admin = Annotated[Principal, require_roles("admin")]
