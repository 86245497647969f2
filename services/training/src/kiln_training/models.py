"""The training service's tables and API schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import JSON, Boolean, Column, Float, Integer, String, Text
from sqlmodel import Field, SQLModel

from kiln_core.db import UtcDateTime, new_id, utcnow
from kiln_core.http import Page  # noqa: F401 - the list shape every API shares


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class JobKind(StrEnum):
    train = "train"  # one training run (also a trial of a search)
    search = "search"  # a hyperparameter search: holds no resources, its trials do


def _ts(nullable: bool = False) -> Any:
    return Column(UtcDateTime(), nullable=nullable)


def _json(nullable: bool = True) -> Any:
    return Column(JSON, nullable=nullable)


# --- tables -------------------------------------------------------------------------------------


class Team(SQLModel, table=True):
    __tablename__ = "teams"

    name: str = Field(sa_column=Column(String(100), primary_key=True))
    weight: float = Field(default=1.0, sa_column=Column(Float, nullable=False))
    # Caps per resource kind; kinds not named are uncapped.
    quota: dict[str, float] = Field(default_factory=dict, sa_column=_json(False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class KnownVersion(SQLModel, table=True):
    """Dataset versions this service heard of through ``kiln.dataset.version.created``."""

    __tablename__ = "known_versions"

    version_id: str = Field(sa_column=Column(String(32), primary_key=True))
    dataset_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    dataset_name: str = Field(default="", sa_column=Column(String(200), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    manifest_key: str = Field(sa_column=Column(String(500), nullable=False))
    labelled: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    labels: list[str] = Field(default_factory=list, sa_column=_json(False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class KnownModelVersion(SQLModel, table=True):
    """Registered model versions (``kiln.registry.model_version.created``), for warm starts."""

    __tablename__ = "known_model_versions"

    version_id: str = Field(sa_column=Column(String(32), primary_key=True))
    model_name: str = Field(sa_column=Column(String(200), nullable=False))
    training_job_id: str | None = Field(default=None, sa_column=Column(String(32)))
    artifact_key: str = Field(sa_column=Column(String(500), nullable=False))


class TrainingJob(SQLModel, table=True):
    __tablename__ = "training_jobs"

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    kind: str = Field(default=JobKind.train, sa_column=Column(String(10), nullable=False))
    parent_id: str | None = Field(default=None, sa_column=Column(String(32), index=True))
    trigger_id: str | None = Field(default=None, sa_column=Column(String(32)))
    team: str = Field(sa_column=Column(String(100), nullable=False, index=True))
    model_name: str = Field(sa_column=Column(String(200), nullable=False))
    dataset_id: str = Field(sa_column=Column(String(32), nullable=False))
    dataset_version: int = Field(sa_column=Column(Integer, nullable=False))
    dataset_version_id: str = Field(sa_column=Column(String(32), nullable=False))
    manifest_key: str = Field(sa_column=Column(String(500), nullable=False))
    train_split: str = Field(default="train", sa_column=Column(String(50), nullable=False))
    eval_split: str = Field(default="val", sa_column=Column(String(50), nullable=False))
    template: str = Field(sa_column=Column(String(100), nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=_json(False))
    resources: dict[str, float] = Field(default_factory=dict, sa_column=_json(False))
    pool: str = Field(default="cpu", sa_column=Column(String(10), nullable=False))
    priority: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    mode: str = Field(default="full", sa_column=Column(String(20), nullable=False))
    warm_start_model_version_id: str | None = Field(default=None, sa_column=Column(String(32)))
    warm_start_key: str | None = Field(default=None, sa_column=Column(String(500)))
    seed: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    max_epochs: int | None = Field(default=None, sa_column=Column(Integer))
    time_budget_s: float | None = Field(default=None, sa_column=Column(Float))
    early_stopping_patience: int | None = Field(default=None, sa_column=Column(Integer))
    world_size: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    checkpoint_every_steps: int = Field(default=50, sa_column=Column(Integer, nullable=False))

    status: str = Field(default=JobStatus.queued, sa_column=Column(String(20), nullable=False))
    # "pause" or "cancel" asked of a running job; the run polls it.
    requested: str | None = Field(default=None, sa_column=Column(String(10)))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    max_attempts: int = Field(default=3, sa_column=Column(Integer, nullable=False))
    # Runs lost to a dead worker; the job fails once this reaches max_attempts.
    worker_losses: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    worker_id: str | None = Field(default=None, sa_column=Column(String(200)))
    lease_expires_at: datetime | None = Field(default=None, sa_column=_ts(True))
    checkpoint_key: str | None = Field(default=None, sa_column=Column(String(500)))
    checkpoint_step: int | None = Field(default=None, sa_column=Column(Integer))
    step: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    epoch: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    metrics: dict[str, float] = Field(default_factory=dict, sa_column=_json(False))
    evaluation: dict[str, Any] | None = Field(default=None, sa_column=_json())
    artifact: dict[str, Any] | None = Field(default=None, sa_column=_json())
    # Search jobs: {strategy, space, trials, target, direction, best_trial_id, ranking}.
    search: dict[str, Any] | None = Field(default=None, sa_column=_json())
    error: str | None = Field(default=None, sa_column=Column(Text))
    # The trace the job was submitted in (an API call, or the event that fired a trigger); the
    # run's events continue it.
    traceparent: str | None = Field(default=None, sa_column=Column(String(64)))
    first_step_at: datetime | None = Field(default=None, sa_column=_ts(True))
    last_progress_event_at: datetime | None = Field(default=None, sa_column=_ts(True))
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    submitted_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    queued_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    started_at: datetime | None = Field(default=None, sa_column=_ts(True))
    finished_at: datetime | None = Field(default=None, sa_column=_ts(True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class MetricPoint(SQLModel, table=True):
    """Sampled per-step and every per-epoch metrics of a job."""

    __tablename__ = "metric_points"

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    job_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    kind: str = Field(sa_column=Column(String(10), nullable=False))  # step | epoch
    step: int = Field(sa_column=Column(Integer, nullable=False))
    epoch: int = Field(sa_column=Column(Integer, nullable=False))
    metrics: dict[str, float] = Field(default_factory=dict, sa_column=_json(False))
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class BadCase(SQLModel, table=True):
    """A misclassified evaluation item, by dataset item id, for review."""

    __tablename__ = "bad_cases"

    job_id: str = Field(sa_column=Column(String(32), primary_key=True))
    item_id: str = Field(sa_column=Column(String(500), primary_key=True))
    label: str = Field(sa_column=Column(String(200), nullable=False))
    predicted: str = Field(sa_column=Column(String(200), nullable=False))
    confidence: float = Field(sa_column=Column(Float, nullable=False))


class Worker(SQLModel, table=True):
    """A training worker advertising its pool and capacity; alive while it heartbeats."""

    __tablename__ = "workers"

    id: str = Field(sa_column=Column(String(200), primary_key=True))
    pool: str = Field(sa_column=Column(String(10), nullable=False))
    capacity: dict[str, float] = Field(default_factory=dict, sa_column=_json(False))
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Trigger(SQLModel, table=True):
    """When a labelled version of ``dataset_id`` appears, train ``template`` with ``params``."""

    __tablename__ = "triggers"

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    dataset_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    enabled: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    # The job to submit: everything of a JobCreate except the dataset version.
    job: dict[str, Any] = Field(default_factory=dict, sa_column=_json(False))
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


# --- API schemas --------------------------------------------------------------------------------

ResourceName = Literal["cpu", "memory", "gpu"]


class ResourcesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: float = PydField(default=1.0, ge=0, le=1024, description="cores")
    memory: float = PydField(default=1.0, ge=0, le=4096, description="GiB")
    gpu: float = PydField(default=0.0, ge=0, le=64, multiple_of=1, description="whole devices")


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float = PydField(default=1.0, gt=0, le=1000)
    # Amounts are never negative; the schema says so.
    quota: dict[ResourceName, Annotated[float, PydField(ge=0)]] = PydField(default_factory=dict)


class TeamCreate(TeamIn):
    name: str = PydField(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_\-]*$")


class TeamPublic(BaseModel):
    name: str
    weight: float
    quota: dict[str, float]
    created_at: datetime
    updated_at: datetime


class DatasetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = PydField(min_length=1, max_length=32)
    version: int | None = PydField(default=None, ge=1, description="version number")
    version_id: str | None = PydField(default=None, max_length=32)
    train_split: str = PydField(default="train", min_length=1, max_length=50)
    eval_split: str = PydField(default="val", min_length=1, max_length=50)


class JobSpecIn(BaseModel):
    """What to train; shared by jobs, searches (as the base of every trial) and triggers."""

    model_config = ConfigDict(extra="forbid")

    template: str = PydField(min_length=1, max_length=100)
    params: dict[str, Any] = PydField(default_factory=dict)
    team: str = PydField(min_length=1, max_length=100)
    model_name: str | None = PydField(default=None, max_length=200)
    resources: ResourcesIn = PydField(default_factory=ResourcesIn)
    priority: int = PydField(default=0, ge=-100, le=100)
    mode: Literal["full", "incremental"] = "full"
    warm_start_model_version_id: str | None = PydField(default=None, max_length=32)
    warm_start_job_id: str | None = PydField(default=None, max_length=32)
    seed: int = PydField(default=0, ge=0, le=2**31 - 1)
    max_epochs: int | None = PydField(default=None, ge=1, le=10_000)
    time_budget_s: float | None = PydField(default=None, gt=0, le=7 * 24 * 3600)
    early_stopping_patience: int | None = PydField(default=None, ge=1, le=1000)
    world_size: int = PydField(default=1, ge=1, le=64)
    checkpoint_every_steps: int = PydField(default=50, ge=1, le=1_000_000)
    max_attempts: int = PydField(
        default=3, ge=1, le=20, description="runs a job may lose to dead workers before failing"
    )


class JobCreate(JobSpecIn):
    dataset: DatasetRef


class JobPublic(BaseModel):
    id: str
    kind: str
    parent_id: str | None
    trigger_id: str | None
    status: str
    requested: str | None
    team: str
    model_name: str
    template: str
    params: dict[str, Any]
    dataset_id: str
    dataset_version: int
    dataset_version_id: str
    train_split: str
    eval_split: str
    resources: dict[str, float]
    pool: str
    priority: int
    mode: str
    warm_start_model_version_id: str | None
    seed: int
    max_epochs: int | None
    time_budget_s: float | None
    early_stopping_patience: int | None
    world_size: int
    attempts: int
    max_attempts: int
    worker_losses: int
    step: int
    epoch: int
    checkpoint_step: int | None
    metrics: dict[str, float]
    artifact: dict[str, Any] | None
    search: dict[str, Any] | None
    error: str | None
    created_by: str
    submitted_at: datetime
    started_at: datetime | None
    first_step_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class MetricPointPublic(BaseModel):
    kind: str
    step: int
    epoch: int
    metrics: dict[str, float]
    at: datetime


class BadCasePublic(BaseModel):
    item_id: str
    label: str
    predicted: str
    confidence: float


class SearchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: JobCreate
    strategy: Literal["grid", "random"] = "grid"
    space: dict[str, Any] = PydField(
        description="per hyperparameter: a list of values, or {min, max, log?} / {choices} "
        "for random search; a name mapped to null takes the template's declared range"
    )
    trials: int | None = PydField(default=None, ge=1, le=200, description="random: how many")
    target: str = PydField(default="accuracy", min_length=1, max_length=100)
    direction: Literal["maximize", "minimize"] = "maximize"


class TriggerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = PydField(min_length=1, max_length=200)
    dataset_id: str = PydField(min_length=1, max_length=32)
    enabled: bool = True
    job: JobSpecIn
    train_split: str = PydField(default="train", min_length=1, max_length=50)
    eval_split: str = PydField(default="val", min_length=1, max_length=50)


class TriggerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = PydField(default=None, min_length=1, max_length=200)
    enabled: bool | None = None
    job: JobSpecIn | None = None


class TriggerPublic(BaseModel):
    id: str
    name: str
    dataset_id: str
    enabled: bool
    job: dict[str, Any]
    created_by: str
    created_at: datetime
    updated_at: datetime
