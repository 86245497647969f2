"""Bearer JWT authentication with roles, checked in every service."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal, get_args

import jwt
from fastapi import Depends, Request

from kiln_core.errors import Forbidden, Unauthorized
from kiln_core.jwks import uses_jwks, verify_with_jwks
from kiln_core.settings import Settings, get_settings
from kiln_core.teams import TEAM_ROLES, check_access, memberships_of, parse_teams_claim

ROLES = ("admin", "data-engineer", "annotator", "reviewer", "ml-engineer", "viewer")
# The same roles as a type, so request schemas declare which names they take.
Role = Literal["admin", "data-engineer", "annotator", "reviewer", "ml-engineer", "viewer"]
assert get_args(Role) == ROLES


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    anonymous: bool = False
    # Team → the caller's role in it (kiln_core.teams); platform admins need none.
    teams: Mapping[str, str] = field(default_factory=dict, hash=False)
    # The token named the teams (an identity provider's groups); else Kiln's membership does.
    teams_claimed: bool = False

    def has(self, *roles: str) -> bool:
        return "admin" in self.roles or bool(self.roles.intersection(roles))

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def issue_token(
    subject: str,
    roles: list[str],
    settings: Settings | None = None,
    ttl_s: int = 3600,
    teams: Mapping[str, str] | list[str] | None = None,
) -> str:
    """Mint a signed token (``kiln token`` and tests; production tokens come from the IdP),
    naming the caller's teams (a list: member of each; or team → team role)."""
    settings = settings or get_settings()
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; known: {', '.join(ROLES)}")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "roles": roles, "iat": now, "exp": now + ttl_s}
    if teams is not None:
        if not isinstance(teams, list):
            bad = {r for r in teams.values() if r not in TEAM_ROLES}
            if bad:
                raise ValueError(f"unknown team roles {sorted(bad)}; known: {TEAM_ROLES}")
            teams = dict(teams)
        claims[settings.teams_claim] = teams
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
    if uses_jwks(token, settings):  # signed by the company's identity provider
        subject, granted, expires, provider_claims = verify_with_jwks(token, settings, ROLES)
        return _with_teams(subject, granted, provider_claims, settings), expires
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
    return _with_teams(subject, roles, claims, settings), float(claims["exp"])


def _with_teams(
    subject: str, roles: list[str], claims: dict[str, Any], settings: Settings
) -> Principal:
    """The principal a verified token names, with the teams its teams claim gives."""
    claimed = settings.teams_claim in claims
    try:
        teams = parse_teams_claim(claims.get(settings.teams_claim))
    except ValueError as exc:
        raise Unauthorized(f"token claim '{settings.teams_claim}': {exc}") from None
    return Principal(subject, frozenset(roles), teams=teams, teams_claimed=claimed)


PrincipalDep = Annotated[Principal, Depends(principal_from_request)]


def require_roles(*roles: str):  # type: ignore[no-untyped-def]
    """Dependency: the caller must hold one of ``roles`` (admin always may), and belong to the
    team that owns what the path names (kiln_core.teams), in that order: a role the route
    refuses is 403 whether or not the resource exists, so the answer reveals nothing."""
    allowed = frozenset(roles)

    async def check(request: Request, principal: PrincipalDep) -> Principal:
        if not principal.has(*roles):
            raise Forbidden(f"requires one of the roles: {', '.join(roles)}")
        principal = await with_memberships(request.app.state, principal)
        await check_ownership(request, principal, allowed)
        return principal

    return Depends(check)


async def with_memberships(state: Any, principal: Principal) -> Principal:
    """``principal`` with their teams from this service's copy of Kiln's membership, unless
    the token named them (or they are a platform admin, who needs none)."""
    runtime = getattr(state, "runtime", None)
    if principal.is_admin or principal.teams_claimed or runtime is None:
        return principal
    async with runtime.db.session() as session:
        teams = await memberships_of(session, principal.subject)
    return replace(principal, teams=teams)


async def check_ownership(request: Request, principal: Principal, roles: frozenset[str]) -> None:
    """Check the caller against the owner of everything the request's path names."""
    if principal.is_admin:
        return
    runtime = getattr(request.app.state, "runtime", None)
    lookups = getattr(getattr(runtime, "spec", None), "ownership", None)
    if not lookups:
        return
    path = request.url.path
    named = []
    for key, lookup in lookups.items():
        # "param" everywhere, or "param@/prefix" only on paths under the prefix.
        param, _, prefix = key.partition("@")
        if param in request.path_params and path.startswith(prefix):
            named.append((lookup, request.path_params[param]))
    if not named:
        return
    async with runtime.db.session() as session:  # type: ignore[union-attr]
        for lookup, value in named:
            owner = await lookup(session, str(value))
            if owner is not None:
                check_access(principal, owner, request.method, roles)


# Everyone who signs in may read the catalogue of datasets, jobs and models.
READERS = ("viewer", "data-engineer", "ml-engineer", "annotator", "reviewer", "admin")
Reader = Annotated[Principal, require_roles(*READERS)]
Admin = Annotated[Principal, require_roles("admin")]
