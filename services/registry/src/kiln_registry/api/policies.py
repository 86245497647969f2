"""Promotion policies: the gates a model's aliases apply."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request

from kiln_core.auth import Admin, Reader
from kiln_core.db import utcnow
from kiln_core.errors import ValidationFailed
from kiln_core.http import SessionDep, get_runtime
from kiln_registry.api.common import (
    ModelName,
)
from kiln_registry.models import (
    ALIAS_PATTERN,
    PolicyBody,
    PolicyPublic,
    PromotionPolicy,
)
from kiln_registry.versions import (
    get_model,
    log_operation,
)

router = APIRouter(prefix="/v1", tags=["registry"])


@router.get("/models/{name}/policy", response_model=PolicyPublic)
async def read_policy(name: ModelName, session: SessionDep, _who: Reader) -> PolicyPublic:
    """The model's promotion policy (no gates and writer roles when none was set)."""
    model = await get_model(session, name)
    row = await session.get(PromotionPolicy, model.id)
    if row is None:
        return PolicyPublic(
            gated_aliases=[],
            promoter_roles=["ml-engineer", "admin"],  # WRITERS
            model_name=model.name,
            updated_by="",
            updated_at=None,
        )
    return PolicyPublic(
        **PolicyBody.model_validate(row.rules).model_dump(),
        model_name=model.name,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


@router.put("/models/{name}/policy", response_model=PolicyPublic)
async def set_policy(
    name: ModelName, body: PolicyBody, request: Request, who: Admin
) -> PolicyPublic:
    """Set the promotion policy: metric gates, regression gates against production, and the
    roles allowed to move the gated aliases. Only an admin may change it (it decides who may
    promote)."""
    for alias in body.gated_aliases:
        if not re.fullmatch(ALIAS_PATTERN, alias):
            raise ValidationFailed(f"gated_aliases: {alias!r} is not an alias name")
    async with get_runtime(request).db.transaction() as session:
        model = await get_model(session, name, lock=True)
        row = await session.get(PromotionPolicy, model.id)
        before = row.rules if row else None
        if row is None:
            row = PromotionPolicy(model_id=model.id, rules={})
        row.rules = body.model_dump(mode="json")
        row.updated_by = who.subject
        row.updated_at = utcnow()
        session.add(row)
        await log_operation(
            session, model, "policy.updated", who.subject, {"from": before, "to": row.rules}
        )
        return PolicyPublic(
            **body.model_dump(),
            model_name=model.name,
            updated_by=row.updated_by,
            updated_at=row.updated_at,
        )
