"""The serving service's tables and API schemas."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic import Field as PydField
from sqlalchemy import JSON, Column, Float, Integer, String, Text
from sqlmodel import Field, SQLModel

from kiln_core.db import UtcDateTime, new_id, utcnow
from kiln_core.teams import TEAM_NAME

Strategy = Literal["direct", "canary", "shadow", "ab"]
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


# The raw samples inside a rollout analysis: kept for the verdicts, never shown.
ANALYSIS_SAMPLES = ("latencies", "scores")


class DeploymentState(StrEnum):
    """Life of one model version on one endpoint."""

    pending = "pending"  # promotion recorded; the controller has not loaded it yet
    loading = "loading"
    candidate = "candidate"  # loaded and warm, taking part of the traffic (or a shadow copy)
    stable = "stable"  # answers the endpoint's traffic
    draining = "draining"  # out of the routes; unloaded once in-flight requests finish
    retired = "retired"
    failed = "failed"


# Deployments whose Triton model must be loaded.
LOADED_STATES = (DeploymentState.candidate, DeploymentState.stable, DeploymentState.draining)


def _ts(nullable: bool = False) -> Any:
    return Column(UtcDateTime(), nullable=nullable)


# --- tables -------------------------------------------------------------------------------------


class Endpoint(SQLModel, table=True):
    __tablename__ = "endpoints"

    name: str = Field(sa_column=Column(String(63), primary_key=True))
    # The team that owns it (kiln_core.teams): only its members call or change it.
    team: str = Field(default="default", sa_column=Column(String(100), nullable=False, index=True))
    model_name: str = Field(sa_column=Column(String(200), nullable=False, index=True))
    alias: str = Field(sa_column=Column(String(100), nullable=False))
    candidate_alias: str = Field(sa_column=Column(String(100), nullable=False))
    strategy: str = Field(sa_column=Column(String(20), nullable=False))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    stable_id: str | None = Field(default=None, sa_column=Column(String(32)))
    candidate_id: str | None = Field(default=None, sa_column=Column(String(32)))
    # Percent of traffic the candidate answers (canary step, A/B share; 0 for shadow).
    candidate_weight: float = Field(default=0.0, sa_column=Column(Float, nullable=False))
    # Bumped on every change of routes, so processes refresh their in-memory table cheaply.
    generation: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


def deployments_channel(schema: str) -> str:
    """Where a new pending deployment wakes the controllers of the service in ``schema``."""
    return f"kiln_serving_deploy_{schema}"


class Deployment(SQLModel, table=True):
    """One model version on one endpoint, with the artifact to (re)load it from."""

    __tablename__ = "deployments"

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    endpoint: str = Field(sa_column=Column(String(63), nullable=False, index=True))
    model_name: str = Field(sa_column=Column(String(200), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    version_id: str = Field(sa_column=Column(String(64), nullable=False))
    alias: str = Field(sa_column=Column(String(100), nullable=False))
    triton_model: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    artifact: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    dataset_id: str | None = Field(default=None, sa_column=Column(String(64)))
    state: str = Field(default=DeploymentState.pending, sa_column=Column(String(20), index=True))
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    load_seconds: float | None = Field(default=None, sa_column=Column(Float))
    # Canary/shadow analysis that survives a restart: step, counters, latency and score
    # samples (ANALYSIS_SAMPLES, left out of what the API and events show).
    analysis: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    event_id: str = Field(default="", sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Promotion(SQLModel, table=True):
    """The latest promotion of each model alias, so an endpoint created later starts with it."""

    __tablename__ = "promotions"

    model_name: str = Field(sa_column=Column(String(200), primary_key=True))
    alias: str = Field(sa_column=Column(String(100), primary_key=True))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    version_id: str = Field(sa_column=Column(String(64), nullable=False))
    artifact: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    dataset_id: str | None = Field(default=None, sa_column=Column(String(64)))
    event_id: str = Field(sa_column=Column(String(64), nullable=False))
    promoted_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


# --- API schemas --------------------------------------------------------------------------------


# A canary step: the candidate's share of traffic, in percent (steps must also increase).
CanaryStep = Annotated[float, PydField(gt=0.0, le=100.0)]


class EndpointConfig(BaseModel):
    """How an endpoint rolls out new versions and logs predictions."""

    canary_steps: list[CanaryStep] = PydField(
        default_factory=lambda: [10.0, 50.0, 100.0],
        min_length=1,
        description="the candidate's traffic share per step, in percent, increasing to 100",
    )
    step_interval_s: float = PydField(
        default=30.0, ge=0.0, le=86400.0, description="least time a canary step lasts"
    )
    min_requests_per_step: int = PydField(
        default=20, ge=1, le=1_000_000, description="candidate answers a step needs to be judged"
    )
    max_error_rate: float = PydField(
        default=0.05, ge=0.0, le=1.0, description="a candidate erring more is rolled back"
    )
    max_latency_ratio: float = PydField(default=2.0, gt=0.0, description="candidate p99 / stable")
    max_score_shift: float | None = PydField(
        default=None,
        ge=0.0,
        le=1.0,
        description="roll back when the two-sample Kolmogorov-Smirnov statistic between the"
        " candidate's and the stable version's answer scores (top-class probability; a"
        " detector's best box score) exceeds this; null: reported, never judged",
    )
    warmup_requests: int = PydField(
        default=20,
        ge=0,
        le=1_000_000,
        description="the candidate's first answered requests, left out of its latency (cold)",
    )
    ab_weight: float = PydField(default=50.0, ge=0.0, le=100.0, description="% to candidate")
    confidence_threshold: float = PydField(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="answers less confident than this are flagged and their inputs go back to "
        "labelling (0: none)",
    )
    box_score_floor: float = PydField(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="detectors: boxes scoring below this are not answered (see"
        " kiln_serving.detection for the flagging policy)",
    )
    sample_rate: float = PydField(
        default=0.0, ge=0.0, le=1.0, description="share of answers logged as prediction events"
    )
    instance_count: int = PydField(
        default=1, ge=1, le=16, description="model instances in the inference server"
    )
    max_batch_size: int = PydField(
        default=32, ge=1, le=1024, description="requests the server may batch together"
    )

    @field_validator("canary_steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError("canary steps must increase strictly within (0, 100]")
        if steps[-1] != 100:
            steps = [*steps, 100.0]
        return steps


class EndpointCreate(EndpointConfig):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "bolts",
                    "model_name": "bolts-cnn",
                    "alias": "production",
                    "candidate_alias": "canary",
                    "strategy": "canary",
                    "canary_steps": [10, 50, 100],
                    "max_error_rate": 0.02,
                    "confidence_threshold": 0.6,
                }
            ]
        }
    )

    name: str = PydField(
        max_length=63,
        # NAME_RE without a double dash, in a form the document can carry.
        pattern=r"^[a-z0-9](-?[a-z0-9])*-?$",
        description="1-63 lower-case letters, digits and single dashes",
    )
    model_name: str = PydField(min_length=1, max_length=200, description="a registered model")
    team: str | None = PydField(
        default=None,
        max_length=100,
        pattern=TEAM_NAME,
        description="the team that owns it; by default the caller's only team",
    )
    alias: str = PydField(
        default="production",
        min_length=1,
        max_length=100,
        description="the model alias it serves; moving the alias rolls the endpoint out",
    )
    candidate_alias: str = PydField(
        default="canary",
        min_length=1,
        max_length=100,
        description="alias whose version is rolled out as a candidate beside the stable one",
    )
    strategy: Strategy = PydField(
        default="direct", description="direct, canary (steps), ab (a fixed split) or shadow"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_RE.match(name) or "--" in name:
            raise ValueError("use 1-63 lower-case letters, digits and single dashes")
        return name

    def config(self) -> EndpointConfig:
        return EndpointConfig.model_validate(
            self.model_dump(include=set(EndpointConfig.model_fields))
        )


class EndpointUpdate(BaseModel):
    """Fields to change; the rest stay."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})  # "nothing to update"

    # Left out means unchanged; each field takes what the endpoint's own field takes (the
    # document says so), and no null.
    alias: str = PydField(default=None, min_length=1, max_length=100)  # type: ignore[assignment]
    candidate_alias: str = PydField(default=None, min_length=1, max_length=100)  # type: ignore[assignment]
    strategy: Strategy = PydField(default=None)  # type: ignore[arg-type]
    canary_steps: list[CanaryStep] = PydField(default=None, min_length=1)  # type: ignore[arg-type]
    step_interval_s: float = PydField(default=None, ge=0.0, le=86400.0)  # type: ignore[assignment]
    min_requests_per_step: int = PydField(default=None, ge=1, le=1_000_000)  # type: ignore[assignment]
    max_error_rate: float = PydField(default=None, ge=0.0, le=1.0)  # type: ignore[assignment]
    max_latency_ratio: float = PydField(default=None, gt=0.0)  # type: ignore[assignment]
    warmup_requests: int = PydField(default=None, ge=0, le=1_000_000)  # type: ignore[assignment]
    ab_weight: float = PydField(default=None, ge=0.0, le=100.0)  # type: ignore[assignment]
    confidence_threshold: float = PydField(default=None, ge=0.0, le=1.0)  # type: ignore[assignment]
    sample_rate: float = PydField(default=None, ge=0.0, le=1.0)  # type: ignore[assignment]
    instance_count: int = PydField(default=None, ge=1, le=16)  # type: ignore[assignment]
    max_batch_size: int = PydField(default=None, ge=1, le=1024)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _some(self) -> EndpointUpdate:
        if not self.model_fields_set:
            raise ValueError("nothing to update")
        return self


class DeploymentPublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    """The deployment's id."""
    model_name: str
    """The registered model."""
    version: int
    """The model version it serves."""
    version_id: str
    """That version's id."""
    alias: str
    """The alias that brought it."""
    triton_model: str
    """Its name in the inference server."""
    state: str
    """pending, loading, stable, candidate, draining, retired or failed."""
    reason: str
    """Why it is in its state (e.g. the canary verdict)."""
    load_seconds: float | None
    """How long loading took."""
    analysis: dict[str, Any]
    """A candidate's canary analysis: its step; per side (candidate, stable) requests,
    errors, error_rate and p99_ms; shadow agreement."""
    created_at: datetime
    """When it was created."""
    updated_at: datetime
    """When it last changed."""

    @classmethod
    def of(cls, d: Deployment) -> DeploymentPublic:
        analysis = {k: v for k, v in d.analysis.items() if k not in ANALYSIS_SAMPLES}
        for side in ("candidate", "stable"):
            if isinstance(analysis.get(side), dict):
                analysis[side] = {
                    k: v for k, v in analysis[side].items() if k not in ANALYSIS_SAMPLES
                }
        return cls(**d.model_dump(exclude={"analysis"}), analysis=analysis)


class EndpointPublic(BaseModel):
    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "name": "bolts",
                    "team": "vision",
                    "model_name": "bolts-cnn",
                    "alias": "production",
                    "candidate_alias": "canary",
                    "strategy": "canary",
                    "config": {"canary_steps": [10, 50, 100], "max_error_rate": 0.02},
                    "state": "rolling_out",
                    "traffic": {"1": 0.9, "2": 0.1},
                    "stable": None,
                    "candidate": None,
                    "deployments": [],
                    "created_at": "2026-03-01T11:00:00Z",
                    "updated_at": "2026-03-01T11:05:00Z",
                }
            ]
        },
    )

    name: str
    """The endpoint's name (the path of its predictions)."""
    team: str
    """The team that owns it."""
    model_name: str
    """The registered model it serves."""
    alias: str
    """The alias it follows."""
    candidate_alias: str
    """The alias whose version it rolls out as a candidate."""
    strategy: str
    """direct, canary, ab or shadow."""
    config: EndpointConfig
    """Its roll-out and logging settings."""
    state: str = PydField(description="empty | deploying | serving | rolling_out")
    traffic: dict[str, float] = PydField(description="share of answers by model version")
    stable: DeploymentPublic | None
    """The deployment answering most traffic."""
    candidate: DeploymentPublic | None
    """The deployment being rolled out, with its analysis."""
    deployments: list[DeploymentPublic]
    """Every deployment, newest first."""
    created_at: datetime
    """When it was created."""
    updated_at: datetime
    """When it last changed."""
