"""``kiln stack``: the local stack — every service as its own API and event processes,
configured for the real infrastructure started by ``kiln infra up``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping

import httpx
import typer

from kiln_cli.console import ConsoleBuildFailed, ensure_console_built
from kiln_cli.infra import local_stack_env, up
from kiln_cli.services import DEFAULT_PORTS, load_spec
from kiln_core.events import SERVICES
from kiln_core.settings import state_dir

stack_app = typer.Typer(no_args_is_help=True)


def _pid_dir():  # type: ignore[no-untyped-def]
    path = state_dir() / "stack"
    path.mkdir(parents=True, exist_ok=True)
    return path


GATEWAY_PORT = 8100


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def service_processes(ports: Mapping[str, int] = DEFAULT_PORTS) -> list[tuple[str, list[str]]]:
    """Each service's processes as (name, ``kiln`` arguments): its API on ``ports[service]``,
    its event process and, if it has background jobs, its Celery worker."""
    procs = []
    own_ports = dict(ports) != DEFAULT_PORTS  # another stack beside `kiln up`: probes too
    for name in SERVICES:
        procs.append((f"{name}-api", ["serve", name, "--port", str(ports[name])]))
        kinds = ["events"] + (["worker"] if load_spec(name).long_work is not None else [])
        for kind in kinds:
            args = ["consume" if kind == "events" else "worker", name]
            if own_ports:
                args += ["--metrics-port", str(_free_port())]
            procs.append((f"{name}-{kind}", args))
    return procs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes() -> list[tuple[str, list[str]]]:
    return [*service_processes(), ("gateway", ["gateway", "--port", str(GATEWAY_PORT)])]


@stack_app.command("up")
def stack_up(wait: float = typer.Option(60.0, help="seconds to wait for /readyz")) -> None:
    """Start every service's API and event process against the local infrastructure."""
    up()
    try:
        ensure_console_built()  # the gateway serves it at "/"
    except ConsoleBuildFailed as exc:
        typer.echo(f"console: not built ({exc}); the APIs work without it", err=True)
    env = {**os.environ, **local_stack_env()}
    for name, args in _processes():
        pid_file = _pid_dir() / f"{name}.pid"
        if pid_file.exists() and _alive(int(pid_file.read_text())):
            continue
        log = (_pid_dir() / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiln_cli.main", *args],
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        pid_file.write_text(str(proc.pid))
        typer.echo(f"started {name} (pid {proc.pid})")
    deadline = time.monotonic() + wait
    for name in SERVICES:
        url = f"http://127.0.0.1:{DEFAULT_PORTS[name]}/readyz"
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    typer.echo(f"{name}: ready on {url.removesuffix('/readyz')}")
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                typer.echo(f"{name}: not ready; see {_pid_dir() / (name + '-api.log')}", err=True)
                raise typer.Exit(1)
            time.sleep(0.3)
    typer.echo(f"gateway: http://127.0.0.1:{GATEWAY_PORT}/api/<service>/")
    typer.echo(f"console: http://127.0.0.1:{GATEWAY_PORT}/")


@stack_app.command("down")
def stack_down() -> None:
    """Stop every service process started by ``kiln stack up``."""
    for name, _ in _processes():
        pid_file = _pid_dir() / f"{name}.pid"
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)
            typer.echo(f"stopped {name}")
        pid_file.unlink()


@stack_app.command("status")
def stack_status() -> None:
    """Show each service process and its readiness."""
    down = False
    for name in SERVICES:
        url = f"http://127.0.0.1:{DEFAULT_PORTS[name]}/readyz"
        try:
            r = httpx.get(url, timeout=2)
            state = "ready" if r.status_code == 200 else f"not ready: {r.json().get('detail')}"
        except httpx.HTTPError as exc:
            state = f"down ({type(exc).__name__})"
        down = down or state != "ready"
        typer.echo(f"{name:<11} {state}")
    if down:
        raise typer.Exit(1)
