"""Every event type Kiln publishes. Importing this module registers them all."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from kiln_core.events import SERVICES, EventData, register_event


class PingSent(EventData):
    """A liveness ping one service sends to all others; proves the wiring end to end."""

    ping_id: str
    origin: str
    message: str = ""
    sent_at: datetime


def _ping_type(service: str) -> type[PingSent]:
    cls = type(
        f"{service.capitalize()}PingSent",
        (PingSent,),
        {
            "event_type": f"kiln.{service}.ping.sent",
            "description": f"The {service} service sent a ping to every other service.",
            "__module__": __name__,
        },
    )
    return register_event(cls)


PING_EVENTS: dict[str, type[PingSent]] = {service: _ping_type(service) for service in SERVICES}


# --- dataset -----------------------------------------------------------------------------------


class VersionLineage(BaseModel):
    """Where a dataset version came from."""

    parent_version: int | None = None
    parent_version_id: str | None = None
    source: str = Field(description="upload | import | augmentation | labels | split | ...")
    import_id: str | None = None
    recipe: dict[str, Any] | None = None
    seed: int | None = None
    labels_commit_id: str | None = None


@register_event
class DatasetVersionCreated(EventData):
    event_type: ClassVar[str] = "kiln.dataset.version.created"
    description: ClassVar[str] = "A new immutable dataset version exists, with its manifest."

    dataset_id: str
    dataset_name: str
    task_type: str
    version: int
    version_id: str
    manifest_key: str = Field(description="object-store key of the JSONL manifest")
    manifest_uri: str
    manifest_sha256: str
    item_count: int
    labelled_count: int
    labelled: bool
    labels: list[str] = Field(default_factory=list)
    lineage: VersionLineage


@register_event
class DatasetVersionDeleted(EventData):
    event_type: ClassVar[str] = "kiln.dataset.version.deleted"
    description: ClassVar[str] = "A dataset version was deleted (soft); its blobs may be purged."

    dataset_id: str
    version: int
    version_id: str
    reason: str = ""


# --- annotation --------------------------------------------------------------------------------


@register_event
class LabelsCommitted(EventData):
    event_type: ClassVar[str] = "kiln.annotation.labels.committed"
    description: ClassVar[str] = (
        "Labels for items of a dataset version were accepted; "
        "the manifest holds item ids and labels."
    )

    commit_id: str
    project_id: str
    dataset_id: str
    base_version: int
    manifest_key: str = Field(description="JSONL of {item_id, labels} records in the object store")
    item_count: int
    categories: list[dict[str, Any]] = Field(default_factory=list)
