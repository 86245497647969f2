"""The ``kiln`` command."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from kiln_core.events import SERVICES

app = typer.Typer(
    help="Kiln: an AI model training platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
events_app = typer.Typer(help="Event contract and dead-letter tools.", no_args_is_help=True)
app.add_typer(events_app, name="events")

from kiln_cli.infra import infra_app  # noqa: E402
from kiln_cli.stack import stack_app  # noqa: E402
from kiln_cli.user import add_user_commands  # noqa: E402

app.add_typer(infra_app, name="infra", help="Install, start and check the local infrastructure.")
app.add_typer(stack_app, name="stack", help="Run every service as its own processes.")
add_user_commands(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kiln {importlib.metadata.version('kiln-cli')}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Kiln: an AI model training platform."""


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def scheduler(ctx: typer.Context) -> None:
    """Fair-share (DRF) scheduler tools (``kiln scheduler --help``)."""
    # Loaded by name when used, so no other command pulls in the training service.
    tools = importlib.import_module("kiln_training.simulate").scheduler_app
    tools(args=ctx.args, prog_name="kiln scheduler")


ServiceArg = Annotated[str, typer.Argument(help=f"one of: {', '.join(SERVICES)}")]


def _setup(service: str) -> None:
    from kiln_core.settings import get_settings  # heavy: loaded by the command that uses it
    from kiln_core.telemetry import (  # heavy: loaded by the command that uses it
        setup_logging,
        setup_tracing,
    )

    settings = get_settings()
    setup_logging(service, settings.log_level, settings.log_json)
    setup_tracing(service, settings.trace_exporter)


def _runtime(service: str):  # type: ignore[no-untyped-def]
    from kiln_cli.services import load_spec  # heavy: loaded by the command that uses it
    from kiln_core.service import ServiceRuntime  # heavy: loaded by the command that uses it

    try:
        spec = load_spec(service)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return ServiceRuntime(spec)


@app.command()
def serve(
    service: ServiceArg,
    host: str = typer.Option("127.0.0.1", help="interface to bind"),
    port: int = typer.Option(0, help="port (0 = the service's default)"),
) -> None:
    """Run a service's HTTP API (it migrates its schema first and relays its outbox)."""
    import uvicorn

    from kiln_cli.services import DEFAULT_PORTS  # heavy: loaded by the command that uses it
    from kiln_core.http import create_app  # heavy: loaded by the command that uses it

    _setup(service)  # first: engines made after it get the database instrumentation
    runtime = _runtime(service)
    api = create_app(runtime, background=[runtime.run_relay])
    uvicorn.run(
        api,
        host=host,
        port=port or DEFAULT_PORTS[service],
        log_config=None,
        access_log=False,
        # Longer than any client's or proxy's idle pool (nginx upstream 60 s, httpx 5 s):
        # the server must not close a connection a client is about to reuse.
        timeout_keep_alive=75,
        # Requests come from the gateway or other services; nothing reads X-Forwarded-For, and
        # the Server header only tells a scanner what runs here (both cost on every request).
        proxy_headers=False,
        server_header=False,
    )


MetricsPort = Annotated[
    int,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="port of this process's /metrics, /healthz and /readyz "
        "(0 = the service's API port + 100 for events, + 200 for the worker)",
    ),
]


def _probe_address(service: str, process: str, port: int) -> tuple[str, int]:
    from kiln_cli.services import probe_port  # heavy: loaded by the command that uses it
    from kiln_core.settings import get_settings  # heavy: loaded by the command that uses it

    return get_settings().metrics_host, port or probe_port(service, process)


@app.command()
def consume(service: ServiceArg, metrics_port: MetricsPort = 0) -> None:
    """Run a service's event process: inbox consumer, outbox relay and its workers."""
    from kiln_core.probes import probe_app, serve_probes  # heavy: loaded where used

    _setup(service)  # first: engines made after it get the database instrumentation
    runtime = _runtime(service)
    host, port = _probe_address(service, "events", metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Up before start-up (migrations can take a while): alive at once, ready once it is.
        app = probe_app(f"{service}-events", runtime.check_dependencies)
        probes = asyncio.ensure_future(serve_probes(app, host, port, stop))
        try:
            await runtime.start()
            await runtime.run_events(stop)
        finally:
            stop.set()
            await runtime.stop()
            await probes

    asyncio.run(main())


@app.command()
def worker(
    service: ServiceArg,
    concurrency: int = typer.Option(2, min=1, max=64, help="tasks run at once"),
    metrics_port: MetricsPort = 0,
) -> None:
    """Run a service's Celery worker for its long work (imports, training runs, …)."""
    from kiln_core.probes import (  # heavy: loaded by the command that uses it
        broker_check,
        probe_app,
        serve_probes_in_thread,
    )
    from kiln_core.tasks import count_task_outcomes  # heavy: loaded where used

    _setup(service)  # first: engines made after it get the database instrumentation
    runtime = _runtime(service)
    if runtime.jobs is None:
        typer.echo(f"the {service} service has no long work to run", err=True)
        raise typer.Exit(2)
    count_task_outcomes()
    host, port = _probe_address(service, "worker", metrics_port)
    serve_probes_in_thread(
        probe_app(f"{service}-worker", broker_check(runtime.jobs.app)), host, port
    )
    # The app is bound to this runtime's settings: each task builds its runtime from them.
    runtime.jobs.app.worker_main(
        ["worker", "-Q", service, "--pool", "threads", "-c", str(concurrency), "-l", "INFO"]
    )


@app.command()
def migrate(service: Annotated[str, typer.Argument(help="a service, or 'all'")] = "all") -> None:
    """Bring service schemas to their newest revision."""
    names = list(SERVICES) if service == "all" else [service]

    async def main() -> None:
        for name in names:
            runtime = _runtime(name)
            await runtime.db.migrate(runtime.spec.migrations)
            await runtime.db.dispose()
            typer.echo(f"{name}: migrated")

    asyncio.run(main())


@app.command()
def demo(
    stack: str = typer.Option(
        "embedded",
        help="embedded: every service in this process, nothing to install; "
        "local: the services of `kiln stack up`",
    ),
    out: Path = typer.Option(None, help="output directory (default .kiln/demo/<time>)"),
    seed: int = typer.Option(7, help="seed of the data split, mistakes and training"),
    serve: bool = typer.Option(
        False, "--serve", help="then keep every service and the web console up until Ctrl-C"
    ),
    port: int = typer.Option(8100, help="the console's port with --serve"),
    task: str = typer.Option(
        "classification",
        help="classification: digits one per image; detection: digits pasted on canvases, boxes",
    ),
) -> None:
    """The main job: the closed loop (data → labels → model → serving → flagged → retrained
    canary) on scikit-learn's handwritten digits."""
    from kiln_cli.demo import (  # heavy: loaded by the command that uses it
        DemoFailed,
        default_out_dir,
        run_demo,
        with_out_env,
    )

    if stack not in ("embedded", "local"):
        raise typer.BadParameter("--stack is embedded or local")
    if task not in ("classification", "detection"):
        raise typer.BadParameter("--task is classification or detection")
    if task == "detection" and serve:
        raise typer.BadParameter("--serve runs the classification loop")
    if serve and stack != "embedded":
        raise typer.BadParameter("--serve runs the embedded stack; `kiln up` serves the console")
    if serve:
        _build_console()
    out_dir = (out or default_out_dir()).resolve()
    with_out_env(out_dir)
    from kiln_core.telemetry import setup_tracing  # heavy: loaded by the command that uses it

    # Kiln's own spans only: a span per SQLite statement would bury the loop's trace in the file.
    setup_tracing("demo", f"file:{out_dir / 'traces.jsonl'}", libraries=False)
    _setup("demo")
    try:
        if task == "detection":
            from kiln_cli.demo_detection import (  # heavy: loaded by the command that uses it
                run_detection_demo,
            )

            result = asyncio.run(run_detection_demo(out_dir, stack=stack, seed=seed))
        else:
            where = ("127.0.0.1", port) if serve else None
            result = asyncio.run(run_demo(out_dir, stack=stack, seed=seed, serve=where))
    except DemoFailed as exc:
        typer.echo(json.dumps({"ok": False, "error": str(exc)}))
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result))
    # Everything is written and every service stopped; a non-daemon thread left by an
    # in-process worker once kept the interpreter alive for minutes (cause not yet found), so
    # the one-shot command ends here rather than waiting on it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _build_console() -> None:
    from kiln_cli.console import (  # heavy: loaded by the command that uses it
        ConsoleBuildFailed,
        ensure_console_built,
    )

    try:
        ensure_console_built()
    except ConsoleBuildFailed as exc:
        typer.echo(f"kiln: the web console did not build: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def console(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8100, help="port to listen on"),
    data: Path = typer.Option(None, help="state directory (default .kiln/console)"),
) -> None:
    """Every service and the web console in this process on the embedded defaults (no demo
    loop), until Ctrl-C: what the console's browser tests and benchmark run against."""
    from kiln_cli.demo import (  # heavy: loaded by the command that uses it
        embedded_services,
        until_stopped,
    )
    from kiln_core.settings import state_dir  # heavy: loaded by the command that uses it

    _build_console()
    out_dir = (data or state_dir() / "console").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    _setup("console")

    async def main() -> None:
        async with embedded_services(out_dir, serve=(host, port)):
            url = f"http://{host}:{port}/"
            typer.echo(f"the console is at {url} (state in {out_dir}); Ctrl-C stops", err=False)
            await until_stopped()

    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # as `kiln demo`: in-process workers may leave non-daemon threads behind


@app.command()
def gateway(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8100, help="port to listen on"),
) -> None:
    """The local stack's API gateway: /api/<service>/… to each service's API."""
    import uvicorn

    from kiln_cli.console import DIST, ConsoleApp  # heavy: loaded by the command that uses it
    from kiln_cli.gateway import Gateway  # heavy: loaded by the command that uses it
    from kiln_cli.services import DEFAULT_PORTS  # heavy: loaded by the command that uses it
    from kiln_core.settings import get_settings  # heavy: loaded by the command that uses it

    _setup("gateway")
    settings = get_settings()
    targets = {name: f"http://127.0.0.1:{p}" for name, p in DEFAULT_PORTS.items()}
    # The console is built by `kiln up` (or by hand); without a build "/" says how to make one.
    gateway = Gateway(
        targets,
        console=ConsoleApp(DIST),
        rate_per_principal=settings.gateway_rate_per_principal,
        burst_per_principal=settings.gateway_burst_per_principal,
        max_inflight=settings.gateway_max_inflight,
        shed_loop_lag_s=settings.gateway_shed_loop_lag_s,
    )
    uvicorn.run(gateway, host=host, port=port, log_config=None, access_log=False)


@app.command()
def up(wait: float = typer.Option(90.0, help="seconds to wait for every API")) -> None:
    """The local real stack in one command: infrastructure, every service's API, event and
    worker processes, and the gateway on :8100 (same as `kiln stack up`)."""
    from kiln_cli.stack import stack_up  # heavy: loaded by the command that uses it

    stack_up(wait)


@app.command()
def down() -> None:
    """Stop what `kiln up` started (the infrastructure keeps running: `kiln infra down`)."""
    from kiln_cli.stack import stack_down  # heavy: loaded by the command that uses it

    stack_down()


@app.command()
def token(
    subject: str = typer.Option("dev", "--sub", help="user id"),
    role: list[str] = typer.Option(["admin"], "--role", help="role (repeatable)"),
    ttl: int = typer.Option(3600, help="seconds the token is valid"),
    team: list[str] = typer.Option(
        [], "--team", help="a team the caller belongs to, as TEAM or TEAM=ROLE (repeatable)"
    ),
) -> None:
    """Mint a bearer token signed with KILN_JWT_SECRET (for local use and tests)."""
    from kiln_core.auth import issue_token  # heavy: loaded by the command that uses it

    teams = dict(t.partition("=")[::2] for t in team)
    try:
        typer.echo(
            issue_token(
                subject, role, ttl_s=ttl, teams={t: r or "member" for t, r in teams.items()}
            )
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@events_app.command("replay")
def events_replay(
    topic: str = typer.Option(..., help="original topic, e.g. kiln.dataset"),
    consumer: str = typer.Option(None, help="only events dead-lettered by this consumer"),
    event_id: str = typer.Option(None, help="only this event id"),
) -> None:
    """Re-feed dead-lettered events of TOPIC (from TOPIC.dlq) to TOPIC."""
    from kiln_core.bus import open_bus  # heavy: loaded by the command that uses it
    from kiln_core.inbox import replay_dead_letters  # heavy: loaded by the command that uses it
    from kiln_core.settings import get_settings  # heavy: loaded by the command that uses it

    settings = get_settings()

    async def main() -> list[dict[str, str]]:
        bus = open_bus(settings.resolve(settings.bus_url, "cli"))
        await bus.start()
        try:
            return await replay_dead_letters(bus, topic, consumer=consumer, event_id=event_id)
        finally:
            await bus.stop()

    replayed = asyncio.run(main())
    for item in replayed:
        typer.echo(
            f"replayed {item.get('event_id') or '(no id)'} "
            f"(consumer {item.get('consumer')}: {item.get('reason')})"
        )
    typer.echo(json.dumps({"replayed": len(replayed)}))


@events_app.command("schemas")
def events_schemas(
    out: Path = typer.Option(Path("docs/events"), help="where to write the JSON Schemas"),
    check: bool = typer.Option(False, help="only check docs are current and compatible"),
    allow_breaking: bool = typer.Option(False, help="write even a backward-incompatible change"),
) -> None:
    """Export every event type as JSON Schema plus one AsyncAPI 3.0 document."""
    from kiln_cli.schemas import write_or_check  # heavy: loaded by the command that uses it

    problems = write_or_check(out, check=check, allow_breaking=allow_breaking)
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("event schemas are current" if check else f"wrote event schemas to {out}")


@app.command()
def openapi(
    out: Path = typer.Option(Path("web/openapi"), help="directory for <service>.json"),
) -> None:
    """Write every service's OpenAPI document (the console's clients are generated from them)."""
    from kiln_cli.openapi import write_documents  # heavy: loaded by the command that uses it

    for path in write_documents(out):
        typer.echo(f"wrote {path}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def test(ctx: typer.Context) -> None:
    """Install and start the local infrastructure, then run the whole test suite."""
    from kiln_cli.infra import (  # heavy: loaded by the command that uses it
        InfraError,
        local_stack_env,
        up,
    )

    try:
        up()
    except InfraError as exc:
        typer.echo(f"kiln test: the infrastructure the tests need is not up:\n{exc}", err=True)
        raise typer.Exit(2) from None
    tools = Path(__file__).resolve().parents[4] / "tools" / "install_deploy_tools.sh"
    if tools.exists() and subprocess.call(["bash", str(tools)]) != 0:
        typer.echo("kiln test: the deployment tools (kustomize, nginx) did not install", err=True)
        raise typer.Exit(2)
    # The console's browser tests need Debian's Chromium and the built web/ (npm ci + build).
    chromium = tools.with_name("install_chromium.sh")
    if chromium.exists() and subprocess.call(["bash", str(chromium)]) != 0:
        typer.echo("kiln test: chromium did not install", err=True)
        raise typer.Exit(2)
    _build_console()
    env = dict(os.environ)
    for key, value in local_stack_env().items():
        env.setdefault(key.replace("KILN_", "KILN_TEST_", 1), value)
    cmd = [sys.executable, "-m", "pytest", *ctx.args]
    typer.echo("+ " + " ".join(cmd))
    raise typer.Exit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    app()
