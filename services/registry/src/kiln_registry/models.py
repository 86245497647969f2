"""The registry service's tables and API schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator
from pydantic import Field as PydField
from sqlalchemy import JSON, BigInteger, Column, Integer, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from kiln_core.auth import Role
from kiln_core.catalog import ModelArtifact, ModelSignature, Preprocessing
from kiln_core.db import INT32_MAX, UtcDateTime, new_id, utcnow
from kiln_core.http import Page  # noqa: F401 - the list shape every API shares
from kiln_core.jobs import JobRecord
from kiln_core.teams import TEAM_NAME

NAME_PATTERN = r"^[A-Za-z0-9][\w.\-]*$"
ALIAS_PATTERN = r"^[a-z][a-z0-9\-]{0,62}$"
STAGE_ALIASES = ("staging", "canary", "production")


class VersionStatus(StrEnum):
    registered = "registered"
    staged = "staged"
    production = "production"
    archived = "archived"


def _ts(nullable: bool = False) -> Any:
    return Column(UtcDateTime(), nullable=nullable)


# --- tables -------------------------------------------------------------------------------------


class RegisteredModel(SQLModel, table=True):
    __tablename__ = "registered_models"

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    # The team that owns it (kiln_core.teams): only its jobs add versions to it.
    team: str = Field(default="default", sa_column=Column(String(100), nullable=False, index=True))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    task_type: str | None = Field(default=None, sa_column=Column(String(30)))
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    next_version: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ModelVersion(SQLModel, table=True):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "number", name="uq_model_versions_number"),)

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    model_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    number: int = Field(sa_column=Column(Integer, nullable=False))
    status: str = Field(
        default=VersionStatus.registered, sa_column=Column(String(20), nullable=False)
    )
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    evaluation_split: str | None = Field(default=None, sa_column=Column(String(100)))
    # The artifact as serving needs it (uri, key, sha256, size, format, signature, labels, ...).
    artifact: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    sha256: str = Field(sa_column=Column(String(64), nullable=False))
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    lineage: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # One version per training job, whichever event (or redelivery) brings it.
    training_job_id: str | None = Field(default=None, sa_column=Column(String(64), unique=True))
    compression: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Alias(SQLModel, table=True):
    __tablename__ = "model_aliases"

    model_id: str = Field(sa_column=Column(String(32), primary_key=True))
    name: str = Field(sa_column=Column(String(63), primary_key=True))
    version_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    updated_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class PromotionPolicy(SQLModel, table=True):
    __tablename__ = "promotion_policies"

    model_id: str = Field(sa_column=Column(String(32), primary_key=True))
    rules: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    updated_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Operation(SQLModel, table=True):
    """The operation log: every change to a model or version, with who and when."""

    __tablename__ = "model_operations"

    # Insertion order: entries written in one transaction share a timestamp.
    seq: int | None = Field(
        default=None,
        sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
    )
    id: str = Field(
        default_factory=new_id, sa_column=Column(String(32), nullable=False, unique=True)
    )
    model_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    version_id: str | None = Field(default=None, sa_column=Column(String(32), index=True))
    action: str = Field(sa_column=Column(String(50), nullable=False))
    actor: str = Field(sa_column=Column(String(200), nullable=False))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Job(JobRecord, table=True):
    """Long work (compression) and its outcome; the row is the truth, not Celery."""

    __tablename__ = "registry_jobs"

    model_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    version_id: str = Field(sa_column=Column(String(32), nullable=False))


# --- API schemas --------------------------------------------------------------------------------


# What the registry enforces on each tag, declared in the schema so clients know it.
Tag = Annotated[str, StringConstraints(min_length=1, max_length=100)]


def _clean_tags(tags: list[str]) -> list[str]:
    return sorted(set(tags))


class ModelCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "bolts-cnn",
                    "description": "finds loose bolts on line 3",
                    "task_type": "classification",
                    "tags": ["line-3"],
                }
            ]
        },
    )

    name: str = PydField(
        min_length=1, max_length=200, pattern=NAME_PATTERN, description="unique model name"
    )
    team: str | None = PydField(
        default=None,
        max_length=100,
        pattern=TEAM_NAME,
        description="the team that owns it; by default the caller's only team",
    )
    description: str = PydField(default="", max_length=5000, description="free text")
    task_type: str | None = PydField(
        default=None, max_length=30, description="classification, detection, … (free text)"
    )
    tags: list[Tag] = PydField(
        default_factory=list, max_length=50, description="labels for finding it; sorted, unique"
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return _clean_tags(v)


class MetadataUpdate(BaseModel):
    """Description and tags of a model or a version; every change is logged."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = PydField(default=None, max_length=5000)
    tags: list[Tag] | None = PydField(default=None, max_length=50)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _clean_tags(v)


class ModelPublic(BaseModel):
    id: str
    name: str
    team: str
    description: str
    task_type: str | None
    tags: list[str]
    created_by: str
    latest_version: int | None
    aliases: dict[str, int] = PydField(description="alias name → version number")
    created_at: datetime
    updated_at: datetime


class ImportMetadata(BaseModel):
    """The JSON part of an import: what the TorchScript file takes and returns."""

    model_config = ConfigDict(extra="forbid")

    signature: ModelSignature
    label_map: list[str] = PydField(default_factory=list)
    preprocessing: Preprocessing
    metrics: dict[str, float] = PydField(default_factory=dict)
    params: dict[str, Any] = PydField(default_factory=dict)
    evaluation_split: str | None = None
    tags: list[Tag] = PydField(default_factory=list, max_length=50)
    description: str = PydField(default="", max_length=5000)
    dataset_id: str | None = None
    dataset_version: int | None = PydField(default=None, ge=1, le=INT32_MAX)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return _clean_tags(v)


class VersionPublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    model_name: str
    """The registered model."""
    version: int
    """Its number within the model."""
    version_id: str
    """Its id."""
    status: str
    """ready or archived."""
    aliases: list[str]
    """Aliases pointing at it."""
    description: str
    """Free text."""
    tags: list[str]
    """Sorted, unique tags."""
    metrics: dict[str, float]
    """Evaluation metrics (on evaluation_split)."""
    params: dict[str, Any]
    """Hyperparameters it was trained with."""
    evaluation_split: str | None
    """The dataset split its metrics come from."""
    artifact: ModelArtifact
    """The model file: key, format, signature, label map, preprocessing."""
    sha256: str
    """SHA-256 of the model file."""
    size_bytes: int
    """Size of the model file."""
    lineage: dict[str, Any]
    """Where it came from: source, dataset_id, dataset_version, training_job_id, parent version."""
    compression: dict[str, Any] | None
    """For a compressed version: method, size change and top-1 agreement with its parent."""
    created_by: str
    """Who registered it."""
    created_at: datetime
    """When it was registered."""
    updated_at: datetime
    """When its metadata last changed."""


class MetricGate(BaseModel):
    """The candidate's ``metric`` compared with ``value`` (e.g. accuracy >= 0.9)."""

    model_config = ConfigDict(extra="forbid")

    metric: str = PydField(min_length=1, max_length=100, description="a metric of the version")
    op: Literal[">=", ">", "<=", "<"] = PydField(default=">=", description="how it is compared")
    value: float = PydField(description="the bound")


class RegressionGate(BaseModel):
    """The candidate may be worse than the current production version by at most
    ``max_drop`` on ``metric``, measured on the same evaluation split. ``metric`` may end in
    ``.*`` (``ap.*``): then every metric of production with that prefix is gated."""

    model_config = ConfigDict(extra="forbid")

    metric: str = PydField(min_length=1, max_length=100, description="a metric of both versions")
    max_drop: float = PydField(ge=0, description="largest allowed loss against production")
    higher_is_better: bool = PydField(default=True, description="false for losses and errors")


class PolicyBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "gated_aliases": ["production"],
                    "metric_gates": [{"metric": "accuracy", "op": ">=", "value": 0.9}],
                    "regression_gates": [{"metric": "accuracy", "max_drop": 0.01}],
                    "auto_promote": None,
                    "promoter_roles": ["ml-engineer"],
                }
            ]
        },
    )

    gated_aliases: list[Annotated[str, StringConstraints(pattern=ALIAS_PATTERN)]] = PydField(
        default_factory=lambda: ["production"],
        description="aliases whose promotion the gates guard (others need only the role)",
    )
    metric_gates: list[MetricGate] = PydField(
        default_factory=list, max_length=50, description="bounds the candidate's metrics must meet"
    )
    regression_gates: list[RegressionGate] = PydField(
        default_factory=list,
        max_length=50,
        description="how much worse than production the candidate may be",
    )
    auto_promote: str | None = PydField(
        default=None,
        max_length=100,
        description="alias a version trained by Kiln moves to on registration when it passes "
        "the gates (continuous delivery: production, or canary for a gradual roll-out)",
    )
    promoter_roles: list[Role] = PydField(
        default_factory=lambda: list[Role](["ml-engineer"]),
        min_length=1,
        description="roles allowed to move a gated alias (admin always may)",
    )

    @field_validator("promoter_roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        return sorted(set(v))


class PolicyPublic(PolicyBody):
    model_name: str
    updated_by: str
    updated_at: datetime | None


class PromoteBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"version": 3, "reason": "beats v2 on the May photos"}]},
    )

    version: int = PydField(ge=1, le=INT32_MAX, description="the version the alias moves to")
    reason: str = PydField(default="", max_length=2000, description="kept in the operation log")


class AliasPublic(BaseModel):
    alias: str
    version: int
    version_id: str
    updated_by: str
    updated_at: datetime


class OperationPublic(BaseModel):
    id: str
    version: int | None
    action: str
    actor: str
    details: dict[str, Any]
    at: datetime


class CompressBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"method": "dynamic-int8", "samples": 64, "seed": 0}]},
    )

    method: Literal["dynamic-int8"] = PydField(
        default="dynamic-int8", description="int8 weights for Linear layers"
    )
    samples: int = PydField(default=64, ge=1, le=4096, description="inputs for the agreement")
    seed: int = PydField(default=0, description="for the agreement's random inputs")


class JobPublic(BaseModel):
    id: str
    kind: str
    model_name: str
    version: int | None
    status: str
    message: str
    params: dict[str, Any]
    result: dict[str, Any]
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class Accepted(BaseModel):
    job_id: str
    status_url: str
