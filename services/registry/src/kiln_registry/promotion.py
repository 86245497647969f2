"""Aliases and promotion: who may move an alias, which metric gates guard it, and the status
each version ends up with."""

from __future__ import annotations

import operator
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.auth import Principal
from kiln_core.catalog import ModelArtifact, ModelVersionPromoted
from kiln_core.db import utcnow
from kiln_core.errors import Conflict, Forbidden, KilnError, NotFound
from kiln_core.service import ServiceRuntime
from kiln_registry.models import (
    Alias,
    ModelVersion,
    PolicyBody,
    PromotionPolicy,
    RegisteredModel,
    RegressionGate,
    VersionStatus,
)
from kiln_registry.versions import log_operation

WRITER_ROLES = ("ml-engineer", "admin")
OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


class PromotionRefused(KilnError):
    status, type, title = 422, "promotion-refused", "The version does not pass the promotion gates"


async def policy_of(session: AsyncSession, model: RegisteredModel) -> PromotionPolicy | None:
    return await session.get(PromotionPolicy, model.id)


async def alias_target(
    session: AsyncSession, model: RegisteredModel, alias: str
) -> ModelVersion | None:
    row = await session.get(Alias, (model.id, alias))
    return await session.get(ModelVersion, row.version_id) if row else None


def evaluate_gates(
    policy: PolicyBody, candidate: ModelVersion, production: ModelVersion | None
) -> list[dict[str, Any]]:
    """Every gate the candidate fails, each with what was required and what it has."""
    failed: list[dict[str, Any]] = []
    for gate in policy.metric_gates:
        have = candidate.metrics.get(gate.metric)
        if have is None or not OPERATORS[gate.op](have, gate.value):
            failed.append(
                {
                    "gate": "metric",
                    "metric": gate.metric,
                    "required": f"{gate.op} {gate.value}",
                    "actual": have,
                    "reason": "metric missing" if have is None else "below the threshold",
                }
            )
    if production is None or production.id == candidate.id:
        return failed
    for rgate, metric in _regression_checks(policy, production):
        have = candidate.metrics.get(metric)
        baseline = production.metrics.get(metric)
        entry: dict[str, Any] = {
            "gate": "regression",
            "metric": metric,
            "max_drop": rgate.max_drop,
            "actual": have,
            "production": baseline,
            "production_version": production.number,
        }
        if baseline is None:
            continue  # production never measured it: nothing to regress from
        if have is None:
            failed.append({**entry, "reason": "metric missing"})
        elif candidate.evaluation_split != production.evaluation_split:
            failed.append(
                {
                    **entry,
                    "reason": (
                        f"not comparable: evaluated on {candidate.evaluation_split!r}, "
                        f"production on {production.evaluation_split!r}"
                    ),
                }
            )
        else:
            drop = baseline - have if rgate.higher_is_better else have - baseline
            if drop > rgate.max_drop:
                failed.append({**entry, "drop": round(drop, 9), "reason": "worse than production"})
    return failed


def _regression_checks(
    policy: PolicyBody, production: ModelVersion
) -> list[tuple[RegressionGate, str]]:
    """Each regression gate with the metric it checks; a gate on ``prefix.*`` (say ``ap.*``,
    a detector's per-class AP) checks every metric of production that starts with
    ``prefix.``, so no class may fall by more than ``max_drop``."""
    checks: list[tuple[RegressionGate, str]] = []
    for gate in policy.regression_gates:
        if gate.metric.endswith(".*"):
            prefix = gate.metric[:-1]
            checks += [(gate, m) for m in sorted(production.metrics) if m.startswith(prefix)]
        else:
            checks.append((gate, gate.metric))
    return checks


async def refresh_status(session: AsyncSession, version: ModelVersion) -> None:
    """A version's status follows the stage aliases that point at it."""
    if version.status == VersionStatus.archived:
        return
    names = set(
        (await session.exec(select(Alias.name).where(Alias.version_id == version.id))).all()
    )
    status = (
        VersionStatus.production
        if "production" in names
        else VersionStatus.staged
        if names & {"staging", "canary"}
        else VersionStatus.registered
    )
    if version.status != status:
        version.status = status
        version.updated_at = utcnow()
        session.add(version)


async def check_role(
    session: AsyncSession, model: RegisteredModel, alias: str, who: Principal
) -> PolicyBody | None:
    """Refuse (403) a caller whose role may not move ``alias``; returns the policy when it
    gates this alias."""
    row = await policy_of(session, model)
    policy = PolicyBody.model_validate(row.rules) if row else None
    gated = policy is not None and alias in policy.gated_aliases
    allowed = tuple(policy.promoter_roles) if policy is not None and gated else WRITER_ROLES
    if not who.has(*allowed):
        raise Forbidden(
            f"moving alias {alias!r} of {model.name!r} requires one of the roles: "
            f"{', '.join(allowed)}",
            required_roles=list(allowed),
        )
    return policy if gated else None


async def promote(
    session: AsyncSession,
    runtime: ServiceRuntime,
    model: RegisteredModel,
    alias: str,
    candidate: ModelVersion,
    who: Principal,
    reason: str = "",
) -> bool:
    """Point ``alias`` at ``candidate`` if the caller's role and the policy's gates allow it,
    staging ``model_version.promoted`` in the same transaction. False if it already pointed
    there (nothing changes)."""
    policy = await check_role(session, model, alias, who)
    gated = policy is not None
    if candidate.status == VersionStatus.archived:
        raise Conflict(f"version {candidate.number} is archived and cannot be promoted")
    current = await session.get(Alias, (model.id, alias))
    if current is not None and current.version_id == candidate.id:
        return False
    if policy is not None:
        production = await alias_target(session, model, "production")
        failed = evaluate_gates(policy, candidate, production)
        if failed:
            raise PromotionRefused(
                f"version {candidate.number} fails {len(failed)} gate(s) for alias {alias!r}",
                failed_gates=failed,
            )
    previous = await session.get(ModelVersion, current.version_id) if current else None
    if current is None:
        current = Alias(model_id=model.id, name=alias, version_id=candidate.id)
    current.version_id = candidate.id
    current.updated_by = who.subject
    current.updated_at = utcnow()
    session.add(current)
    await session.flush()
    for version in (candidate, previous):
        if version is not None:
            await refresh_status(session, version)
    await log_operation(
        session,
        model,
        "alias.promoted",
        who.subject,
        {
            "alias": alias,
            "version": candidate.number,
            "previous_version": previous.number if previous else None,
            "reason": reason,
            "gated": gated,
        },
        candidate,
    )
    await runtime.emit(
        session,
        ModelVersionPromoted(
            model_name=model.name,
            version=candidate.number,
            version_id=candidate.id,
            alias=alias,
            previous_version=previous.number if previous else None,
            previous_version_id=previous.id if previous else None,
            artifact=ModelArtifact.model_validate(candidate.artifact),
            metrics=candidate.metrics,
            dataset_id=candidate.lineage.get("dataset_id"),
            promoted_by=who.subject,
        ),
        subject=model.name,
    )
    return True


async def remove_alias(
    session: AsyncSession, model: RegisteredModel, alias: str, who: Principal
) -> None:
    current = await session.get(Alias, (model.id, alias))
    if current is None:
        raise NotFound(f"model {model.name!r} has no alias {alias!r}")
    version = await session.get(ModelVersion, current.version_id)
    await session.delete(current)
    await session.flush()
    if version is not None:
        await refresh_status(session, version)
    await log_operation(
        session,
        model,
        "alias.removed",
        who.subject,
        {"alias": alias, "version": version.number if version else None},
        version,
    )


async def aliases_of_version(session: AsyncSession, version: ModelVersion) -> list[str]:
    rows = await session.exec(
        select(Alias.name).where(col(Alias.version_id) == version.id).order_by(col(Alias.name))
    )
    return list(rows.all())
