"""The web console (``web/``): built when missing or stale, then served by the gateway at ``/``
with a strict Content-Security-Policy (a fresh style nonce per page) and security headers."""

from __future__ import annotations

import mimetypes
import secrets
import shutil
import subprocess
from pathlib import Path

from starlette.types import Receive, Scope, Send

REPO = Path(__file__).resolve().parents[4]
WEB = REPO / "web"
DIST = WEB / "dist"
NONCE_PLACEHOLDER = b"__CSP_NONCE__"


class ConsoleBuildFailed(RuntimeError):
    pass


def _newest(paths: list[Path]) -> float:
    newest = 0.0
    for path in paths:
        if path.is_dir():
            for child in path.rglob("*"):
                if child.is_file():
                    newest = max(newest, child.stat().st_mtime)
        elif path.exists():
            newest = max(newest, path.stat().st_mtime)
    return newest


def console_is_stale(web: Path = WEB) -> bool:
    """Whether ``web/dist`` is missing or older than any source, config or lock file."""
    built = web / "dist" / "index.html"
    if not built.exists():
        return True
    sources = [
        web / "src",
        web / "index.html",
        web / "package-lock.json",
        web / "vite.config.ts",
        web / "tsconfig.json",
    ]
    return _newest(sources) > built.stat().st_mtime


def ensure_console_built(web: Path = WEB, *, echo: bool = True) -> Path:
    """``npm ci`` (when the lock changed) and ``npm run build`` (when the build is stale)."""
    if not console_is_stale(web):
        return web / "dist"
    npm = shutil.which("npm")
    if npm is None:
        raise ConsoleBuildFailed("npm is not installed; the console needs Node.js 20 and npm")
    marker = web / "node_modules" / ".package-lock.json"
    lock = web / "package-lock.json"
    output = None if echo else subprocess.DEVNULL
    if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        if subprocess.call([npm, "ci", "--no-audit", "--no-fund"], cwd=web, stdout=output) != 0:
            raise ConsoleBuildFailed("npm ci failed in web/")
    if subprocess.call([npm, "run", "build"], cwd=web, stdout=output) != 0:
        raise ConsoleBuildFailed("npm run build failed in web/")
    return web / "dist"


def content_security_policy(nonce: str) -> str:
    """Scripts and styles only from this origin (styles also with this page's nonce), images
    also from blob: (guarded bytes fetched with the token), no frames, no plugins."""
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            f"style-src 'self' 'nonce-{nonce}'",
            "img-src 'self' blob: data:",
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class ConsoleApp:
    """Static files of the built console: hashed assets cached for a year, every other path
    the single-page app's index.html (never cached) with its CSP nonce filled in."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist.resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            allow = [(b"allow", b"GET, HEAD")]  # RFC 9110 asks a 405 to name what is allowed
            await self._send(send, 405, b"text/plain", b"method not allowed", allow)
            return
        if path.startswith("/assets/"):
            target = (self.dist / path.lstrip("/")).resolve()
            if self.dist in target.parents and target.is_file():
                kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                cache = [(b"cache-control", b"public, max-age=31536000, immutable")]
                await self._send(send, 200, kind.encode(), target.read_bytes(), cache)
                return
            await self._send(send, 404, b"text/plain", b"not found", [])
            return
        index = self.dist / "index.html"
        if not index.is_file():
            body = b"the console is not built: run `npm ci && npm run build` in web/"
            await self._send(send, 503, b"text/plain", body, [])
            return
        nonce = secrets.token_urlsafe(16)
        page = index.read_bytes().replace(NONCE_PLACEHOLDER, nonce.encode())
        headers = [
            (b"content-security-policy", content_security_policy(nonce).encode()),
            (b"cache-control", b"no-store"),
        ]
        await self._send(send, 200, b"text/html; charset=utf-8", page, headers)

    async def _send(
        self, send: Send, status: int, kind: bytes, body: bytes, extra: list[tuple[bytes, bytes]]
    ) -> None:
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers + SECURITY_HEADERS + extra,
            }
        )
        await send({"type": "http.response.body", "body": body})
