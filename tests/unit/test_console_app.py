"""The gateway serves the built console: index.html with a fresh CSP nonce per response and
security headers, immutable hashed assets, no path escapes, and the APIs untouched."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from kiln_cli.console import ConsoleApp, console_is_stale
from kiln_cli.gateway import Gateway


def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(
        '<meta name="csp-nonce" content="__CSP_NONCE__"><script src="/assets/a.js"></script>'
    )
    (root / "assets" / "a.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("no")
    return root


async def test_console_pages_carry_a_strict_policy_and_a_fresh_nonce(tmp_path: Path) -> None:
    api = Starlette(routes=[Route("/v1/x", lambda r: JSONResponse({"api": True}))])
    gateway = Gateway(
        {"dataset": api}, console=ConsoleApp(dist(tmp_path)), dev_tokens=lambda: {"admin": "t"}
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://kiln"
    ) as client:
        first = await client.get("/labelling/abc")
        second = await client.get("/")
        assert first.status_code == 200 and "text/html" in first.headers["content-type"]
        policy = first.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
        nonce = re.search(r"'nonce-([^']+)'", policy)
        assert nonce is not None and f'content="{nonce.group(1)}"' in first.text
        assert second.headers["content-security-policy"] != policy  # a new nonce per page
        assert first.headers["x-content-type-options"] == "nosniff"
        assert first.headers["x-frame-options"] == "DENY"
        assert first.headers["cache-control"] == "no-store"
        asset = await client.get("/assets/a.js")
        assert "immutable" in asset.headers["cache-control"]
        assert "javascript" in asset.headers["content-type"]
        escape = await client.get("/assets/%2e%2e/%2e%2e/secret.txt")
        assert escape.status_code == 404 and escape.text != "no"
        assert (await client.get("/assets/missing.js")).status_code == 404
        assert (await client.get("/api/dataset/v1/x")).json() == {"api": True}
        assert (await client.get("/console/session")).json() == {
            "mode": "embedded",
            "tokens": {"admin": "t"},
        }


async def test_without_dev_tokens_the_console_asks_for_a_bearer_token() -> None:
    gateway = Gateway({})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://kiln"
    ) as client:
        assert (await client.get("/console/session")).json() == {"mode": "token"}
        assert (await client.get("/")).status_code == 404  # no console: the old answer


def test_a_source_newer_than_the_build_makes_it_stale(tmp_path: Path) -> None:
    web = tmp_path / "web"
    (web / "src").mkdir(parents=True)
    (web / "src" / "main.tsx").write_text("x")
    assert console_is_stale(web)
    (web / "dist").mkdir()
    (web / "dist" / "index.html").write_text("built")
    assert not console_is_stale(web)
    source = web / "src" / "main.tsx"
    later = (web / "dist" / "index.html").stat().st_mtime + 10
    os.utime(source, (later, later))
    assert console_is_stale(web)
