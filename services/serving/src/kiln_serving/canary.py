"""Rollouts: placing a warm version on an endpoint, canary analysis (error rate, p99 latency
and the distribution of answer scores of the candidate against the stable version, per step),
promotion and rollback.

The candidate's first ``warmup_requests`` answered requests are left out of its latencies (a
freshly loaded model is slow until its runtime has seen the batch shapes), counted once per
rollout, across steps; its errors always count.

Every transition changes the endpoint row (and bumps its generation, so every process
re-reads its routes) and emits ``TrafficShifted`` in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from prometheus_client import Counter
from sqlalchemy import event
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import TrafficShifted
from kiln_core.db import aware, utcnow
from kiln_core.metrics import CANARY_PROMOTIONS, CANARY_ROLLBACKS, CANARY_STEPS
from kiln_core.service import ServiceRuntime
from kiln_serving.models import (
    ANALYSIS_SAMPLES,
    Deployment,
    DeploymentState,
    Endpoint,
    EndpointConfig,
)
from kiln_serving.traffic import Outcomes

LATENCY_SAMPLES = 2000
SCORE_SAMPLES = 2000
MIN_SCORES = 20  # fewer answers per side than this: no score comparison yet


@dataclass(frozen=True)
class Verdict:
    action: str  # wait | step | promote | rollback
    reason: str = ""


def fresh_analysis(step: int = 0, warmed: int = 0) -> dict[str, Any]:
    """Counters for a new step; ``warmed``: the candidate's warm-up requests already seen."""
    return {
        "step": step,
        "step_started_at": utcnow().isoformat(),
        "candidate": {"requests": 0, "errors": 0, "latencies": [], "warmup_ignored": warmed},
        "stable": {"requests": 0, "errors": 0, "latencies": []},
        "shadow": {"compared": 0, "agreed": 0},
    }


def warmed(analysis: dict[str, Any] | None) -> int:
    """How many of the candidate's first latencies an analysis has left out as warm-up."""
    return int(((analysis or {}).get("candidate") or {}).get("warmup_ignored", 0))


def merge(analysis: dict[str, Any], side: str, outcomes: Outcomes, warmup: int = 0) -> None:
    """Add a batch of request outcomes to the persisted counters of one side; on the candidate
    side the first ``warmup`` latencies of the rollout are left out."""
    if side == "shadow":
        s = analysis.setdefault("shadow", {})
        s.setdefault("compared", 0)
        s.setdefault("agreed", 0)
        s["compared"] += outcomes.shadow_compared
        s["agreed"] += outcomes.shadow_agreed
        s["agreement"] = s["agreed"] / s["compared"] if s["compared"] else None
        return
    s = analysis.setdefault(side, {"requests": 0, "errors": 0, "latencies": []})
    s["scores"] = (s.get("scores", []) + [round(x, 4) for x in outcomes.scores])[-SCORE_SAMPLES:]
    s["score_mean"] = float(np.mean(s["scores"])) if s["scores"] else None
    s["requests"] += outcomes.requests
    s["errors"] += outcomes.errors
    latencies = outcomes.latencies_ms
    if side == "candidate":
        skip = min(max(warmup - s.get("warmup_ignored", 0), 0), len(latencies))
        s["warmup_ignored"] = s.get("warmup_ignored", 0) + skip
        latencies = latencies[skip:]
    s["latencies"] = (s["latencies"] + [round(x, 3) for x in latencies])[-LATENCY_SAMPLES:]
    s["error_rate"] = s["errors"] / s["requests"] if s["requests"] else 0.0
    s["p99_ms"] = float(np.percentile(s["latencies"], 99)) if s["latencies"] else None
    cand, stable = analysis.get("candidate", {}), analysis.get("stable", {})
    analysis["score_shift"] = score_shift(cand.get("scores", []), stable.get("scores", []))


def score_shift(a: list[float], b: list[float]) -> float | None:
    """The two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical
    CDFs, 0 = same distribution, 1 = disjoint), or None with too few samples. Four lines of
    numpy; scipy's ks_2samp would add a dependency to serving for the same number."""
    if len(a) < MIN_SCORES or len(b) < MIN_SCORES:
        return None
    x, y = np.sort(a), np.sort(b)
    grid = np.concatenate([x, y])
    gap = np.searchsorted(x, grid, side="right") / len(x) - np.searchsorted(
        y, grid, side="right"
    ) / len(y)
    return round(float(np.abs(gap).max()), 4)


def judge(config: EndpointConfig, analysis: dict[str, Any], now: datetime) -> Verdict:
    """What the canary analysis decides about the current step."""
    cand = analysis.get("candidate", {})
    stable = analysis.get("stable", {})
    if cand.get("requests", 0) < config.min_requests_per_step:
        return Verdict("wait")
    if cand.get("error_rate", 0.0) > config.max_error_rate:
        return Verdict(
            "rollback",
            f"error rate {cand['error_rate']:.3f} above {config.max_error_rate:.3f}",
        )
    if cand.get("warmup_ignored", 0) < config.warmup_requests:
        return Verdict("wait")  # no latency to judge yet: the candidate is still warming up
    if cand.get("p99_ms") and stable.get("p99_ms") and len(stable.get("latencies", [])) >= 10:
        ratio = cand["p99_ms"] / max(stable["p99_ms"], 1e-3)
        if ratio > config.max_latency_ratio:
            return Verdict(
                "rollback", f"p99 latency {ratio:.2f}x stable (limit {config.max_latency_ratio})"
            )
    shift = analysis.get("score_shift")
    if config.max_score_shift is not None and shift is not None and shift > config.max_score_shift:
        return Verdict(
            "rollback",
            f"answer scores shifted: KS {shift:.2f} against stable"
            f" (limit {config.max_score_shift})",
        )
    started = aware(datetime.fromisoformat(analysis["step_started_at"]))
    if (now - started).total_seconds() < config.step_interval_s:
        return Verdict("wait")
    if analysis["step"] + 1 >= len(config.canary_steps):
        return Verdict("promote", "all canary steps passed")
    return Verdict("step", f"step {analysis['step'] + 1} passed")


def summary(analysis: dict[str, Any]) -> dict[str, Any]:
    """The analysis without latency samples (for events and the API)."""
    out: dict[str, Any] = {}
    for key, value in analysis.items():
        if isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if k not in ANALYSIS_SAMPLES}
        else:
            out[key] = value
    return out


def _count_on_commit(session: AsyncSession, counter: Counter, endpoint: Endpoint) -> None:
    """Count a transition once its transaction commits (a rolled-back one never happened)."""
    child = counter.labels(endpoint.name)
    event.listen(session.sync_session, "after_commit", lambda _: child.inc(), once=True)


def _touch(endpoint: Endpoint) -> None:
    endpoint.generation += 1
    endpoint.updated_at = utcnow()


def _retire(d: Deployment | None) -> None:
    if d is not None and d.state in (DeploymentState.stable, DeploymentState.candidate):
        d.state = DeploymentState.draining
        d.updated_at = utcnow()


def initial_weight(strategy: str, config: EndpointConfig) -> float:
    """Percent of traffic a new candidate answers under ``strategy``."""
    return {"canary": config.canary_steps[0], "ab": config.ab_weight}.get(strategy, 0.0)


async def _shifted(
    runtime: ServiceRuntime,
    session: AsyncSession,
    endpoint: Endpoint,
    d: Deployment,
    weights: dict[str, float],
    reason: str,
    analysis: dict[str, Any] | None = None,
) -> None:
    event = TrafficShifted(
        endpoint=endpoint.name,
        model_name=d.model_name,
        version=d.version,
        version_id=d.version_id,
        triton_model=d.triton_model,
        strategy=endpoint.strategy,
        weights=weights,
        reason=reason,
        analysis=summary(analysis or {}),
    )
    await runtime.emit(session, event, subject=endpoint.name)


async def place(
    runtime: ServiceRuntime,
    session: AsyncSession,
    endpoint: Endpoint,
    new: Deployment,
    stable: Deployment | None,
    candidate: Deployment | None,
) -> None:
    """Route traffic to a freshly warmed version as the endpoint's strategy says."""
    config = EndpointConfig.model_validate(endpoint.config)
    _retire(candidate)  # a newer version supersedes a rollout in progress
    if stable is None or endpoint.strategy == "direct":
        _retire(stable)
        new.state = DeploymentState.stable
        endpoint.stable_id, endpoint.candidate_id, endpoint.candidate_weight = new.id, None, 0.0
        _touch(endpoint)
        await _shifted(runtime, session, endpoint, new, {new.version_id: 1.0}, "replaced")
        return
    new.state = DeploymentState.candidate
    new.analysis = fresh_analysis()
    weight = initial_weight(endpoint.strategy, config)
    endpoint.candidate_id, endpoint.candidate_weight = new.id, weight
    _touch(endpoint)
    weights = {stable.version_id: 1 - weight / 100, new.version_id: weight / 100}
    await _shifted(runtime, session, endpoint, new, weights, "step", new.analysis)


async def advance(
    runtime: ServiceRuntime,
    session: AsyncSession,
    endpoint: Endpoint,
    stable: Deployment,
    candidate: Deployment,
) -> None:
    """Next canary step: more traffic to the candidate, counters start afresh."""
    config = EndpointConfig.model_validate(endpoint.config)
    previous = candidate.analysis
    step = previous["step"] + 1
    candidate.analysis = fresh_analysis(step, warmed(previous))
    candidate.analysis["history"] = [*previous.get("history", []), summary(previous)]
    endpoint.candidate_weight = config.canary_steps[step]
    _touch(endpoint)
    _count_on_commit(session, CANARY_STEPS, endpoint)
    w = endpoint.candidate_weight / 100
    weights = {stable.version_id: 1 - w, candidate.version_id: w}
    await _shifted(runtime, session, endpoint, candidate, weights, "step", previous)


async def promote(
    runtime: ServiceRuntime,
    session: AsyncSession,
    endpoint: Endpoint,
    stable: Deployment | None,
    candidate: Deployment,
    why: str,
) -> None:
    """The candidate becomes the stable version; the old stable one drains."""
    _retire(stable)
    candidate.state = DeploymentState.stable
    candidate.reason = why
    candidate.updated_at = utcnow()
    endpoint.stable_id, endpoint.candidate_id, endpoint.candidate_weight = candidate.id, None, 0.0
    _touch(endpoint)
    _count_on_commit(session, CANARY_PROMOTIONS, endpoint)
    await _shifted(
        runtime,
        session,
        endpoint,
        candidate,
        {candidate.version_id: 1.0},
        "promoted",
        candidate.analysis,
    )


async def rollback(
    runtime: ServiceRuntime,
    session: AsyncSession,
    endpoint: Endpoint,
    stable: Deployment | None,
    candidate: Deployment,
    why: str,
) -> None:
    """All traffic back to the stable version; the candidate drains."""
    _retire(candidate)
    candidate.reason = f"rolled back: {why}"
    endpoint.candidate_id, endpoint.candidate_weight = None, 0.0
    _touch(endpoint)
    _count_on_commit(session, CANARY_ROLLBACKS, endpoint)
    weights = {stable.version_id: 1.0} if stable else {}
    await _shifted(
        runtime, session, endpoint, candidate, weights, "rolled_back", candidate.analysis
    )
