"""No secret ever reaches a log: the database and object-store credentials, the JWT signing
key and the bearer tokens callers send, over everything the services logged in this run
(start-up, every other test of the suite that ran before, and the traffic made here)."""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from tests.security.conftest import SERVICES, Stack


def secrets_of(stack: Stack) -> dict[str, str]:
    found = {"JWT signing key": stack.settings.jwt_secret}
    for name in ("database_url", "storage_url"):
        parts = urlsplit(stack.settings.resolve(getattr(stack.settings, name), "x"))
        if parts.password:
            # The password alone may be a common word; with its user it is unmistakable.
            found[f"{name} credentials"] = f"{parts.username}:{unquote(parts.password)}"
            if len(parts.password) >= 8:
                found[f"{name} password"] = unquote(parts.password)
    for i, token in enumerate(stack.tokens):
        found[f"bearer token {i}"] = token
        found[f"signature of bearer token {i}"] = token.rsplit(".", 1)[-1]
    return found


def make_traffic(stack: Stack) -> None:
    """Requests that log: good and bad tokens, refusals, errors, readiness checks."""
    good = stack.token("logger", "admin")
    for service in SERVICES:
        base = stack.urls[service]
        httpx.get(f"{base}/readyz")
        httpx.get(f"{base}/v1/nothing-here", headers={"authorization": f"Bearer {good}"})
        httpx.get(f"{base}/v1/pings/received", headers={"authorization": f"Bearer {good}x"})
        httpx.get(f"{base}/v1/pings/received", headers={"authorization": f"Basic {good}"})
        httpx.post(
            f"{base}/v1/pings",
            headers={"authorization": f"Bearer {good}", "content-type": "application/json"},
            content=b"{not json",
        )


@pytest.mark.integration
def test_no_secret_appears_in_any_log_line(stack: Stack) -> None:
    root = logging.getLogger()
    assert stack.logs in root.handlers, "something removed the log capture"
    # The embedded Celery worker lowers the root logger to WARNING when it starts; the check
    # wants every record, whatever its level.
    root.setLevel(logging.DEBUG)
    make_traffic(stack)
    lines = list(stack.logs.lines)
    assert len(lines) > 20, "the capture saw almost nothing: it is not capturing"
    # A request the services certainly logged (the access log), so the capture is real.
    assert any("/v1/nothing-here" in line for line in lines), lines[-5:]
    leaks = [
        f"{what} in: {line[:300]}"
        for what, secret in secrets_of(stack).items()
        for line in lines
        if secret in line
    ]
    assert leaks == [], "\n".join(leaks[:20])
