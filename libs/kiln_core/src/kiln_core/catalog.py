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
    team: str = Field(default="default", description="the team that owns the dataset")
    shared_with: list[str] = Field(
        default_factory=list, description="teams that may read it and train on it"
    )
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
class TeamMembershipChanged(EventData):
    event_type: ClassVar[str] = "kiln.training.membership.changed"
    description: ClassVar[str] = (
        "A person's role in a team changed (role null: they left it); every service keeps a "
        "copy to check callers' teams locally."
    )

    team: str
    subject: str = Field(description="the person, as tokens name them ('sub')")
    role: str | None = Field(description="owner, maintainer, member, annotator or viewer")
    actor: str = Field(description="who changed it")


@register_event
class TeamUpdated(EventData):
    event_type: ClassVar[str] = "kiln.training.team.updated"
    description: ClassVar[str] = (
        "A team was created or its share, quotas or counted limits changed; services that "
        "enforce a limit keep a copy."
    )

    team: str
    weight: float
    quota: dict[str, float] = Field(description="capacity per resource kind (DRF)")
    limits: dict[str, int] = Field(
        description="counted caps: jobs, endpoints, model_instances (absent: none)"
    )
    actor: str = Field(description="who changed it")


@register_event
class DatasetShared(EventData):
    event_type: ClassVar[str] = "kiln.dataset.sharing.changed"
    description: ClassVar[str] = (
        "The teams a dataset is shared with (read-only) changed; the list is the whole new set."
    )

    dataset_id: str
    team: str = Field(description="the team that owns the dataset")
    shared_with: list[str]
    actor: str = Field(description="who changed it")


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
    team: str = Field(default="default", description="the project's team")
    dataset_id: str
    base_version: int
    manifest_key: str = Field(description="JSONL of {item_id, labels} records in the object store")
    item_count: int
    categories: list[dict[str, Any]] = Field(default_factory=list)


# --- models (shared by training, registry and serving) -----------------------------------------


class TensorSpec(BaseModel):
    """One named tensor of a model's signature; ``-1`` marks a variable dimension. The batch
    dimension is not listed."""

    name: str
    dtype: str = Field(description="Triton data type name: FP32, INT64, UINT8, BYTES, ...")
    shape: list[int]


class ModelSignature(BaseModel):
    """What a TorchScript model takes (after preprocessing) and returns (before
    postprocessing). Classifiers return one tensor of logits, one column per label."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Preprocessing(BaseModel):
    """How raw request inputs become the model's input tensor, so serving can do it exactly as
    training did.

    ``kind`` is ``image`` (decode, convert to ``mode``, resize to ``size`` [h, w], scale to
    0..1, normalise by ``mean``/``std`` per channel, CHW), ``tabular`` (float features,
    normalised by ``mean``/``std``) or ``text`` (lower-cased, split on whitespace, each token
    hashed into ``buckets`` with ``hash``; the model takes token ids and offsets)."""

    kind: str = Field(description="image | tabular | text")
    size: list[int] | None = None
    mode: str | None = Field(default=None, description="image colour mode: RGB or L")
    mean: list[float] | None = None
    std: list[float] | None = None
    buckets: int | None = None
    hash: str | None = Field(default=None, description="text token hash: crc32")


class ModelArtifact(BaseModel):
    """A trained model in the object store and everything needed to serve it."""

    uri: str
    key: str = Field(description="object-store key of the TorchScript file")
    sha256: str
    size_bytes: int
    format: str = Field(default="torchscript")
    signature: ModelSignature
    label_map: list[str] = Field(description="output column i is label_map[i]")
    preprocessing: Preprocessing


# --- training ----------------------------------------------------------------------------------


class TrainingJobEvent(EventData):
    job_id: str
    team: str
    template: str
    model_name: str = Field(description="registered model the result belongs to")
    parent_job_id: str | None = Field(default=None, description="the search job of a trial")


@register_event
class TrainingJobStarted(TrainingJobEvent):
    event_type: ClassVar[str] = "kiln.training.job.started"
    description: ClassVar[str] = "A training job got its resources and began (or resumed) running."

    attempt: int = 1
    resumed_from_step: int | None = None


@register_event
class TrainingJobProgress(TrainingJobEvent):
    event_type: ClassVar[str] = "kiln.training.job.progress"
    description: ClassVar[str] = (
        "Progress of a running job; sent at a bounded rate, the full history is in the API."
    )

    epoch: int
    step: int
    metrics: dict[str, float] = Field(
        description="loss, accuracy, lr, samples_per_s and any template metrics"
    )


@register_event
class TrainingJobSucceeded(TrainingJobEvent):
    event_type: ClassVar[str] = "kiln.training.job.succeeded"
    description: ClassVar[str] = (
        "A training job finished; carries its metrics and model artifact for the registry."
    )

    dataset_id: str
    dataset_version: int
    dataset_version_id: str | None = None
    dataset_team: str | None = Field(
        default=None, description="the dataset's team: another team's when it was shared"
    )
    evaluation_split: str = "val"
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float]
    artifact: ModelArtifact
    parent_model_version_id: str | None = Field(
        default=None, description="the registered version an incremental job warm-started from"
    )
    bad_case_count: int = 0


@register_event
class TrainingJobFailed(TrainingJobEvent):
    event_type: ClassVar[str] = "kiln.training.job.failed"
    description: ClassVar[str] = "A training job failed for good (retries used up)."

    reason: str
    attempts: int = 1


@register_event
class TrainingJobCancelled(TrainingJobEvent):
    event_type: ClassVar[str] = "kiln.training.job.cancelled"
    description: ClassVar[str] = "A training job was cancelled and its resources freed."

    cancelled_by: str | None = None


# --- registry ----------------------------------------------------------------------------------


class ModelVersionLineage(BaseModel):
    source: str = Field(description="training | import | compression")
    dataset_id: str | None = None
    dataset_version: int | None = None
    training_job_id: str | None = None
    parent_model_version_id: str | None = None


@register_event
class ModelVersionCreated(EventData):
    event_type: ClassVar[str] = "kiln.registry.model_version.created"
    description: ClassVar[str] = "A model version was registered."

    model_name: str
    version: int
    version_id: str
    artifact: ModelArtifact
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: ModelVersionLineage


@register_event
class ModelVersionPromoted(EventData):
    event_type: ClassVar[str] = "kiln.registry.model_version.promoted"
    description: ClassVar[str] = (
        "An alias (staging, canary, production or custom) now points at a model version; "
        "carries everything serving needs to deploy it."
    )

    model_name: str
    version: int
    version_id: str
    alias: str
    previous_version: int | None = None
    previous_version_id: str | None = None
    artifact: ModelArtifact
    metrics: dict[str, float] = Field(default_factory=dict)
    dataset_id: str | None = Field(default=None, description="the data the model learned from")
    promoted_by: str | None = None


# --- serving -----------------------------------------------------------------------------------


class DeploymentEvent(EventData):
    endpoint: str
    model_name: str
    version: int
    version_id: str
    triton_model: str = Field(description="the model's name inside Triton")


@register_event
class DeploymentReady(DeploymentEvent):
    event_type: ClassVar[str] = "kiln.serving.deployment.ready"
    description: ClassVar[str] = "A model version is loaded, warmed up and may take traffic."

    load_seconds: float | None = None


@register_event
class DeploymentFailed(DeploymentEvent):
    event_type: ClassVar[str] = "kiln.serving.deployment.failed"
    description: ClassVar[str] = (
        "A model version could not be deployed; the version serving before is untouched."
    )

    reason: str


@register_event
class TrafficShifted(DeploymentEvent):
    event_type: ClassVar[str] = "kiln.serving.traffic.shifted"
    description: ClassVar[str] = (
        "An endpoint's traffic split changed: a canary step, a promotion or a rollback."
    )

    strategy: str = Field(description="direct | canary | shadow | ab")
    weights: dict[str, float] = Field(description="traffic share by model version id")
    reason: str = Field(description="step | promoted | rolled_back | replaced")
    analysis: dict[str, Any] = Field(default_factory=dict)


@register_event
class PredictionFlagged(EventData):
    event_type: ClassVar[str] = "kiln.serving.prediction.flagged"
    description: ClassVar[str] = (
        "A prediction under its endpoint's confidence threshold; the input is stored for "
        "labelling (active learning)."
    )

    prediction_id: str
    endpoint: str
    model_name: str
    version: int
    version_id: str
    dataset_id: str | None = None
    input_key: str = Field(description="object-store key of the request input")
    input_uri: str
    content_type: str
    predicted_label: str | None = None
    confidence: float
    threshold: float
    predicted_boxes: list[dict[str, Any]] | None = Field(
        default=None,
        description="a detector's boxes for the input: {label, score, bbox [x, y, w, h]}",
    )


@register_event
class PredictionSampled(EventData):
    event_type: ClassVar[str] = "kiln.serving.prediction.sampled"
    description: ClassVar[str] = "A sampled prediction, for monitoring and offline analysis."

    prediction_id: str
    endpoint: str
    model_name: str
    version: int
    version_id: str
    predicted_label: str | None = None
    confidence: float | None = None
    latency_ms: float
