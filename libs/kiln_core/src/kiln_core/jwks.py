"""Company sign-in: tokens signed by an identity provider (RS256, ES256, …) verified against its
JWKS URL, beside the HS256 tokens of development (:mod:`kiln_core.auth`).

The key set is fetched with PyJWT's ``PyJWKClient``: cached for ``KILN_JWT_JWKS_CACHE_S``, and
fetched again when a token names a key id the cache does not hold (a key the provider just
rotated in), at most once per ``KILN_JWT_JWKS_COOLDOWN_S`` so a stream of made-up key ids cannot
flood the provider. ``iss``, ``aud`` and ``exp`` are checked with ``KILN_JWT_LEEWAY_S`` of clock
skew; the roles come from the claim ``KILN_JWT_ROLES_CLAIM`` names (a dotted path, such as
``realm_access.roles``), and names that are not Kiln roles are ignored."""

from __future__ import annotations

import threading
from typing import Any

import jwt

from kiln_core.errors import DependencyUnavailable, Unauthorized
from kiln_core.settings import Settings

_clients: dict[tuple[str, float, float], jwt.PyJWKClient] = {}
_lock = threading.Lock()


def uses_jwks(token: str, settings: Settings) -> bool:
    """Whether ``token`` is one for the identity provider's keys: a JWKS URL is configured and
    the token's header names one of its algorithms (anything else, ``none`` included, goes the
    HS256 way and is refused there unless it is a valid development token)."""
    if not settings.jwt_jwks_url:
        return False
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError:
        return False
    return algorithm in settings.jwt_jwks_algorithms


def _client(settings: Settings) -> jwt.PyJWKClient:
    key = (settings.jwt_jwks_url, settings.jwt_jwks_cache_s, settings.jwt_jwks_cooldown_s)
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = jwt.PyJWKClient(
                settings.jwt_jwks_url,
                cache_jwk_set=True,
                lifespan=settings.jwt_jwks_cache_s,
                cooldown_duration=settings.jwt_jwks_cooldown_s,
                timeout=5,
            )
        return client


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def verify_with_jwks(
    token: str, settings: Settings, known_roles: tuple[str, ...]
) -> tuple[str, list[str], float, dict[str, Any]]:
    """The subject, Kiln roles, expiry (epoch seconds) and every claim of a provider-signed
    token (the caller reads its teams from them); raises
    :class:`Unauthorized` for a token that fails any check, :class:`DependencyUnavailable` when
    the provider's keys cannot be fetched."""
    try:
        key = _client(settings).get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as exc:
        raise DependencyUnavailable(
            f"the identity provider's keys are unreachable: {exc}"
        ) from None
    except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=list(settings.jwt_jwks_algorithms),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_s,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise Unauthorized("token claim 'sub' must be a non-empty string")
    granted = _claim(claims, settings.jwt_roles_claim)
    if granted is None:
        granted = []
    if not isinstance(granted, list) or not all(isinstance(r, str) for r in granted):
        raise Unauthorized(f"token claim {settings.jwt_roles_claim!r} must be a list of names")
    return subject, [r for r in granted if r in known_roles], float(claims["exp"]), claims
