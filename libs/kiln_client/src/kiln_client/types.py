"""The shapes of what Kiln answers, for type checkers and readers. Answers are plain dicts
(JSON as sent), so fields a newer Kiln adds are there too; these name the ones that matter."""

from __future__ import annotations

from typing import Any, TypedDict


class Dataset(TypedDict, total=False):
    id: str
    name: str
    description: str
    task_type: str
    status: str
    latest_version: int | None
    tags: list[str]


class DatasetVersion(TypedDict, total=False):
    dataset_id: str
    version: int
    version_id: str
    parent_version: int | None
    item_count: int
    labelled_count: int
    total_bytes: int
    categories: list[dict[str, Any]]
    stats: dict[str, Any]
    lineage: dict[str, Any]
    message: str
    status: str


class UploadReport(TypedDict):
    version: DatasetVersion
    files: int
    sent: int  # files whose bytes went over the wire
    skipped: int  # files whose bytes Kiln already had (matched by SHA-256)
    rejected: list[dict[str, Any]]


class Job(TypedDict, total=False):
    """Long work of any service (an import, a training run, a compression)."""

    id: str
    kind: str
    status: str
    progress: float
    message: str
    result: dict[str, Any]
    error: dict[str, Any] | None
    # training jobs
    model_name: str
    template: str
    params: dict[str, Any]
    step: int
    epoch: int
    metrics: dict[str, float]
    artifact: dict[str, Any] | None
    dataset_id: str
    dataset_version: int


class Project(TypedDict, total=False):
    id: str
    name: str
    dataset_id: str
    task_counts: dict[str, int]


class Task(TypedDict, total=False):
    id: str
    project_id: str
    status: str
    items: list[dict[str, Any]]
    labels: dict[str, list[dict[str, Any]]] | None


class RegisteredModel(TypedDict, total=False):
    name: str
    description: str
    latest_version: int | None


class ModelVersion(TypedDict, total=False):
    name: str
    version: int
    version_id: str
    status: str
    metrics: dict[str, Any]
    artifact_uri: str
    format: str
    aliases: list[str]


class Endpoint(TypedDict, total=False):
    name: str
    model_name: str
    alias: str
    strategy: str
    stable: dict[str, Any] | None
    candidate: dict[str, Any] | None
    deployments: list[dict[str, Any]]


class Prediction(TypedDict, total=False):
    label: str
    confidence: float
    probabilities: dict[str, float]


class PredictAnswer(TypedDict, total=False):
    predictions: list[Prediction]
    version: int
    version_id: str
