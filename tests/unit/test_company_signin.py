"""Company sign-in against a local JWKS server: provider-signed tokens (RS256, ES256) are
verified with the published keys, `iss`/`aud`/expiry are checked with a small leeway, roles come
from the configured claim, a key rotated in is fetched on first sight and a key rotated out is
refused; `alg: none`, a wrong audience and forged signatures are refused."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from kiln_core.auth import Reader, principal_from_header
from kiln_core.errors import Unauthorized
from kiln_core.http import install_error_handlers
from kiln_core.settings import Settings

ISSUER = "https://idp.example.com/realms/acme"
AUDIENCE = "kiln"


@dataclass
class Provider:
    """A local identity provider: its signing keys by key id and the keys its JWKS publishes."""

    url: str
    keys: dict[str, Any] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    fetches: int = 0

    def add_key(self, kid: str, kind: str = "rsa") -> None:
        self.keys[kid] = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ec.generate_private_key(ec.SECP256R1())
        )
        self.published.append(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            public = self.keys[kid].public_key()
            if isinstance(public, ec.EllipticCurvePublicKey):
                jwk = json.loads(ECAlgorithm.to_jwk(public))
            else:
                jwk = json.loads(RSAAlgorithm.to_jwk(public))
            keys.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": keys}

    def token(self, kid: str, *, ttl_s: int = 300, **overrides: Any) -> str:
        key = self.keys[kid]
        algorithm = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice@acme.example",
            "iat": now,
            "exp": now + ttl_s,
            "realm_access": {"roles": ["ml-engineer", "offline_access"]},
            "jti": uuid.uuid4().hex,  # every token its own (verified tokens are cached)
        }
        claims.update(overrides)
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    state: dict[str, Provider] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            idp = state["idp"]
            idp.fetches += 1
            body = json.dumps(idp.jwks()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # A path of its own per test: the verifier keeps one key cache per JWKS URL.
    idp = Provider(f"http://127.0.0.1:{server.server_address[1]}/{uuid.uuid4().hex}/certs")
    idp.add_key("key-2026-a")
    state["idp"] = idp
    try:
        yield idp
    finally:
        server.shutdown()
        thread.join(5)


def company(provider: Provider, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_required": True,
        "jwt_jwks_url": provider.url,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_roles_claim": "realm_access.roles",
        "jwt_leeway_s": 30,
        "jwt_jwks_cooldown_s": 0,
    }
    values.update(overrides)
    return Settings(**values)


def signed_in(token: str, settings: Settings) -> Any:
    return principal_from_header(f"Bearer {token}", settings)


def refused(token: str, settings: Settings) -> str:
    with pytest.raises(Unauthorized) as caught:
        signed_in(token, settings)
    return str(caught.value)


def test_a_token_from_the_provider_is_accepted_with_roles_from_the_configured_claim(
    provider: Provider,
) -> None:
    principal = signed_in(provider.token("key-2026-a"), company(provider))
    assert principal.subject == "alice@acme.example"
    # Names that are not Kiln roles (the provider's own) are left out.
    assert principal.roles == frozenset({"ml-engineer"})
    assert not principal.teams_claimed  # teams then come from Kiln's own membership
    grouped = signed_in(provider.token("key-2026-a", teams=["vision"]), company(provider))
    assert grouped.teams_claimed and set(grouped.teams) == {"vision"}
    provider.add_key("key-ec", kind="ec")
    es256 = signed_in(provider.token("key-ec"), company(provider))
    assert es256.roles == frozenset({"ml-engineer"})


def test_a_signed_in_caller_reaches_a_route_and_a_refused_one_gets_401_problem(
    provider: Provider,
) -> None:
    settings = company(provider)
    app = FastAPI()
    app.state.settings = settings
    install_error_handlers(app)

    @app.get("/who")
    def who(principal: Reader) -> dict[str, str]:
        return {"subject": principal.subject}

    client = TestClient(app)
    ok = client.get("/who", headers={"authorization": f"Bearer {provider.token('key-2026-a')}"})
    assert ok.status_code == 200 and ok.json() == {"subject": "alice@acme.example"}
    wrong = provider.token("key-2026-a", aud="another-app")
    r = client.get("/who", headers={"authorization": f"Bearer {wrong}"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert "audience" in r.json()["detail"].lower()


def test_a_token_for_another_audience_or_issuer_is_refused(provider: Provider) -> None:
    settings = company(provider)
    assert "audience" in refused(provider.token("key-2026-a", aud="grafana"), settings).lower()
    assert "issuer" in refused(provider.token("key-2026-a", iss="https://evil.example"), settings)
    no_aud = provider.token("key-2026-a")
    claims = jwt.decode(no_aud, options={"verify_signature": False})
    claims.pop("aud")
    bare = jwt.encode(claims, provider.keys["key-2026-a"], "RS256", {"kid": "key-2026-a"})
    assert "aud" in refused(bare, settings)


def test_alg_none_is_refused(provider: Provider) -> None:
    def b64(part: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")

    good = provider.token("key-2026-a")
    claims = jwt.decode(good, options={"verify_signature": False})
    for header in ({"alg": "none", "kid": "key-2026-a"}, {"alg": "none"}):
        unsigned = f"{b64(header)}.{b64(claims)}."
        assert "invalid token" in refused(unsigned, company(provider))


def test_a_forged_signature_with_a_published_key_id_is_refused(provider: Provider) -> None:
    forger = Provider(provider.url)
    forger.add_key("key-2026-a")  # the same key id, another key
    assert "signature" in refused(forger.token("key-2026-a"), company(provider)).lower()


def test_a_rotated_in_key_is_fetched_once_and_a_rotated_out_key_is_refused(
    provider: Provider,
) -> None:
    settings = company(provider)
    signed_in(provider.token("key-2026-a"), settings)
    signed_in(provider.token("key-2026-a"), settings)
    assert provider.fetches == 1  # the key set is cached
    # The provider rotates: a new key in, the old one out.
    provider.add_key("key-2026-b")
    provider.published.remove("key-2026-a")
    assert signed_in(provider.token("key-2026-b"), settings).subject == "alice@acme.example"
    assert provider.fetches == 2  # the unknown key id made the verifier fetch the set again
    message = refused(provider.token("key-2026-a"), settings)
    assert "key-2026-a" in message and "signing key" in message


def test_expiry_is_checked_with_a_small_leeway(provider: Provider) -> None:
    settings = company(provider, jwt_leeway_s=30)
    assert signed_in(provider.token("key-2026-a", ttl_s=-10), settings)  # skew within leeway
    assert refused(provider.token("key-2026-a", ttl_s=-120), settings) == "token expired"


def test_development_tokens_still_work_beside_the_provider(provider: Provider) -> None:
    from kiln_core.auth import issue_token

    settings = company(provider)
    principal = signed_in(issue_token("dev", ["viewer"], settings), settings)
    assert principal.roles == frozenset({"viewer"})


def test_a_jwks_url_without_issuer_or_audience_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match="KILN_JWT_AUDIENCE"):
        Settings(jwt_jwks_url="https://idp.example.com/certs", jwt_issuer=ISSUER)
    with pytest.raises(ValidationError, match="public-key"):
        Settings(
            jwt_jwks_url="https://idp.example.com/certs",
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
            jwt_jwks_algorithms=("HS256",),
        )
