"""The web console for the browser tests and bench/console.py: `kiln console` (every service and
the console in one embedded process) on a port, and Debian's Chromium from the project's script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import REPO


def install_chromium() -> str:
    """The path of Debian's chromium, installed by tools/install_chromium.sh if missing."""
    result = subprocess.run(
        ["bash", str(REPO / "tools" / "install_chromium.sh")], capture_output=True, text=True
    )
    path = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or not path:
        raise RuntimeError(f"chromium did not install: {result.stderr[-500:]}")
    return path


@contextmanager
def running_console(state: Path, port: int, timeout_s: float = 180) -> Iterator[str]:
    """`kiln console` on the embedded defaults (whatever KILN_* the caller's shell sets), its
    state in ``state``; yields its URL once every service is ready, stops it on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_LOG_LEVEL"] = "WARNING"
    url = f"http://127.0.0.1:{port}"
    with (state / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiln_cli.main", "console", "--port", str(port)]
            + ["--data", str(state)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    if httpx.get(f"{url}/api/serving/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "kiln console did not start:\n" + (state / "server.log").read_text()[-3000:]
                    )
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # it can take long to stop; nothing to keep
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
