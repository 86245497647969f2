"""Shared helpers of the deployment tests: where things are and how a missing tool fails."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
SERVICES = ("dataset", "annotation", "training", "registry", "serving")
# Services with long work, hence a Celery worker process.
WORKER_SERVICES = ("dataset", "annotation", "training", "registry")
PORTS = {"dataset": 8101, "annotation": 8102, "training": 8103, "registry": 8104, "serving": 8105}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def cache_dir() -> Path:
    return Path(os.environ.get("KILN_CACHE_DIR") or Path.home() / ".cache" / "kiln")


def missing_tool(message: str) -> NoReturn:
    """A validator that is not installed fails in CI and skips on a developer's machine."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def find_uv() -> str | None:
    """The uv that ``./kiln`` installs, else one on PATH."""
    pinned = cache_dir() / "tools" / "uv-0.13.9" / "bin" / "uv"
    if pinned.is_file():
        return str(pinned)
    return shutil.which("uv")


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def find_nginx() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None
    )


def require_nginx() -> str:
    """nginx, installed by tools/install_nginx.sh when missing (a missing one fails in CI)."""
    nginx = find_nginx()
    if nginx is None:
        subprocess.run([str(REPO / "tools" / "install_nginx.sh")], timeout=600, check=False)
        nginx = find_nginx()
        if nginx is None:
            missing_tool("nginx is not installed; run tools/install_nginx.sh")
    return nginx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_nginx(nginx: str, workdir: Path, port: int, what: str) -> subprocess.Popen[bytes]:
    """nginx in the foreground with ``workdir/nginx.conf``, once it accepts connections."""
    proc = subprocess.Popen(
        [nginx, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"nginx did not start with {what}:\n{err}")
            time.sleep(0.1)


def stand_in_api(service: str) -> ThreadingHTTPServer:
    """An HTTP server that answers with what it received, as the named service."""

    class Echo(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            self.rfile.read(size)
            body = json.dumps(
                {
                    "service": service,
                    "path": self.path,
                    "authorization": self.headers.get("authorization"),
                    "request_id": self.headers.get("x-request-id"),
                    "bytes": size,
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
