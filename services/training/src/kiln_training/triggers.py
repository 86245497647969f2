"""Automatic retraining: rules "when a labelled version of dataset X is created, train T with P".

A rule fires once per dataset version: the job it creates carries the rule's id and the
version's id under a unique index, so a redelivered event, or a replay, creates nothing new.
"""

from __future__ import annotations

import logging

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.errors import KilnError
from kiln_training.lifecycle import new_job
from kiln_training.models import (
    DatasetRef,
    JobCreate,
    JobSpecIn,
    KnownVersion,
    TrainingJob,
    Trigger,
)

log = logging.getLogger(__name__)


def trigger_job(trigger: Trigger, version: KnownVersion) -> JobCreate:
    """The job a rule submits for ``version``."""
    spec = JobSpecIn.model_validate(trigger.job["spec"])
    return JobCreate(
        **spec.model_dump(),
        dataset=DatasetRef(
            dataset_id=version.dataset_id,
            version_id=version.version_id,
            train_split=trigger.job.get("train_split", "train"),
            eval_split=trigger.job.get("eval_split", "val"),
        ),
    )


def trigger_team(trigger: Trigger) -> str:
    """The team a rule's jobs are submitted under (it owns the rule)."""
    return str(trigger.job.get("spec", {}).get("team", ""))


async def fire_triggers(session: AsyncSession, version: KnownVersion) -> list[TrainingJob]:
    """Submit the job of every enabled rule on ``version``'s dataset that has not fired for it."""
    rules = (
        await session.exec(
            select(Trigger).where(
                Trigger.dataset_id == version.dataset_id,
                Trigger.enabled == True,  # noqa: E712
            )
        )
    ).all()
    created: list[TrainingJob] = []
    for rule in rules:
        fired = (
            await session.exec(
                select(TrainingJob.id).where(
                    TrainingJob.trigger_id == rule.id,
                    TrainingJob.dataset_version_id == version.version_id,
                )
            )
        ).first()
        if fired is not None:
            continue
        team = trigger_team(rule)
        usable = team == version.team or team in (version.shared_with or [])
        if not usable and not rule.job.get("any_dataset", True):
            log.warning(
                "trigger %s of team %s skipped: dataset %s is team %s's and not shared with it",
                rule.id,
                team,
                version.dataset_id,
                version.team,
            )
            continue
        try:
            job = await new_job(
                session,
                trigger_job(rule, version),
                created_by=f"trigger:{rule.id}",
                trigger_id=rule.id,
            )
        except KilnError as exc:
            # A rule that no longer validates (template changed) must not block the others.
            log.warning("trigger %s could not submit: %s", rule.id, exc.detail)
            continue
        created.append(job)
    return created
