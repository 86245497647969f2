"""REST API of the training service, under ``/v1``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.auth import Admin, Principal, Reader, require_roles
from kiln_core.catalog import TeamMembershipChanged, TeamUpdated
from kiln_core.db import utcnow
from kiln_core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from kiln_core.http import Limit, Offset, SessionDep, get_runtime
from kiln_core.teams import (
    MANAGERS,
    Membership,
    TeamOperation,
    TeamOperationPublic,
    TeamRole,
    apply_membership,
    record_operation,
    team_for_new,
    visible_teams,
    within,
)
from kiln_training import lifecycle, search
from kiln_training.executor import queue_view
from kiln_training.models import (
    TERMINAL,
    BadCase,
    BadCasePublic,
    JobCreate,
    JobKind,
    JobPublic,
    MetricPoint,
    MetricPointPublic,
    Page,
    SearchCreate,
    Team,
    TeamCreate,
    TeamIn,
    TeamPublic,
    TrainingJob,
    Trigger,
    TriggerCreate,
    TriggerPublic,
    TriggerUpdate,
)
from kiln_training.templates import TEMPLATES, get_template
from kiln_training.triggers import trigger_team

router = APIRouter(prefix="/v1", tags=["training"])

SUBMITTERS = ("ml-engineer", "admin")
Submitter = Annotated[Principal, require_roles(*SUBMITTERS)]
StatusFilter = Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]
# How often the event stream looks for new progress.
STREAM_POLL_S = 0.5


def job_public(job: TrainingJob) -> JobPublic:
    artifact = None
    if job.artifact is not None:
        artifact = {k: v for k, v in job.artifact.items() if k != "state_dict_key"}
    return JobPublic(**job.model_dump(exclude={"artifact"}), artifact=artifact)


def _plain(value: Any) -> Any:
    """A template catalogue entry as JSON-ready data, whatever it is made of."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# --- templates ----------------------------------------------------------------------------------


@router.get("/templates", tags=["templates"])
async def list_templates(_who: Reader) -> dict[str, Any]:
    """The template catalogue: each template's task and its hyperparameters (types, ranges,
    defaults), which every submitted job is validated against."""
    entries = TEMPLATES.values() if isinstance(TEMPLATES, dict) else TEMPLATES
    return {"items": [_plain(t) for t in entries]}


@router.get("/templates/{name}", tags=["templates"])
async def get_template_entry(name: str, _who: Reader) -> dict[str, Any]:
    """One template of the catalogue."""
    return _plain(get_template(name))  # type: ignore[no-any-return]


# --- teams --------------------------------------------------------------------------------------


def _quotas(team: Team) -> dict[str, Any]:
    return {"weight": team.weight, "quota": dict(team.quota), "limits": dict(team.limits or {})}


async def _announce(request: Request, session: AsyncSession, team: Team, who: Principal) -> None:
    await get_runtime(request).emit(
        session,
        TeamUpdated(actor=who.subject, team=team.name, **_quotas(team)),
        subject=team.name,
    )


def _team_public(team: Team) -> TeamPublic:
    return TeamPublic(**team.model_dump())


@router.post(
    "/teams", status_code=status.HTTP_201_CREATED, response_model=TeamPublic, tags=["teams"]
)
async def create_team(body: TeamCreate, request: Request, who: Admin) -> TeamPublic:
    """Create a team with its scheduling weight, per-resource quota and counted limits."""
    async with get_runtime(request).db.transaction() as session:
        if await session.get(Team, body.name) is not None:
            raise Conflict(f"team {body.name} already exists")
        team = Team(
            name=body.name,
            weight=body.weight,
            quota={str(k): v for k, v in body.quota.items()},
            limits={str(k): v for k, v in body.limits.items()},
        )
        session.add(team)
        record_operation(
            session, who.subject, "team.created", team.name, team.name, **_quotas(team)
        )
        await _announce(request, session, team, who)
    return _team_public(team)


@router.get("/teams", response_model=list[TeamPublic], tags=["teams"])
async def list_teams(session: SessionDep, who: Reader) -> list[TeamPublic]:
    """The caller's teams (every team, for admins), by name."""
    query = select(Team).order_by(col(Team.name))
    mine = visible_teams(who)
    if mine is not None:
        query = query.where(col(Team.name).in_(sorted(mine)))
    return [_team_public(t) for t in (await session.exec(query)).all()]


@router.get("/teams/{name}", response_model=TeamPublic, tags=["teams"])
async def get_team(name: str, session: SessionDep, _who: Reader) -> TeamPublic:
    team = await session.get(Team, name)
    if team is None:
        raise NotFound(f"team {name} does not exist")
    return _team_public(team)


@router.get("/teams/{name}/operations", response_model=list[TeamOperationPublic], tags=["teams"])
async def team_operations(
    name: str, session: SessionDep, _who: Reader
) -> list[TeamOperationPublic]:
    """The team's append-only log of quota and limit changes, oldest first."""
    rows = await session.exec(
        select(TeamOperation).where(TeamOperation.team == name).order_by(col(TeamOperation.id))
    )
    return [TeamOperationPublic.model_validate(r, from_attributes=True) for r in rows.all()]


# --- members: Kiln's own membership, announced to every service ------------------------------


class MemberIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "member"}]})

    role: TeamRole = Field(description="owner, maintainer, member, annotator or viewer")


class MemberPublic(BaseModel):
    team: str = Field(description="the team")
    subject: str = Field(description="the person, as tokens name them ('sub')")
    role: str = Field(description="their role in the team")
    updated_at: datetime = Field(description="when it last changed (UTC)")


Subject = Annotated[str, PathParam(min_length=1, max_length=200, description="a person's 'sub'")]


def _may_manage(who: Principal, team: str, role: str | None) -> None:
    """Owners and maintainers change their team's members; only owners make owners."""
    mine = who.teams.get(team)
    if who.is_admin or (mine in MANAGERS and (role != "owner" or mine == "owner")):
        return
    raise Forbidden(
        f"only team {team}'s owners (and maintainers, but for owners) change its members"
    )


async def _set_member(
    request: Request, team: str, subject: str, role: str | None, who: Principal
) -> Membership | None:
    runtime = get_runtime(request)
    _may_manage(who, team, role)
    async with runtime.db.transaction() as session:
        if await session.get(Team, team) is None:
            raise NotFound(f"team {team} does not exist")
        before = await session.get(Membership, (team, subject))
        if before is not None and before.role == "owner" and who.teams.get(team) != "owner":
            _may_manage(who, team, "owner")  # demoting or removing an owner takes an owner
        await apply_membership(session, team, subject, role)
        record_operation(
            session,
            who.subject,
            "member.set" if role else "member.removed",
            team,
            subject,
            role=role,
            before=None if before is None else before.role,
        )
        await runtime.emit(
            session,
            TeamMembershipChanged(team=team, subject=subject, role=role, actor=who.subject),
            subject=f"{team}/{subject}",
        )
    async with runtime.db.session() as session:
        return await session.get(Membership, (team, subject))


@router.get("/teams/{name}/members", response_model=list[MemberPublic], tags=["teams"])
async def list_members(name: str, session: SessionDep, _who: Reader) -> list[MemberPublic]:
    """The team's members and their roles, by subject."""
    rows = await session.exec(
        select(Membership).where(Membership.team == name).order_by(col(Membership.subject))
    )
    return [MemberPublic.model_validate(m, from_attributes=True) for m in rows.all()]


@router.put("/teams/{name}/members/{subject}", response_model=MemberPublic, tags=["teams"])
async def set_member(
    name: str, subject: Subject, body: MemberIn, request: Request, who: Reader
) -> MemberPublic:
    """Add a person to the team or change their role; every service hears of it."""
    member = await _set_member(request, name, subject, body.role, who)
    return MemberPublic.model_validate(member, from_attributes=True)


@router.delete("/teams/{name}/members/{subject}", status_code=204, tags=["teams"])
async def remove_member(name: str, subject: Subject, request: Request, who: Reader) -> Response:
    """Take a person out of the team (a no-op for someone not in it)."""
    await _set_member(request, name, subject, None, who)
    return Response(status_code=204)


@router.put("/teams/{name}", response_model=TeamPublic, tags=["teams"])
async def update_team(name: str, body: TeamIn, request: Request, who: Admin) -> TeamPublic:
    """Replace a team's weight and quota; the next scheduling round uses them."""
    async with get_runtime(request).db.transaction() as session:
        team = await session.get(Team, name)
        if team is None:
            raise NotFound(f"team {name} does not exist")
        team.weight, team.quota, team.limits, team.updated_at = (
            body.weight,
            {str(k): v for k, v in body.quota.items()},
            {str(k): v for k, v in body.limits.items()},
            utcnow(),
        )
        session.add(team)
        record_operation(session, who.subject, "quota.set", team.name, team.name, **_quotas(team))
        await _announce(request, session, team, who)
    return _team_public(team)


@router.delete("/teams/{name}", status_code=204, tags=["teams"])
async def delete_team(name: str, request: Request, who: Admin) -> Response:
    """Delete a team that has no queued, running or paused job."""
    async with get_runtime(request).db.transaction() as session:
        team = await session.get(Team, name)
        if team is None:
            raise NotFound(f"team {name} does not exist")
        active = (
            await session.exec(
                select(func.count())
                .select_from(TrainingJob)
                .where(
                    TrainingJob.team == name,
                    col(TrainingJob.status).not_in(list(TERMINAL)),
                )
            )
        ).one()
        if active:
            raise Conflict(f"team {name} has {active} unfinished jobs")
        await session.delete(team)
        record_operation(session, who.subject, "team.deleted", name, name)
    return Response(status_code=204)


# --- jobs ---------------------------------------------------------------------------------------


async def _require_team(session: AsyncSession, name: str, who: Principal) -> Team:
    """The team a job is submitted under: the caller must belong to it (a job under another
    team's name would spend that team's share), and it must exist."""
    team_for_new(who, name, name)
    team = await session.get(Team, name, with_for_update=True)  # SQLite ignores it
    if team is None:
        raise ValidationFailed(f"team {name} does not exist; an admin creates it first")
    return team


async def _within_limit(session: AsyncSession, team: Team, adding: int = 1) -> None:
    """Refuse a submission past the team's cap on unfinished jobs. The team's row is locked
    (on PostgreSQL) by :func:`_require_team`, so concurrent submissions count one by one."""
    if "jobs" not in (team.limits or {}):
        return
    usage = (
        await session.exec(
            select(func.count()).where(
                TrainingJob.team == team.name,
                col(TrainingJob.status).not_in(list(TERMINAL)),
                TrainingJob.kind == JobKind.train,
            )
        )
    ).one()
    within(team.limits, "jobs", team.name, usage, adding)


@router.post(
    "/jobs",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    tags=["jobs"],
    responses={409: {"description": "quota-exceeded: the team's limit of unfinished jobs"}},
)
async def submit_job(body: JobCreate, request: Request, who: Submitter) -> JobPublic:
    """Submit a training job under one of the caller's teams: validated against its template,
    then queued for the scheduler."""
    async with get_runtime(request).db.transaction() as session:
        team = await _require_team(session, body.team, who)
        await lifecycle.check_dataset_use(session, body.team, body.dataset, anyone=who.is_admin)
        await _within_limit(session, team)
        job = await lifecycle.new_job(session, body, created_by=who.subject)
    return job_public(job)


@router.get("/jobs", response_model=Page[JobPublic], tags=["jobs"])
async def list_jobs(
    session: SessionDep,
    who: Reader,
    limit: Limit = 50,
    offset: Offset = 0,
    status_: Annotated[StatusFilter | None, Query(alias="status")] = None,
    team: str | None = None,
    kind: Literal["train", "search"] | None = None,
    parent_id: str | None = None,
) -> Page[JobPublic]:
    """Jobs, newest first, filtered by status, team, kind or search parent."""
    query = select(TrainingJob)
    for column, value in (
        (TrainingJob.status, status_),
        (TrainingJob.team, team),
        (TrainingJob.kind, kind),
        (TrainingJob.parent_id, parent_id),
    ):
        if value is not None:
            query = query.where(column == value)
    teams = visible_teams(who)
    if teams is not None:
        query = query.where(col(TrainingJob.team).in_(sorted(teams)))
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = (
        await session.exec(
            query.order_by(col(TrainingJob.submitted_at).desc(), col(TrainingJob.id))
            .offset(offset)
            .limit(limit)
        )
    ).all()
    return Page(items=[job_public(j) for j in rows], total=total, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobPublic, tags=["jobs"])
async def get_job(job_id: str, session: SessionDep, _who: Reader) -> JobPublic:
    return job_public(await lifecycle.get_job(session, job_id))


async def _transition(request: Request, job_id: str, action: str, who: Principal) -> JobPublic:
    runtime = get_runtime(request)
    async with runtime.db.transaction() as session:
        job = await lifecycle.get_job(session, job_id, for_update=True)
        if action == "pause":
            await lifecycle.pause(session, job)
        elif action == "resume":
            await lifecycle.resume(session, job)
        else:
            await lifecycle.cancel(session, runtime, job, who.subject)
    return job_public(job)


@router.post("/jobs/{job_id}/pause", response_model=JobPublic, tags=["jobs"])
async def pause_job(job_id: str, request: Request, who: Submitter) -> JobPublic:
    """Pause: a queued job at once; a running one writes a checkpoint, frees its resources
    and then shows ``paused`` (``requested: pause`` until then)."""
    return await _transition(request, job_id, "pause", who)


@router.post("/jobs/{job_id}/resume", response_model=JobPublic, tags=["jobs"])
async def resume_job(job_id: str, request: Request, who: Submitter) -> JobPublic:
    """Resume a paused job: it queues again and continues from its checkpoint."""
    return await _transition(request, job_id, "resume", who)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic, tags=["jobs"])
async def cancel_job(job_id: str, request: Request, who: Submitter) -> JobPublic:
    """Cancel: at once unless running; a running job stops within seconds and frees its
    resources. Cancelling a search cancels its trials."""
    return await _transition(request, job_id, "cancel", who)


@router.get("/jobs/{job_id}/metrics", response_model=list[MetricPointPublic], tags=["jobs"])
async def job_metrics(
    job_id: str,
    session: SessionDep,
    _who: Reader,
    kind: Literal["step", "epoch"] | None = None,
) -> list[MetricPointPublic]:
    """The job's metrics history: sampled steps and every epoch, in order."""
    await lifecycle.get_job(session, job_id)
    query = select(MetricPoint).where(MetricPoint.job_id == job_id)
    if kind is not None:
        query = query.where(MetricPoint.kind == kind)
    rows = (await session.exec(query.order_by(col(MetricPoint.id)))).all()
    return [MetricPointPublic(**r.model_dump()) for r in rows]


@router.get("/jobs/{job_id}/evaluation", tags=["jobs"])
async def job_evaluation(job_id: str, session: SessionDep, _who: Reader) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class metrics and the confusion matrix."""
    job = await lifecycle.get_job(session, job_id)
    if job.evaluation is None:
        raise NotFound(f"job {job_id} has no evaluation ({job.status})")
    return job.evaluation


@router.get("/jobs/{job_id}/bad-cases", response_model=Page[BadCasePublic], tags=["jobs"])
async def job_bad_cases(
    job_id: str, session: SessionDep, _who: Reader, limit: Limit = 100, offset: Offset = 0
) -> Page[BadCasePublic]:
    """Misclassified evaluation items by dataset item id, least confident first."""
    await lifecycle.get_job(session, job_id)
    query = select(BadCase).where(BadCase.job_id == job_id)
    total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
    rows = (
        await session.exec(
            query.order_by(col(BadCase.confidence).desc(), col(BadCase.item_id))
            .offset(offset)
            .limit(limit)
        )
    ).all()
    return Page(
        items=[BadCasePublic(**r.model_dump(exclude={"job_id"})) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/jobs/{job_id}/artifact", tags=["jobs"])
async def job_artifact(job_id: str, session: SessionDep, _who: Reader) -> dict[str, Any]:
    """The trained model: TorchScript in the object store with its signature and metadata."""
    job = await lifecycle.get_job(session, job_id)
    if job.artifact is None:
        raise NotFound(f"job {job_id} has no artifact ({job.status})")
    return job_public(job).artifact or {}


@router.get(
    "/jobs/{job_id}/events",
    tags=["jobs"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(job_id: str, request: Request, _who: Reader) -> StreamingResponse:
    """Server-sent events: ``progress`` for every stored metric point, ``status`` on every
    change of state, until the job ends (then one final ``status``)."""
    runtime = get_runtime(request)
    async with runtime.db.session() as session:
        await lifecycle.get_job(session, job_id)

    # A reconnecting client sends the last id it saw: resume after it instead of replaying.
    resume_from = request.headers.get("last-event-id", "")
    first_point = int(resume_from) if resume_from.isdigit() else 0

    async def stream() -> AsyncIterator[bytes]:
        last_point = first_point
        last_status = None
        while True:
            async with runtime.db.session() as session:
                job = await lifecycle.get_job(session, job_id)
                points = (
                    await session.exec(
                        select(MetricPoint)
                        .where(MetricPoint.job_id == job_id, col(MetricPoint.id) > last_point)
                        .order_by(col(MetricPoint.id))
                    )
                ).all()
            for point in points:
                last_point = point.id or last_point
                body = MetricPointPublic(**point.model_dump()).model_dump_json()
                yield f"event: progress\nid: {last_point}\ndata: {body}\n\n".encode()
            if job.status != last_status:
                last_status = job.status
                body = json.dumps(
                    {
                        "status": job.status,
                        "step": job.step,
                        "epoch": job.epoch,
                        "metrics": job.metrics,
                    }
                )
                yield f"event: status\ndata: {body}\n\n".encode()
            if job.status in TERMINAL:
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(STREAM_POLL_S)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


# --- searches -----------------------------------------------------------------------------------


@router.post(
    "/searches", status_code=status.HTTP_201_CREATED, response_model=JobPublic, tags=["search"]
)
async def create_search(body: SearchCreate, request: Request, who: Submitter) -> JobPublic:
    """Start a grid or random hyperparameter search: a parent job whose trials queue like any
    job; the parent ranks them by the target metric and names the best."""
    async with get_runtime(request).db.transaction() as session:
        await _require_team(session, body.base.team, who)
        await lifecycle.check_dataset_use(
            session, body.base.team, body.base.dataset, anyone=who.is_admin
        )
        parent, _trials = await search.create_search(session, body, who.subject)
    return job_public(parent)


@router.get("/searches/{job_id}", tags=["search"])
async def get_search(job_id: str, session: SessionDep, _who: Reader) -> dict[str, Any]:
    """A search with its trials and ranking."""
    job = await lifecycle.get_job(session, job_id)
    if job.kind != JobKind.search:
        raise NotFound(f"job {job_id} is not a search")
    trials = (
        await session.exec(
            select(TrainingJob)
            .where(TrainingJob.parent_id == job_id)
            .order_by(col(TrainingJob.submitted_at), col(TrainingJob.id))
        )
    ).all()
    return {
        "job": job_public(job).model_dump(mode="json"),
        "trials": [job_public(t).model_dump(mode="json") for t in trials],
    }


# --- triggers -----------------------------------------------------------------------------------


def _trigger_public(trigger: Trigger) -> TriggerPublic:
    return TriggerPublic(**trigger.model_dump())


@router.post(
    "/triggers",
    status_code=status.HTTP_201_CREATED,
    response_model=TriggerPublic,
    tags=["triggers"],
)
async def create_trigger(body: TriggerCreate, request: Request, who: Submitter) -> TriggerPublic:
    """A rule: when a labelled version of ``dataset_id`` is created, submit ``job`` on it."""
    lifecycle.checked_params(body.job.template, body.job.params)
    async with get_runtime(request).db.transaction() as session:
        await _require_team(session, body.job.team, who)
        trigger = Trigger(
            name=body.name,
            dataset_id=body.dataset_id,
            enabled=body.enabled,
            job={
                "spec": body.job.model_dump(mode="json"),
                "train_split": body.train_split,
                "eval_split": body.eval_split,
                # A platform admin's rule may train on any team's dataset; a member's only on
                # the team's own and those shared with it (checked when it fires).
                "any_dataset": who.is_admin,
            },
            created_by=who.subject,
        )
        session.add(trigger)
    return _trigger_public(trigger)


@router.get("/triggers", response_model=list[TriggerPublic], tags=["triggers"])
async def list_triggers(
    session: SessionDep, who: Reader, dataset_id: str | None = None
) -> list[TriggerPublic]:
    query = select(Trigger)
    if dataset_id is not None:
        query = query.where(Trigger.dataset_id == dataset_id)
    rows = (await session.exec(query.order_by(col(Trigger.created_at), col(Trigger.id)))).all()
    teams = visible_teams(who)
    return [_trigger_public(t) for t in rows if teams is None or trigger_team(t) in teams]


async def _get_trigger(session: AsyncSession, trigger_id: str) -> Trigger:
    trigger = await session.get(Trigger, trigger_id)
    if trigger is None:
        raise NotFound(f"trigger {trigger_id} does not exist")
    return trigger


@router.get("/triggers/{trigger_id}", response_model=TriggerPublic, tags=["triggers"])
async def get_trigger(trigger_id: str, session: SessionDep, _who: Reader) -> TriggerPublic:
    return _trigger_public(await _get_trigger(session, trigger_id))


@router.patch("/triggers/{trigger_id}", response_model=TriggerPublic, tags=["triggers"])
async def update_trigger(
    trigger_id: str, body: TriggerUpdate, request: Request, who: Submitter
) -> TriggerPublic:
    """Rename, enable or disable a rule, or replace the job it submits."""
    if body.job is not None:
        lifecycle.checked_params(body.job.template, body.job.params)
    async with get_runtime(request).db.transaction() as session:
        trigger = await _get_trigger(session, trigger_id)
        if body.name is not None:
            trigger.name = body.name
        if body.enabled is not None:
            trigger.enabled = body.enabled
        if body.job is not None:
            await _require_team(session, body.job.team, who)
            trigger.job = {**trigger.job, "spec": body.job.model_dump(mode="json")}
        trigger.updated_at = utcnow()
        session.add(trigger)
    return _trigger_public(trigger)


@router.delete("/triggers/{trigger_id}", status_code=204, tags=["triggers"])
async def delete_trigger(trigger_id: str, request: Request, _who: Submitter) -> Response:
    async with get_runtime(request).db.transaction() as session:
        await session.delete(await _get_trigger(session, trigger_id))
    return Response(status_code=204)


# --- queue --------------------------------------------------------------------------------------


@router.get("/queue", tags=["queue"])
async def get_queue(session: SessionDep, who: Reader) -> dict[str, Any]:
    """Per pool: capacity advertised by live workers, running jobs, waiting jobs in line with
    the reason each waits (quota, fair share, capacity, priority, reservation) and each team's
    dominant share. Other teams' jobs are counted, not shown, and their names not given."""
    view = await queue_view(session, lifecycle.training_settings())
    teams = visible_teams(who)
    if teams is None:
        return view
    return {**view, "pools": {p: _own_view(pool, teams) for p, pool in view["pools"].items()}}


def _own_view(pool: dict[str, Any], teams: frozenset[str]) -> dict[str, Any]:
    mine = [w for w in pool["waiting"] if w["team"] in teams]
    for w in mine:
        if w.get("blocked_by_team") not in (None, *teams):
            w["blocked_by_team"] = "another team"
    running = [r for r in pool["running"] if r["team"] in teams]
    return {
        **pool,
        "running": running,
        "waiting": mine,
        "others_running": len(pool["running"]) - len(running),
        "others_waiting": len(pool["waiting"]) - len(mine),
        "dominant_shares": {t: s for t, s in pool["dominant_shares"].items() if t in teams},
    }
