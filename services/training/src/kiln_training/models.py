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
    # Counted caps (kiln_training.quotas.LIMITS): unfinished jobs and the like.
    limits: dict[str, int] = Field(default_factory=dict, sa_column=_json(False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class KnownVersion(SQLModel, table=True):
    """Dataset versions this service heard of through ``kiln.dataset.version.created``."""

    __tablename__ = "known_versions"

    version_id: str = Field(sa_column=Column(String(32), primary_key=True))
    dataset_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    dataset_name: str = Field(default="", sa_column=Column(String(200), nullable=False))
    # The dataset's team and the teams it is shared with: who may train on it.
    team: str = Field(default="default", sa_column=Column(String(100), nullable=False))
    shared_with: list[str] = Field(default_factory=list, sa_column=_json(False))
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
LimitName = Literal["jobs", "endpoints", "model_instances", "storage_bytes"]


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
    limits: dict[LimitName, Annotated[int, PydField(ge=0, le=10**15)]] = PydField(
        default_factory=dict,
        description="counted caps: 'jobs' (queued, running and paused at once), 'endpoints', "
        "'model_instances' (inference-server instances over the team's endpoints), "
        "'storage_bytes' (distinct blobs of its datasets' live versions and open drafts)",
    )


class TeamCreate(TeamIn):
    name: str = PydField(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9_\-]*$")


class TeamPublic(BaseModel):
    name: str
    weight: float
    quota: dict[str, float]
    limits: dict[str, int]
    created_at: datetime
    updated_at: datetime


class DatasetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset_id: str = PydField(min_length=1, max_length=32, description="the dataset to train on")
    version: int | None = PydField(
        default=None, ge=1, description="version number (or version_id); neither: the latest"
    )
    version_id: str | None = PydField(
        default=None, max_length=32, description="the version's id, instead of its number"
    )
    train_split: str = PydField(
        default="train", min_length=1, max_length=50, description="split the model learns from"
    )
    eval_split: str = PydField(
        default="val", min_length=1, max_length=50, description="split it is evaluated on"
    )


class JobSpecIn(BaseModel):
    """What to train; shared by jobs, searches (as the base of every trial) and triggers."""

    model_config = ConfigDict(extra="forbid")

    template: str = PydField(
        min_length=1, max_length=100, description="a training template (GET /v1/templates)"
    )
    params: dict[str, Any] = PydField(
        default_factory=dict,
        description="the template's hyperparameters, checked against its ranges",
    )
    team: str = PydField(min_length=1, max_length=100, description="whose fair share it uses")
    model_name: str | None = PydField(
        default=None, max_length=200, description="registered model the result becomes a version of"
    )
    resources: ResourcesIn = PydField(
        default_factory=ResourcesIn, description="what one worker must offer to run it"
    )
    priority: int = PydField(
        default=0, ge=-100, le=100, description="order within the team's queue; higher first"
    )
    mode: Literal["full", "incremental"] = PydField(
        default="full", description="incremental: start from a warm start and new data"
    )
    warm_start_model_version_id: str | None = PydField(
        default=None, max_length=32, description="model version whose weights it starts from"
    )
    warm_start_job_id: str | None = PydField(
        default=None, max_length=32, description="finished job whose weights it starts from"
    )
    seed: int = PydField(default=0, ge=0, le=2**31 - 1, description="for a reproducible run")
    max_epochs: int | None = PydField(
        default=None, ge=1, le=10_000, description="stop after this many epochs"
    )
    time_budget_s: float | None = PydField(
        default=None, gt=0, le=7 * 24 * 3600, description="stop after this much training time"
    )
    early_stopping_patience: int | None = PydField(
        default=None, ge=1, le=1000, description="stop after this many epochs without improvement"
    )
    world_size: int = PydField(
        default=1, ge=1, le=64, description="workers training it together (data parallel)"
    )
    checkpoint_every_steps: int = PydField(
        default=50, ge=1, le=1_000_000, description="steps between checkpoints (resume points)"
    )
    max_attempts: int = PydField(
        default=3, ge=1, le=20, description="runs a job may lose to dead workers before failing"
    )


class JobCreate(JobSpecIn):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "template": "image-cnn",
                    "params": {"epochs": 20, "lr": 0.001, "batch_size": 32, "image_size": 64},
                    "team": "vision",
                    "model_name": "bolts-cnn",
                    "dataset": {
                        "dataset_id": "9f1c2b7e5a0d4c8e9b3a6f1e2d4c5b6a",
                        "version": 2,
                        "train_split": "train",
                        "eval_split": "val",
                    },
                    "resources": {"cpu": 2, "memory": 4, "gpu": 0},
                    "early_stopping_patience": 5,
                }
            ]
        },
    )

    dataset: DatasetRef = PydField(description="the dataset version and splits to use")


class JobPublic(BaseModel):
    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "7a1b2c3d4e5f60718293a4b5c6d7e8f9",
                    "kind": "train",
                    "parent_id": None,
                    "trigger_id": None,
                    "status": "succeeded",
                    "requested": None,
                    "team": "vision",
                    "model_name": "bolts-cnn",
                    "template": "image-cnn",
                    "params": {"epochs": 20, "lr": 0.001, "batch_size": 32, "image_size": 64},
                    "dataset_id": "9f1c2b7e5a0d4c8e9b3a6f1e2d4c5b6a",
                    "dataset_version": 2,
                    "dataset_version_id": "1e2d3c4b5a69788796a5b4c3d2e1f0a9",
                    "train_split": "train",
                    "eval_split": "val",
                    "resources": {"cpu": 2.0, "memory": 4.0, "gpu": 0.0},
                    "pool": "cpu",
                    "priority": 0,
                    "mode": "full",
                    "warm_start_model_version_id": None,
                    "seed": 0,
                    "max_epochs": None,
                    "time_budget_s": None,
                    "early_stopping_patience": 5,
                    "world_size": 1,
                    "attempts": 1,
                    "max_attempts": 3,
                    "worker_losses": 0,
                    "step": 400,
                    "epoch": 20,
                    "checkpoint_step": 400,
                    "metrics": {"loss": 0.12, "accuracy": 0.96},
                    "artifact": {"key": "artifacts/7a1b/model.pt", "format": "torchscript"},
                    "search": None,
                    "error": None,
                    "created_by": "mia",
                    "submitted_at": "2026-03-01T10:00:00Z",
                    "started_at": "2026-03-01T10:00:02Z",
                    "first_step_at": "2026-03-01T10:00:05Z",
                    "finished_at": "2026-03-01T10:04:40Z",
                    "updated_at": "2026-03-01T10:04:40Z",
                }
            ]
        },
    )

    id: str
    """The job's id."""
    kind: str
    """train, or search (a parent whose trials are train jobs)."""
    parent_id: str | None
    """The search this trial belongs to."""
    trigger_id: str | None
    """The trigger that submitted it, if one did."""
    status: str
    """queued, running, paused, succeeded, failed or cancelled."""
    requested: str | None
    """A pause or cancel asked for and not yet carried out."""
    team: str
    """Whose fair share it uses."""
    model_name: str
    """Registered model the result becomes a version of."""
    template: str
    """The training template."""
    params: dict[str, Any]
    """Its hyperparameters, with the template's defaults filled in."""
    dataset_id: str
    """The dataset it trains on."""
    dataset_version: int
    """The dataset version's number."""
    dataset_version_id: str
    """The dataset version's id."""
    train_split: str
    """Split it learns from."""
    eval_split: str
    """Split it is evaluated on."""
    resources: dict[str, float]
    """cpu, memory (GiB) and gpu one worker gives it."""
    pool: str
    """Worker pool that runs it (cpu or gpu)."""
    priority: int
    """Order within the team's queue; higher first."""
    mode: str
    """full or incremental."""
    warm_start_model_version_id: str | None
    """Model version its weights started from."""
    seed: int
    """Random seed."""
    max_epochs: int | None
    """Epoch limit."""
    time_budget_s: float | None
    """Training time limit in seconds."""
    early_stopping_patience: int | None
    """Epochs without improvement before it stops."""
    world_size: int
    """Workers training it together."""
    attempts: int
    """Runs started so far (a lost worker costs one)."""
    max_attempts: int
    """Runs it may lose before failing."""
    worker_losses: int
    """Workers lost while it ran."""
    step: int
    """Optimiser steps done."""
    epoch: int
    """Epochs done."""
    checkpoint_step: int | None
    """Step of the latest checkpoint."""
    metrics: dict[str, float]
    """Latest metrics (final ones once it succeeded)."""
    artifact: dict[str, Any] | None
    """The exported model (key, format, size) once it succeeded."""
    search: dict[str, Any] | None
    """For a search: strategy, space, target, direction, ranking and best trial."""
    error: str | None
    """Why it failed."""
    created_by: str
    """Who submitted it."""
    submitted_at: datetime
    """When it was submitted (UTC)."""
    started_at: datetime | None
    """When a worker first started it."""
    first_step_at: datetime | None
    """When its first step finished."""
    finished_at: datetime | None
    """When it reached a final status."""
    updated_at: datetime
    """When it last changed."""


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
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "base": {
                        "template": "image-cnn",
                        "params": {"epochs": 10},
                        "team": "vision",
                        "model_name": "bolts-cnn",
                        "dataset": {"dataset_id": "9f1c2b7e5a0d4c8e9b3a6f1e2d4c5b6a"},
                    },
                    "strategy": "grid",
                    "space": {"lr": [0.01, 0.001], "batch_size": [16, 32]},
                    "target": "accuracy",
                    "direction": "maximize",
                }
            ]
        },
    )

    base: JobCreate = PydField(description="the job every trial starts from")
    strategy: Literal["grid", "random"] = PydField(
        default="grid", description="grid: every combination; random: `trials` draws"
    )
    space: dict[str, Any] = PydField(
        description="per hyperparameter: a list of values, or {min, max, log?} / {choices} "
        "for random search; a name mapped to null takes the template's declared range"
    )
    trials: int | None = PydField(default=None, ge=1, le=200, description="random: how many")
    target: str = PydField(
        default="accuracy", min_length=1, max_length=100, description="metric trials are ranked by"
    )
    direction: Literal["maximize", "minimize"] = PydField(
        default="maximize", description="whether a higher or a lower target is better"
    )


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
