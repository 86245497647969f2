"""The annotation service's tables and API schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Column, Integer, String, Text
from sqlmodel import Field, SQLModel

from kiln_core.db import UtcDateTime, new_id, utcnow
from kiln_core.jobs import JobColumns


class TaskStatus(StrEnum):
    queued = "queued"  # waiting for an annotator
    leased = "leased"  # an annotator holds it until the lease expires
    rework = "rework"  # rejected by a reviewer: back with its annotator
    in_review = "in_review"  # submitted; waiting for review at ``review_level``
    accepted = "accepted"  # passed every review level
    committed = "committed"  # its labels went out in a labels.committed event


def _ts(nullable: bool = False) -> Any:
    return Column(UtcDateTime(), nullable=nullable)


class Project(SQLModel, table=True):
    __tablename__ = "projects"

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    # The team that owns it (kiln_core.teams): its tasks, jobs and commits go with it.
    team: str = Field(default="default", sa_column=Column(String(100), nullable=False, index=True))
    dataset_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    label_schema: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    auto_annotate: bool = Field(default=True, sa_column=Column(Boolean, nullable=False))
    batch_size: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    overlap: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    review_levels: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    lease_seconds: int = Field(default=900, sa_column=Column(Integer, nullable=False))
    prelabel_endpoint: str | None = Field(default=None, sa_column=Column(String(200)))
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class Task(SQLModel, table=True):
    __tablename__ = "tasks"

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    project_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    group_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    slot: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    dataset_version: int = Field(sa_column=Column(Integer, nullable=False))
    # [{item_id, blob, width, height, media_type}] — what the annotator needs to draw on.
    items: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    priority: int = Field(default=0, sa_column=Column(Integer, nullable=False, index=True))
    source: str = Field(default="dataset", sa_column=Column(String(30), nullable=False))
    status: str = Field(
        default=TaskStatus.queued, sa_column=Column(String(20), nullable=False, index=True)
    )
    assignee: str | None = Field(default=None, sa_column=Column(String(200), index=True))
    lease_expires_at: datetime | None = Field(default=None, sa_column=_ts(True))
    review_level: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    labels: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    prelabels: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    gold_labels: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    commit_id: str | None = Field(default=None, sa_column=Column(String(32)))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class ProjectItem(SQLModel, table=True):
    """Items a project already made tasks for, so a derived version (augmented, or with
    active-learning inputs added) only brings its new items."""

    __tablename__ = "project_items"

    project_id: str = Field(sa_column=Column(String(32), primary_key=True))
    item_id: str = Field(sa_column=Column(String(500), primary_key=True))


class PrelabelJob(JobColumns, table=True):
    """Asking a served model for suggestions on a project's waiting tasks."""

    __tablename__ = "prelabel_jobs"

    project_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    endpoint: str = Field(sa_column=Column(String(200), nullable=False))
    done: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    total: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    failed_items: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    error: str = Field(default="", sa_column=Column(Text, nullable=False))

    def record_failure(self, problem: dict[str, Any]) -> None:
        super().record_failure(problem)
        self.error = str(problem["detail"])[:2000]


class SelectionJob(JobColumns, table=True):
    """The next batch of a version's unlabelled items, ranked by a served model's uncertainty
    (:mod:`kiln_annotation.selection`)."""

    __tablename__ = "selection_jobs"

    project_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    endpoint: str = Field(default="", sa_column=Column(String(200), nullable=False))
    dataset_version: int = Field(sa_column=Column(Integer, nullable=False))
    manifest_key: str = Field(sa_column=Column(String(500), nullable=False))
    strategy: str = Field(sa_column=Column(String(30), nullable=False))
    size: int = Field(sa_column=Column(Integer, nullable=False))
    diversity: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    seed: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    done: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    total: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    failed_items: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    tasks_created: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    # [{item_id, uncertainty}], most uncertain (or, random, first drawn) first.
    selected: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    error: str = Field(default="", sa_column=Column(Text, nullable=False))

    def record_progress(self, done: int, total: int, message: str) -> None:
        super().record_progress(done, total, message)
        self.done, self.total = done, total

    def record_failure(self, problem: dict[str, Any]) -> None:
        super().record_failure(problem)
        self.error = str(problem["detail"])[:2000]


class AuditEntry(SQLModel, table=True):
    """Every step of every task: who did what, when."""

    __tablename__ = "audit"

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    task_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    actor: str = Field(sa_column=Column(String(200), nullable=False))
    action: str = Field(sa_column=Column(String(30), nullable=False))
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    comment: str = Field(default="", sa_column=Column(Text, nullable=False))
    at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class LabelsCommit(SQLModel, table=True):
    __tablename__ = "commits"

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    project_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    dataset_version: int = Field(sa_column=Column(Integer, nullable=False))
    manifest_key: str = Field(sa_column=Column(String(500), nullable=False))
    item_count: int = Field(sa_column=Column(Integer, nullable=False))
    task_count: int = Field(sa_column=Column(Integer, nullable=False))
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
