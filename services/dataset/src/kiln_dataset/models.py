"""The dataset service's tables and API schemas."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator
from pydantic import Field as PydField
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from kiln_core.db import UtcDateTime, new_id, utcnow
from kiln_core.http import Page  # noqa: F401 - the list shape every API shares
from kiln_core.jobs import JobRecord
from kiln_core.manifest import Category, TaskType
from kiln_core.teams import TEAM_NAME


class DatasetStatus(StrEnum):
    active = "active"
    archived = "archived"
    deleted = "deleted"


class Usability(StrEnum):
    base = "base"
    training = "training"
    validation = "validation"
    anomaly = "anomaly"
    custom = "custom"


# --- tables -------------------------------------------------------------------------------------


def _ts(nullable: bool = False) -> Any:
    return Column(UtcDateTime(), nullable=nullable)


class Dataset(SQLModel, table=True):
    __tablename__ = "datasets"

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    name: str = Field(sa_column=Column(String(200), nullable=False, index=True))
    description: str = Field(default="", sa_column=Column(Text, nullable=False))
    task_type: str = Field(sa_column=Column(String(30), nullable=False))
    owner: str = Field(sa_column=Column(String(200), nullable=False))
    # The team that owns it (kiln_core.teams), and the teams it is shared with read-only.
    team: str = Field(default="default", sa_column=Column(String(100), nullable=False, index=True))
    shared_with: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    source_channel: str | None = Field(default=None, sa_column=Column(String(100), index=True))
    product_standard: str | None = Field(default=None, sa_column=Column(String(20)))
    media_format: str | None = Field(default=None, sa_column=Column(String(50)))
    usability: str | None = Field(default=None, sa_column=Column(String(20)))
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = Field(default=DatasetStatus.active, sa_column=Column(String(20), nullable=False))
    next_version: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    deleted_at: datetime | None = Field(default=None, sa_column=_ts(True))
    purge_after: datetime | None = Field(default=None, sa_column=_ts(True))


class DatasetVersion(SQLModel, table=True):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("dataset_id", "number", name="uq_versions_number"),)

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    dataset_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    number: int = Field(sa_column=Column(Integer, nullable=False))
    parent_id: str | None = Field(default=None, sa_column=Column(String(32)))
    manifest_key: str = Field(sa_column=Column(String(500), nullable=False))
    manifest_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    item_count: int = Field(sa_column=Column(Integer, nullable=False))
    labelled_count: int = Field(sa_column=Column(Integer, nullable=False))
    total_bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    categories: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    lineage: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    quality: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    message: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    status: str = Field(default="live", sa_column=Column(String(20), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    deleted_at: datetime | None = Field(default=None, sa_column=_ts(True))


class VersionBlob(SQLModel, table=True):
    """Which blobs a version references: what the purge must never delete while it lives."""

    __tablename__ = "version_blobs"

    version_id: str = Field(sa_column=Column(String(32), primary_key=True))
    blob: str = Field(sa_column=Column(String(64), primary_key=True, index=True))


class Blob(SQLModel, table=True):
    """Every blob this service stored (content-addressed), for purge accounting."""

    __tablename__ = "blobs"

    sha256: str = Field(sa_column=Column(String(64), primary_key=True))
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    media_type: str = Field(sa_column=Column(String(100), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # Refreshed on every upload of the same bytes, so a purge never races a fresh upload.
    last_seen_at: datetime = Field(default_factory=utcnow, sa_column=_ts())
    # Set once the bytes are in the object store; later uploads of them skip the store.
    stored: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, default=False))


class Draft(SQLModel, table=True):
    __tablename__ = "drafts"

    id: str = Field(default_factory=new_id, sa_column=Column(String(32), primary_key=True))
    dataset_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    base_version: int | None = Field(default=None, sa_column=Column(Integer))
    status: str = Field(default="open", sa_column=Column(String(20), nullable=False))
    created_by: str = Field(default="", sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


class DraftItem(SQLModel, table=True):
    __tablename__ = "draft_items"

    draft_id: str = Field(sa_column=Column(String(32), primary_key=True))
    item_id: str = Field(sa_column=Column(String(500), primary_key=True))
    blob: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    record: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class Job(JobRecord, table=True):
    """Long work (imports, augmentation, quality, purge) and its progress."""

    __tablename__ = "jobs"

    dataset_id: str | None = Field(default=None, sa_column=Column(String(32), index=True))
    done: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    total: int = Field(default=0, sa_column=Column(Integer, nullable=False))

    def record_progress(self, done: int, total: int, message: str) -> None:
        super().record_progress(done, total, message)
        self.done, self.total = done, total


class FlaggedInput(SQLModel, table=True):
    """A low-confidence prediction's input waiting to join its dataset (active learning)."""

    __tablename__ = "flagged_inputs"

    prediction_id: str = Field(sa_column=Column(String(64), primary_key=True))
    dataset_id: str = Field(sa_column=Column(String(32), nullable=False, index=True))
    blob: str = Field(sa_column=Column(String(64), nullable=False))
    content_type: str = Field(sa_column=Column(String(100), nullable=False))
    # {endpoint, model_name, version, predicted_label, confidence, threshold}
    prediction: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # pending → added (in ``version``) | duplicate | rejected (``reason``)
    status: str = Field(default="pending", sa_column=Column(String(20), nullable=False, index=True))
    version: int | None = Field(default=None, sa_column=Column(Integer))
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_column=_ts())


# --- API schemas --------------------------------------------------------------------------------


# What the service enforces on each tag, declared in the schema so clients know it.
Tag = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class DatasetCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "bolts-line-3",
                    "description": "Photos of bolts and nuts from line 3, for defect detection",
                    "task_type": "detection",
                    "source_channel": "factory-camera",
                    "product_standard": "standard",
                    "media_format": "jpeg",
                    "usability": "training",
                    "tags": ["line-3", "metal"],
                }
            ]
        },
    )

    name: str = PydField(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][\w .\-]*$",
        description="unique among the team's live datasets; letters, digits, spaces, dots, dashes",
    )
    team: str | None = PydField(
        default=None,
        max_length=100,
        pattern=TEAM_NAME,
        description="the team that owns it; by default the caller's only team",
    )
    description: str = PydField(default="", max_length=5000, description="free text, shown as text")
    task_type: TaskType = PydField(description="what its labels are for; sets the label kinds")
    source_channel: str | None = PydField(
        default=None, max_length=100, description="where the images come from (free text)"
    )
    product_standard: str | None = PydField(
        default=None,
        pattern=r"^(standard|non-standard)$",
        description="whether the pictured product follows its standard",
    )
    media_format: str | None = PydField(
        default=None, max_length=50, description="the images' usual format, e.g. jpeg"
    )
    usability: Usability | None = PydField(
        default=None, description="what the data may be used for"
    )
    tags: list[Tag] = PydField(
        default_factory=list,
        max_length=50,
        description="labels for finding it; kept sorted, unique",
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        return sorted(set(v))


class DatasetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Left out means unchanged. A field the dataset always has takes no null (the schema says
    # so); the optional ones take null to clear them.
    description: str = PydField(default=None, max_length=5000)  # type: ignore[assignment]
    source_channel: str | None = PydField(default=None, max_length=100)
    product_standard: str | None = PydField(default=None, pattern=r"^(standard|non-standard)$")
    media_format: str | None = PydField(default=None, max_length=50)
    usability: Usability | None = None
    tags: list[Tag] = PydField(default=None, max_length=50)  # type: ignore[arg-type]


class DatasetPublic(BaseModel):
    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "9f1c2b7e5a0d4c8e9b3a6f1e2d4c5b6a",
                    "name": "bolts-line-3",
                    "description": "Photos of bolts and nuts from line 3",
                    "task_type": "detection",
                    "owner": "dana",
                    "team": "vision",
                    "shared_with": [],
                    "source_channel": "factory-camera",
                    "product_standard": "standard",
                    "media_format": "jpeg",
                    "usability": "training",
                    "tags": ["line-3", "metal"],
                    "status": "active",
                    "latest_version": 2,
                    "created_at": "2026-03-01T09:30:00Z",
                    "updated_at": "2026-03-02T10:00:00Z",
                    "deleted_at": None,
                    "purge_after": None,
                }
            ]
        },
    )

    id: str
    """The dataset's id (32 hex digits)."""
    name: str
    """Unique among live datasets."""
    description: str
    """Free text, as its owner wrote it."""
    task_type: str
    """classification, detection, segmentation or keypoints."""
    owner: str
    """The subject who created it."""
    team: str
    """The team that owns it."""
    shared_with: list[str]
    """Teams that may read it (and train on it), but not change it."""
    source_channel: str | None
    """Where the images come from."""
    product_standard: str | None
    """standard or non-standard."""
    media_format: str | None
    """The images' usual format."""
    usability: str | None
    """What the data may be used for."""
    tags: list[str]
    """Sorted, unique tags."""
    status: str
    """active, or archived (soft-deleted, restorable until purge_after)."""
    latest_version: int | None
    """The newest live version's number; null before the first commit."""
    created_at: datetime
    """When it was created (UTC)."""
    updated_at: datetime
    """When its metadata last changed (UTC)."""
    deleted_at: datetime | None
    """When it was archived; null while active."""
    purge_after: datetime | None
    """When an archived dataset's data may be purged."""


class VersionPublic(BaseModel):
    dataset_id: str
    version: int
    version_id: str
    parent_version: int | None
    manifest_key: str
    manifest_sha256: str
    item_count: int
    labelled_count: int
    total_bytes: int
    categories: list[Category]
    stats: dict[str, Any]
    lineage: dict[str, Any]
    has_quality_report: bool
    message: str
    created_by: str
    status: str
    created_at: datetime


class JobPublic(BaseModel):
    id: str
    kind: str
    dataset_id: str | None
    status: str
    progress: float = PydField(description="0..1")
    done: int
    total: int
    message: str
    result: dict[str, Any]
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
