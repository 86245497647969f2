"""One settings object per process, read from ``KILN_*`` environment variables.

The scheme of each URL picks the implementation (see ``docs/`` and DESIGN.md):
``KILN_DATABASE_URL`` postgresql+asyncpg:// or sqlite+aiosqlite://, ``KILN_BUS_URL`` kafka:// or
embedded://, ``KILN_STORAGE_URL`` s3:// or file://, ``KILN_TRITON_URL`` grpc:// or managed://.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def is_workspace_root(directory: Path) -> bool:
    """Whether ``directory`` is a Kiln checkout's root (its pyproject.toml has a uv workspace)."""
    pyproject = directory / "pyproject.toml"
    if not pyproject.is_file():
        return False
    try:
        data = tomllib.loads(pyproject.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return "workspace" in data.get("tool", {}).get("uv", {})


def kiln_home() -> Path:
    """The directory that holds ``.kiln/`` state: ``KILN_HOME``, else the checkout the current
    directory is in, else the checkout this code runs from (editable installs), else the
    current directory (an installed service has no checkout)."""
    if home := os.environ.get("KILN_HOME"):
        return Path(home).expanduser().resolve()
    cwd = Path.cwd().resolve()
    for start in (cwd, Path(__file__).resolve().parent):
        for candidate in (start, *start.parents):
            if is_workspace_root(candidate):
                return candidate
    return cwd


def state_dir() -> Path:
    """Where Kiln keeps local state: the infrastructure, the embedded databases, demo runs."""
    return kiln_home() / ".kiln"


class Settings(BaseSettings):
    """Process configuration. Defaults are the embedded, zero-dependency setup."""

    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore")

    # ``{service}`` in a URL is replaced by the service name, so one value serves all services
    # in embedded mode (one SQLite file each) and in Postgres mode (one schema each).
    database_url: str = "sqlite+aiosqlite:///{state}/data/{service}.db"
    bus_url: str = "embedded://"
    storage_url: str = "file://{state}/store"
    celery_broker_url: str = "memory://"
    triton_url: str = "managed://"
    redis_url: str = "redis://127.0.0.1:56379/0"
    # Where services that call the serving API (pre-labelling) find it.
    serving_url: str = "http://127.0.0.1:8105"
    # Prefix of every service's PostgreSQL schema (``{prefix}dataset``): lets several
    # environments or test runs share one database.
    db_schema_prefix: str = Field(default="", pattern=r"^[a-z0-9_]*$", max_length=30)

    jwt_secret: str = Field(default="kiln-dev-secret-change-me-0123456789", min_length=16)
    jwt_algorithm: str = "HS256"
    # Embedded quickstart runs without tokens; real deployments set KILN_AUTH_REQUIRED=true.
    auth_required: bool = False
    # The token claim naming the caller's teams (a list of names, or {team: team role}), for
    # an identity provider that manages groups; the claim Kiln's own tokens carry by default.
    teams_claim: str = Field(default="teams", min_length=1, max_length=100)
    # The team of what the platform's administrators (and the tokenless quickstart) create
    # without naming one.
    default_team: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_\-]*$", max_length=100)
    # Company sign-in (kiln_core.jwks): tokens signed with the identity provider's keys,
    # verified against its JWKS URL (empty: only the HS256 tokens above).
    jwt_jwks_url: str = ""
    jwt_jwks_algorithms: tuple[str, ...] = ("RS256", "ES256")
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_roles_claim: str = Field(default="roles", min_length=1)  # a dotted path into the claims
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    jwt_jwks_cache_s: float = Field(default=300.0, gt=0)
    jwt_jwks_cooldown_s: float = Field(default=30.0, ge=0)

    log_level: str = "INFO"
    # JSON lines (true), readable lines (false), or JSON unless stderr is a terminal (unset).
    log_json: bool | None = None
    trace_exporter: str = "none"  # none | console | memory | otlp | file:<path>
    # Event and worker processes serve /metrics, /healthz and /readyz here (the API on its own
    # port); the port defaults to the service's API port + 100 (events) or + 200 (worker).
    metrics_host: str = "127.0.0.1"
    metrics_interval_s: float = Field(default=15.0, gt=0)

    consumer_max_attempts: int = 5
    consumer_backoff_initial_s: float = 0.05
    consumer_backoff_max_s: float = 2.0
    relay_batch_size: int = 500
    relay_poll_interval_s: float = 0.02  # SQLite polling; Postgres wakes on NOTIFY
    relay_fallback_interval_s: float = 1.0

    max_request_bytes: int = 64 * 1024 * 1024
    # Requests one API process serves at once; more are shed with 503 + Retry-After (0: off).
    max_inflight_requests: int = Field(default=128, ge=0)
    # The local gateway (`kiln gateway`): requests a second per principal (429 + Retry-After
    # past it; 0: no limit), its burst, and requests in flight before it sheds with 503.
    gateway_rate_per_principal: float = Field(default=100.0, ge=0)
    gateway_burst_per_principal: float = Field(default=200.0, ge=0)
    gateway_max_inflight: int = Field(default=512, ge=0)
    # ... and sheds a growing share of requests while its event loop runs this late (0: off).
    gateway_shed_loop_lag_s: float = Field(default=0.25, ge=0)

    @model_validator(mode="after")
    def _provider_tokens_name_their_issuer_and_audience(self) -> Settings:
        if self.jwt_jwks_url and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("KILN_JWT_JWKS_URL needs KILN_JWT_ISSUER and KILN_JWT_AUDIENCE")
        if any(a.upper().startswith("HS") or a == "none" for a in self.jwt_jwks_algorithms):
            raise ValueError("KILN_JWT_JWKS_ALGORITHMS takes public-key algorithms only")
        return self

    def resolve(self, url: str, service: str) -> str:
        """Expand ``{service}`` and ``{state}`` placeholders in a configured URL."""
        return url.replace("{service}", service).replace("{state}", str(state_dir()))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
