"""REST API of the annotation service, under ``/v1``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydField
from sqlalchemy import func
from sqlmodel import col, select

from kiln_annotation.jobs import SELECTION
from kiln_annotation.label_schema import LabelSchema, validate_annotation
from kiln_annotation.lookahead import up_next
from kiln_annotation.models import (
    AuditEntry,
    LabelsCommit,
    PrelabelJob,
    Project,
    SelectionJob,
    Task,
    TaskStatus,
)
from kiln_annotation.performance import annotator_statistics, overlapping_annotations
from kiln_annotation.prelabel import acceptance
from kiln_annotation.workflow import (
    commit_labels,
    create_tasks,
    get_project,
    get_task,
    lease_next,
    review,
    submit,
)
from kiln_core.auth import Principal, require_roles
from kiln_core.db import INT32_MAX, MAX_PARAM_INT, new_id
from kiln_core.errors import Conflict, NotFound, ValidationFailed
from kiln_core.http import SessionDep, get_runtime
from kiln_core.manifest import read_manifest
from kiln_core.service import ServiceRuntime
from kiln_core.storage import ObjectNotFound
from kiln_core.teams import TEAM_NAME, team_for_new, visible_teams

router = APIRouter(prefix="/v1", tags=["annotation"])

Manager = Annotated[Principal, require_roles("data-engineer", "admin")]
Annotator = Annotated[Principal, require_roles("annotator", "admin")]
Reviewer = Annotated[Principal, require_roles("reviewer", "admin")]
Anyone = Annotated[
    Principal,
    require_roles("viewer", "annotator", "reviewer", "data-engineer", "ml-engineer", "admin"),
]


class ProjectCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "bolts boxes",
                    "dataset_id": "9f1c2b7e5a0d4c8e9b3a6f1e2d4c5b6a",
                    "label_schema": {
                        "kind": "boxes",
                        "labels": [{"name": "bolt"}, {"name": "nut"}],
                    },
                    "batch_size": 5,
                    "overlap": 2,
                    "review_levels": 1,
                    "lease_seconds": 900,
                }
            ]
        },
    )

    name: str = PydField(min_length=1, max_length=200, description="shown to annotators")
    team: str | None = PydField(
        default=None,
        max_length=100,
        pattern=TEAM_NAME,
        description="the team that owns it (and the dataset); by default the caller's only team",
    )
    dataset_id: str = PydField(
        min_length=1, max_length=32, description="the dataset whose versions become tasks"
    )
    # Its shape is in the document, so clients know it.
    label_schema: LabelSchema = PydField(
        description="the label kind and classes every submission is checked against"
    )
    auto_annotate: bool = PydField(
        default=True, description="make tasks from each new version of the dataset"
    )
    batch_size: int = PydField(default=1, ge=1, le=1000, description="items per task")
    overlap: int = PydField(
        default=1, ge=1, le=10, description="annotators per item (agreement needs 2 or more)"
    )
    review_levels: int = PydField(
        default=1, ge=0, le=2, description="reviews a submission needs (0: accepted at once)"
    )
    lease_seconds: int = PydField(
        default=900, ge=10, le=86400, description="how long a leased task stays with its annotator"
    )
    prelabel_endpoint: str | None = PydField(
        default=None,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="serving endpoint that suggests labels (pre-labelling)",
    )


class TaskPublic(BaseModel):
    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "3b6d0c1e9a7f4e2d8c5b1a0f9e8d7c6b",
                    "project_id": "5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b",
                    "dataset_version": 1,
                    "items": [
                        {
                            "item_id": "part-1.jpg",
                            "blob": "0c5ad3f2" + "0" * 56,
                            "width": 640,
                            "height": 480,
                            "media_type": "image/jpeg",
                        }
                    ],
                    "priority": 0,
                    "source": "dataset",
                    "status": "leased",
                    "assignee": "ann",
                    "lease_expires_at": "2026-03-01T10:15:00Z",
                    "review_level": 0,
                    "labels": None,
                    "prelabels": {
                        "part-1.jpg": [
                            {
                                "type": "box",
                                "label": "bolt",
                                "bbox": [40, 32, 120, 90],
                                "score": 0.91,
                            }
                        ]
                    },
                }
            ]
        },
    )

    id: str
    """The task's id."""
    project_id: str
    """The labelling project it belongs to."""
    dataset_version: int
    """The dataset version its items come from."""
    items: list[dict[str, Any]]
    """item_id, blob (SHA-256 of the image), width, height, media_type."""
    priority: int
    """Higher is leased first."""
    source: str
    """Why it exists: dataset, active-learning, manual or gold."""
    status: str
    """queued, leased, in_review, rework, accepted or committed."""
    assignee: str | None
    """Who holds or last held it."""
    lease_expires_at: datetime | None
    """When the current lease ends; another annotator may take it after that."""
    review_level: int
    """Reviews passed so far."""
    labels: dict[str, Any] | None
    """The latest submission: labels per item id; null before one."""
    prelabels: dict[str, Any] | None
    """Suggestions from the project's model per item id, each with its score."""
    up_next: list[dict[str, Any]] | None = None
    """On a lease: the items of the task most likely leased next (to fetch their images
    early); a hint, not a lease. Null elsewhere."""


def task_public(task: Task) -> TaskPublic:
    return TaskPublic.model_validate(task, from_attributes=True)


async def leased_public(runtime: ServiceRuntime, task: Task, annotator: str) -> TaskPublic:
    """A just-leased task, with the items its annotator will likely get next."""
    public = task_public(task)
    public.up_next = await up_next(runtime, task, annotator)
    return public


@router.post("/projects", status_code=201)
async def create_project(body: ProjectCreate, request: Request, who: Manager) -> dict[str, Any]:
    """A labelling project on a dataset, with the schema every annotation is checked against."""
    try:
        schema = LabelSchema.model_validate(body.label_schema)
    except ValueError as exc:
        raise ValidationFailed(f"label_schema: {exc}", field="label_schema") from None
    runtime = get_runtime(request)
    team = team_for_new(who, body.team, runtime.settings.default_team)
    async with runtime.db.transaction() as session:
        clash = (await session.exec(select(Project).where(Project.name == body.name))).first()
        if clash is not None and clash.team != team:
            # Names are unique across teams; another team's project is not named further.
            raise Conflict(f"the project name {body.name!r} is taken; choose another")
        if clash is not None:
            raise Conflict(f"a project named {body.name!r} exists", project_id=clash.id)
        project = Project(
            **body.model_dump(exclude={"label_schema", "team"}),
            team=team,
            label_schema=schema.model_dump(mode="json"),
            created_by=who.subject,
        )
        session.add(project)
    return project.model_dump(mode="json")


@router.get("/projects")
async def list_projects(
    session: SessionDep, who: Anyone, dataset_id: str | None = None
) -> list[dict[str, Any]]:
    query = select(Project).order_by(col(Project.created_at).desc())
    if dataset_id:
        query = query.where(Project.dataset_id == dataset_id)
    teams = visible_teams(who)
    if teams is not None:
        query = query.where(col(Project.team).in_(sorted(teams)))
    return [p.model_dump(mode="json") for p in (await session.exec(query)).all()]


@router.get("/projects/{project_id}")
async def read_project(project_id: str, session: SessionDep, _who: Anyone) -> dict[str, Any]:
    project = await get_project(session, project_id)
    counts = dict(
        (
            await session.exec(
                select(Task.status, func.count())
                .where(Task.project_id == project_id)
                .group_by(Task.status)
            )
        ).all()
    )
    return {**project.model_dump(mode="json"), "task_counts": counts}


def _own_manifest(dataset_id: str, manifest_key: str) -> None:
    """Only a manifest of the project's own dataset: never any other object in the store."""
    pattern = rf"datasets/{re.escape(dataset_id)}/manifests/[A-Za-z0-9_-]+\.jsonl"
    if not re.fullmatch(pattern, manifest_key):
        raise ValidationFailed(
            f"manifest_key must be a manifest of the project's dataset {dataset_id!r}",
            field="manifest_key",
        )


class TasksRequest(BaseModel):
    dataset_version: int = PydField(ge=1, le=INT32_MAX)
    manifest_key: str = PydField(min_length=1, max_length=500)
    priority: int = 0


@router.post("/projects/{project_id}/tasks", status_code=201)
async def request_tasks(
    project_id: str, body: TasksRequest, request: Request, _who: Manager
) -> dict[str, int]:
    """Create tasks on request for the unlabelled items of a dataset version's manifest."""
    runtime = get_runtime(request)
    async with runtime.db.session() as session:
        dataset_id = (await get_project(session, project_id)).dataset_id
    _own_manifest(dataset_id, body.manifest_key)
    try:
        items = [i for i in await read_manifest(runtime.store, body.manifest_key) if not i.labels]
    except ObjectNotFound:
        raise NotFound(f"no manifest {body.manifest_key!r}") from None
    except ValueError as exc:
        raise ValidationFailed(f"manifest_key: not a readable manifest ({exc})"[:500]) from None
    async with runtime.db.transaction() as session:
        project = await get_project(session, project_id)
        tasks = await create_tasks(
            session, project, body.dataset_version, items, priority=body.priority, source="manual"
        )
    return {"created": len(tasks)}


@router.get("/projects/{project_id}/tasks")
async def list_tasks(
    project_id: str,
    session: SessionDep,
    who: Anyone,
    status_: Annotated[str | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_PARAM_INT)] = 0,
) -> dict[str, Any]:
    """Tasks of a project; annotators see only their own."""
    query = select(Task).where(Task.project_id == project_id)
    if not who.has("reviewer", "data-engineer", "ml-engineer", "viewer"):
        query = query.where(Task.assignee == who.subject)
    if status_:
        query = query.where(Task.status == status_)
    total = int((await session.exec(select(func.count()).select_from(query.subquery()))).one())
    rows = (
        await session.exec(
            query.order_by(col(Task.priority).desc(), col(Task.created_at))
            .offset(offset)
            .limit(limit)
        )
    ).all()
    return {
        "items": [task_public(t) for t in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.post(
    "/projects/{project_id}/lease",
    response_model=TaskPublic,
    responses={204: {"description": "no task is waiting"}},
)
async def lease(project_id: str, request: Request, who: Annotator) -> Any:
    """Pull the next task (highest priority first) and hold it until the lease expires."""
    runtime = get_runtime(request)
    task = await lease_next(runtime, project_id, who.subject)
    if task is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return await leased_public(runtime, task, who.subject)


@router.get("/tasks/{task_id}", response_model=TaskPublic)
async def read_task(task_id: str, session: SessionDep, who: Anyone) -> TaskPublic:
    task = await get_task(session, task_id)
    if not who.has("reviewer", "data-engineer", "ml-engineer", "viewer") and (
        task.assignee != who.subject
    ):
        raise NotFound(f"no task {task_id!r}")  # annotators only see their own tasks
    return task_public(task)


class Submission(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "labels": {
                        "part-1.jpg": [{"type": "box", "label": "bolt", "bbox": [40, 32, 120, 90]}]
                    }
                }
            ]
        }
    )

    labels: dict[str, list[dict[str, Any]]] = PydField(
        description="labels per item id, in the unified manifest label format"
    )


@router.post("/tasks/{task_id}/submission", response_model=TaskPublic)
async def submit_task(
    task_id: str, body: Submission, request: Request, who: Annotator
) -> TaskPublic:
    """Submit labels; each is checked against the project's schema (problem+json says which
    field is wrong) and nothing changes if any is invalid."""
    return task_public(await submit(get_runtime(request), task_id, who.subject, body.labels))


class SubmittedAndNext(BaseModel):
    submitted: TaskPublic = PydField(description="the task just submitted, as stored")
    next: TaskPublic | None = PydField(
        description="the annotator's next task, already leased; null when nothing waits"
    )


@router.post("/tasks/{task_id}/submission-and-lease", response_model=SubmittedAndNext)
async def submit_and_lease_next(
    task_id: str, body: Submission, request: Request, who: Annotator
) -> SubmittedAndNext:
    """Submit labels like ``/submission``, then lease the next task of the same project: the
    labelling workspace's "submit and next" in one round trip. A refused submission leases
    nothing."""
    runtime = get_runtime(request)
    task = await submit(runtime, task_id, who.subject, body.labels)
    following = await lease_next(runtime, task.project_id, who.subject)
    return SubmittedAndNext(
        submitted=task_public(task),
        next=None if following is None else await leased_public(runtime, following, who.subject),
    )


class ReviewDecision(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"accept": False, "comment": "the second box is too loose"}]
        }
    )

    accept: bool = PydField(description="true: to the next review level or accepted; false: rework")
    comment: str = PydField(default="", max_length=5000, description="shown to the annotator")


@router.post("/tasks/{task_id}/review", response_model=TaskPublic)
async def review_task(
    task_id: str, body: ReviewDecision, request: Request, who: Reviewer
) -> TaskPublic:
    """Accept (to the next review level, or done) or reject back to the annotator."""
    return task_public(
        await review(get_runtime(request), task_id, who.subject, body.accept, body.comment)
    )


@router.get("/tasks/{task_id}/audit")
async def task_audit(task_id: str, session: SessionDep, who: Anyone) -> list[dict[str, Any]]:
    task = await get_task(session, task_id)
    if not who.has("reviewer", "data-engineer", "ml-engineer", "viewer") and (
        task.assignee != who.subject
    ):
        raise NotFound(f"no task {task_id!r}")  # as absent to them as the task itself
    rows = (
        await session.exec(
            select(AuditEntry).where(AuditEntry.task_id == task_id).order_by(col(AuditEntry.id))
        )
    ).all()
    return [r.model_dump(mode="json") for r in rows]


class CommitRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"dataset_version": 1}]})

    dataset_version: int = PydField(
        ge=1, le=INT32_MAX, description="the version whose accepted labels are committed"
    )


@router.post("/projects/{project_id}/commits", status_code=201)
async def commit_now(
    project_id: str, body: CommitRequest, request: Request, who: Manager
) -> dict[str, Any]:
    """Commit the accepted labels of a dataset version now (without waiting for the rest)."""
    commit = await commit_labels(
        get_runtime(request), project_id, body.dataset_version, actor=who.subject
    )
    if commit is None:
        raise Conflict("no accepted, uncommitted tasks for that dataset version")
    return commit.model_dump(mode="json")


@router.get("/projects/{project_id}/commits")
async def list_commits(project_id: str, session: SessionDep, _who: Anyone) -> list[dict[str, Any]]:
    rows = (
        await session.exec(
            select(LabelsCommit)
            .where(LabelsCommit.project_id == project_id)
            .order_by(col(LabelsCommit.created_at).desc())
        )
    ).all()
    return [r.model_dump(mode="json") for r in rows]


class PrelabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = PydField(
        default=None,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="serving endpoint to ask; defaults to the project's prelabel_endpoint",
    )


@router.post("/projects/{project_id}/prelabel-jobs", status_code=202)
async def start_prelabelling(
    project_id: str, body: PrelabelRequest, request: Request, who: Manager
) -> dict[str, Any]:
    """Ask a served model for suggestions on every waiting task without any (Celery job;
    follow it at ``/v1/prelabel-jobs/{id}``)."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        project = await get_project(session, project_id)
        endpoint = body.endpoint or project.prelabel_endpoint
        if not endpoint:
            raise ValidationFailed(
                "name an endpoint: the project has no prelabel_endpoint", field="endpoint"
            )
        job = PrelabelJob(project_id=project_id, endpoint=endpoint, created_by=who.subject)
        session.add(job)
    runtime.enqueue(job.id)
    return job.model_dump(mode="json")


@router.get("/prelabel-jobs/{job_id}")
async def get_prelabel_job(job_id: str, session: SessionDep, _who: Anyone) -> dict[str, Any]:
    job = await session.get(PrelabelJob, job_id)
    if job is None:
        raise NotFound(f"no pre-labelling job {job_id!r}")
    return job.model_dump(mode="json")


@router.get("/projects/{project_id}/prelabels")
async def prelabel_acceptance(
    project_id: str, request: Request, session: SessionDep, _who: Anyone
) -> dict[str, Any]:
    """How often annotators kept the model's suggestions (latest submission per task)."""
    await get_project(session, project_id)
    return await acceptance(get_runtime(request), project_id)


class SelectionRequest(BaseModel):
    """The next batch to label, ranked by a served model's uncertainty."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "dataset_version": 3,
                    "manifest_key": "datasets/3f2a/manifests/v3.jsonl",
                    "strategy": "margin",
                    "size": 50,
                    "diversity": True,
                }
            ]
        },
    )

    dataset_version: int = PydField(ge=1, le=INT32_MAX)
    manifest_key: str = PydField(
        min_length=1, max_length=500, description="the version's manifest (of this dataset)"
    )
    strategy: Literal["least-confidence", "margin", "entropy", "random"] = PydField(
        default="least-confidence",
        description="how an answer's uncertainty is scored; random is the baseline",
    )
    size: int = PydField(default=50, ge=1, le=10_000, description="items to make tasks for")
    diversity: bool = PydField(
        default=False, description="spread the batch over unlike images (no near-duplicates)"
    )
    seed: int = PydField(default=0, ge=0, le=INT32_MAX, description="random's draw")
    endpoint: str | None = PydField(
        default=None,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="serving endpoint that scores; defaults to the project's prelabel_endpoint",
    )


@router.post("/projects/{project_id}/selections", status_code=202)
async def start_selection(
    project_id: str, body: SelectionRequest, request: Request, who: Manager
) -> dict[str, Any]:
    """Rank the version's unlabelled, untasked items by the model's uncertainty and make the
    ``size`` most uncertain into high-priority tasks (Celery job; follow it at
    ``/v1/selections/{id}``)."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        project = await get_project(session, project_id)
        _own_manifest(project.dataset_id, body.manifest_key)
        endpoint = body.endpoint or project.prelabel_endpoint or ""
        if not endpoint and body.strategy != "random":
            raise ValidationFailed(
                "name an endpoint: the project has no prelabel_endpoint", field="endpoint"
            )
        job = SelectionJob(
            project_id=project_id,
            endpoint=endpoint,
            dataset_version=body.dataset_version,
            manifest_key=body.manifest_key,
            strategy=body.strategy,
            size=body.size,
            diversity=body.diversity,
            seed=body.seed,
            created_by=who.subject,
        )
        session.add(job)
    runtime.enqueue(job.id, SELECTION)
    return job.model_dump(mode="json")


@router.get("/selections/{job_id}")
async def get_selection(job_id: str, session: SessionDep, _who: Anyone) -> dict[str, Any]:
    """A selection job: its progress, and when done the chosen items with their uncertainty."""
    job = await session.get(SelectionJob, job_id)
    if job is None:
        raise NotFound(f"no selection job {job_id!r}")
    return job.model_dump(mode="json")


__all__ = ["router", "TaskStatus"]


@router.get("/projects/{project_id}/annotators")
async def annotators(
    project_id: str,
    session: SessionDep,
    _who: Annotated[Principal, require_roles("reviewer", "data-engineer", "admin")],
) -> list[dict[str, Any]]:
    """Per annotator: throughput, acceptance rate, agreement with overlapping annotators, and
    accuracy on hidden gold tasks."""
    await get_project(session, project_id)
    return await annotator_statistics(session, project_id)


class OverlapAnnotation(BaseModel):
    task_id: str
    annotator: str | None = PydField(description="who labelled this copy")
    status: str = PydField(description="the copy's task status (in_review, accepted, …)")
    labels: dict[str, Any] | None = PydField(description="labels per item id")


class OverlapGroup(BaseModel):
    group_id: str = PydField(description="the overlap group: copies of the same items")
    items: list[dict[str, Any]] = PydField(description="item_id, blob, width, height")
    agreement: float | None = PydField(
        description="mean pairwise agreement: 1/0 for classes, matched IoU for shapes"
    )
    annotations: list[OverlapAnnotation] = PydField(description="one per annotator")


@router.get("/projects/{project_id}/overlaps", response_model=list[OverlapGroup])
async def overlaps(
    project_id: str,
    session: SessionDep,
    _who: Annotated[Principal, require_roles("reviewer", "data-engineer", "admin")],
) -> list[dict[str, Any]]:
    """Items labelled by several annotators (project overlap > 1): their annotations side by
    side with their agreement, least agreement first."""
    await get_project(session, project_id)
    return await overlapping_annotations(session, project_id)


class GoldItem(BaseModel):
    item: dict[str, Any] = PydField(description="item_id, blob, width, height, media_type")
    labels: list[dict[str, Any]]


class GoldRequest(BaseModel):
    dataset_version: int = PydField(ge=1, le=INT32_MAX)
    items: list[GoldItem] = PydField(min_length=1, max_length=1000)


@router.post("/projects/{project_id}/gold", status_code=201)
async def add_gold_tasks(
    project_id: str, body: GoldRequest, request: Request, _who: Manager
) -> dict[str, int]:
    """Hidden gold tasks: annotators see ordinary tasks; their answers are scored against the
    known labels and never committed."""
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        project = await get_project(session, project_id)
        schema = LabelSchema.model_validate(project.label_schema)
        for gold in body.items:
            item = gold.item
            labels = validate_annotation(
                schema, gold.labels, int(item.get("width") or 0), int(item.get("height") or 0)
            )
            session.add(
                Task(
                    project_id=project_id,
                    group_id=new_id(),
                    dataset_version=body.dataset_version,
                    items=[item],
                    source="gold",
                    gold_labels={
                        item["item_id"]: [
                            x.model_dump(mode="json", exclude_none=True) for x in labels
                        ]
                    },
                )
            )
    return {"created": len(body.items)}
