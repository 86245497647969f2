"""Hyperparameter search: a parent job whose trials are ordinary jobs through the same queue.

Grid search takes the product of the listed values; random search draws ``trials`` points
(seeded by the base job's seed) from ``{min, max, log}`` ranges, ``{choices}`` or value lists.
A name given as ``null`` takes the range the template declares. When every trial has ended
the parent succeeds (or fails if no trial produced the target metric) with the trials ranked
and the best one named.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.db import utcnow
from kiln_core.errors import ValidationFailed
from kiln_training.lifecycle import checked_params, new_job
from kiln_training.models import (
    JobKind,
    JobStatus,
    SearchCreate,
    TrainingJob,
)
from kiln_training.templates import get_template

MAX_TRIALS = 200


def _declared_range(template: str, name: str) -> dict[str, Any]:
    """The range a template declares for ``name`` (its ParamSpec), as a search dimension."""
    spec = get_template(template)
    params = getattr(spec, "params", {})
    param = params.get(name) if isinstance(params, dict) else None
    if param is None:
        for candidate in params if not isinstance(params, dict) else []:
            if getattr(candidate, "name", None) == name:
                param = candidate
    if param is None:
        raise ValidationFailed(f"template {template} has no hyperparameter {name!r}")
    choices = getattr(param, "choices", None)
    if choices:
        return {"choices": list(choices)}
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is None or high is None:
        raise ValidationFailed(f"hyperparameter {name!r} declares no range; list values instead")
    kind = getattr(param, "type", "float")
    return {"min": low, "max": high, "log": bool(getattr(param, "log", False)), "type": kind}


def _grid_values(name: str, dim: Any) -> list[Any]:
    if isinstance(dim, list) and dim:
        return dim
    if isinstance(dim, dict) and dim.get("choices"):
        return list(dim["choices"])
    if isinstance(dim, dict) and "min" in dim and "max" in dim:
        steps = int(dim.get("steps", 3))
        low, high = float(dim["min"]), float(dim["max"])
        if dim.get("log"):
            values = [math.exp(v) for v in _linspace(math.log(low), math.log(high), steps)]
        else:
            values = _linspace(low, high, steps)
        return [round(v) for v in values] if dim.get("type") == "int" else values
    raise ValidationFailed(f"space[{name!r}] must be a non-empty list, {{choices}} or {{min, max}}")


def _linspace(low: float, high: float, steps: int) -> list[float]:
    if steps <= 1:
        return [low]
    return [low + (high - low) * i / (steps - 1) for i in range(steps)]


def _draw(name: str, dim: Any, rng: random.Random) -> Any:
    if isinstance(dim, list) and dim:
        return rng.choice(dim)
    if isinstance(dim, dict) and dim.get("choices"):
        return rng.choice(list(dim["choices"]))
    if isinstance(dim, dict) and "min" in dim and "max" in dim:
        low, high = float(dim["min"]), float(dim["max"])
        if low > high:
            raise ValidationFailed(f"space[{name!r}]: min is above max")
        if dim.get("log"):
            if low <= 0:
                raise ValidationFailed(f"space[{name!r}]: a log range needs min > 0")
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        return round(value) if dim.get("type") == "int" else value
    raise ValidationFailed(f"space[{name!r}] must be a non-empty list, {{choices}} or {{min, max}}")


def trial_params(body: SearchCreate) -> list[dict[str, Any]]:
    """Every trial's hyperparameters (the base params overridden per trial)."""
    if not body.space:
        raise ValidationFailed("the search space is empty")
    space = {
        name: dim if dim is not None else _declared_range(body.base.template, name)
        for name, dim in body.space.items()
    }
    if body.strategy == "grid":
        names = sorted(space)
        axes = [_grid_values(name, space[name]) for name in names]
        count = math.prod(len(a) for a in axes)
        if count > MAX_TRIALS:
            raise ValidationFailed(f"the grid has {count} points, more than {MAX_TRIALS}")
        points = [dict(zip(names, values, strict=True)) for values in itertools.product(*axes)]
        if body.trials is not None:
            points = points[: body.trials]
    else:
        rng = random.Random(body.base.seed)
        points = [
            {name: _draw(name, space[name], rng) for name in sorted(space)}
            for _ in range(body.trials or 10)
        ]
    return [{**body.base.params, **point} for point in points]


async def create_search(
    session: AsyncSession, body: SearchCreate, created_by: str
) -> tuple[TrainingJob, list[TrainingJob]]:
    """The parent job and its queued trials (validated like any job), in ``session``."""
    points = trial_params(body)
    for point in points:
        checked_params(body.base.template, point)
    first = await new_job(session, body.base, created_by=created_by)
    parent = TrainingJob(
        **{
            k: v
            for k, v in first.model_dump().items()
            if k not in {"id", "kind", "status", "resources", "params", "search"}
        },
        kind=JobKind.search,
        status=JobStatus.running,
        resources={},
        params=dict(first.params),
        search={
            "strategy": body.strategy,
            "space": body.space,
            "target": body.target,
            "direction": body.direction,
            "trials": len(points),
            "best_trial_id": None,
            "ranking": [],
        },
    )
    parent.started_at = utcnow()
    session.add(parent)
    await session.flush()
    trials: list[TrainingJob] = []
    for index, point in enumerate(points):
        job = first if index == 0 else await new_job(session, body.base, created_by=created_by)
        job.parent_id = parent.id
        job.params = dict(checked_params(body.base.template, point))
        session.add(job)
        trials.append(job)
    return parent, trials
