"""The web console under test: built from web/, served by `kiln console` (every service in one
embedded process) on a free port, and Debian's Chromium for the browser tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI, REPO
from tests.support.apps import free_port

WEB = REPO / "web"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """web/node_modules from the lockfile (npm ci), installed once."""
    if shutil.which("npm") is None:
        _unavailable("npm is not installed (the console needs Node.js 20)")
    from kiln_cli.console import ConsoleBuildFailed, ensure_console_built

    try:
        ensure_console_built(WEB, echo=False)
    except ConsoleBuildFailed as exc:
        pytest.fail(str(exc))
    return WEB / "node_modules"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed by the project's script (never a Playwright download)."""
    result = subprocess.run(
        ["bash", str(REPO / "tools" / "install_chromium.sh")], capture_output=True, text=True
    )
    path = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or not path:
        _unavailable(f"chromium did not install: {result.stderr[-500:]}")
    return path


@pytest.fixture(scope="module")
def console_url(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`kiln console` on a free port with a fresh state directory, stopped after the module."""
    port = free_port()
    state = tmp_path_factory.mktemp("console-state")
    log = (state / "server.log").open("wb")
    env = {**os.environ, "KILN_LOG_LEVEL": "WARNING"}
    for key in [k for k in env if k.startswith("KILN_") and k != "KILN_LOG_LEVEL"]:
        env.pop(key)  # the embedded defaults, whatever the caller's shell points at
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiln_cli.main", "console", "--port", str(port), "--data", state],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                if httpx.get(f"{url}/api/serving/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "kiln console did not start:\n" + (state / "server.log").read_text()[-3000:]
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
