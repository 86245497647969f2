"""The in-memory routing table: which Triton model answers a request to an endpoint.

Predict requests never touch the database; the table is rebuilt from it when an endpoint's
``generation`` changes. It also counts in-flight requests per model (so draining knows when an
old version is idle) and the outcomes the canary analysis judges.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import ModelArtifact
from kiln_serving.detection import is_detector
from kiln_serving.model_repository import InputShape, request_input
from kiln_serving.models import Deployment, Endpoint, EndpointConfig

ROUTE_KEY_HEADER = "x-kiln-route-key"


@dataclass(frozen=True)
class ServingVersion:
    """A loaded model version as the request path needs it."""

    deployment_id: str
    triton_model: str
    model_name: str
    version: int
    version_id: str
    label_map: list[str]
    kind: str
    input: InputShape
    dataset_id: str | None
    detector: bool = False  # answers boxes (kiln_serving.detection), not class probabilities

    @classmethod
    def of(cls, d: Deployment) -> ServingVersion:
        artifact = ModelArtifact.model_validate(d.artifact)
        return cls(
            deployment_id=d.id,
            triton_model=d.triton_model,
            model_name=d.model_name,
            version=d.version,
            version_id=d.version_id,
            label_map=list(artifact.label_map),
            kind=artifact.preprocessing.kind,
            input=request_input(artifact),
            dataset_id=d.dataset_id,
            detector=is_detector(artifact),
        )


@dataclass(frozen=True)
class Route:
    endpoint: str
    strategy: str
    config: EndpointConfig
    stable: ServingVersion | None
    candidate: ServingVersion | None
    candidate_weight: float
    generation: int
    # The endpoint's team: only its members call it (kiln_core.teams).
    team: str = "default"

    def pick(self, route_key: str | None) -> tuple[ServingVersion | None, ServingVersion | None]:
        """(the version that answers, a version to mirror the request to or None)."""
        stable, candidate = self.stable, self.candidate
        if candidate is None or stable is None:
            return stable or candidate, None
        if self.strategy == "shadow":
            return stable, candidate
        if self.strategy == "ab" and route_key:
            # Sticky: the same key always lands on the same side while the split holds.
            bucket = zlib.crc32(route_key.encode()) % 10000 / 100.0
            return (candidate if bucket < self.candidate_weight else stable), None
        return (candidate if random.random() * 100.0 < self.candidate_weight else stable), None


@dataclass
class Outcomes:
    """Requests, errors and latencies of one deployment since the last analysis took them."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    shadow_compared: int = 0
    shadow_agreed: int = 0
    scores: list[float] = field(default_factory=list)  # one per answered input

    def take(self) -> Outcomes:
        taken = Outcomes(
            self.requests,
            self.errors,
            self.latencies_ms,
            self.shadow_compared,
            self.shadow_agreed,
            self.scores,
        )
        self.requests = self.errors = self.shadow_compared = self.shadow_agreed = 0
        self.latencies_ms = []
        self.scores = []
        return taken


class RoutingTable:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.inflight: dict[str, int] = {}
        self.outcomes: dict[str, Outcomes] = {}
        self._generations: dict[str, int] = {}

    def acquire(self, version: ServingVersion) -> None:
        self.inflight[version.triton_model] = self.inflight.get(version.triton_model, 0) + 1

    def release(self, version: ServingVersion) -> None:
        self.inflight[version.triton_model] -= 1

    def busy(self, triton_model: str) -> bool:
        return self.inflight.get(triton_model, 0) > 0

    def record(
        self, version: ServingVersion, latency_ms: float, ok: bool, scores: Sequence[float] = ()
    ) -> None:
        out = self.outcomes.setdefault(version.deployment_id, Outcomes())
        out.requests += 1
        if not ok:
            out.errors += 1
        if ok and len(out.latencies_ms) < 5000:
            out.latencies_ms.append(latency_ms)
        if len(out.scores) < 5000:
            out.scores.extend(scores)

    def record_shadow(self, version: ServingVersion, agreed: bool) -> None:
        out = self.outcomes.setdefault(version.deployment_id, Outcomes())
        out.shadow_compared += 1
        out.shadow_agreed += int(agreed)

    def take_outcomes(self, deployment_id: str) -> Outcomes:
        return self.outcomes.setdefault(deployment_id, Outcomes()).take()

    def stale(self, generations: dict[str, int]) -> bool:
        """Whether endpoints' current generations differ from the routes this table holds."""
        return generations != self._generations

    async def refresh(self, session: AsyncSession, force: bool = False) -> bool:
        """Reload the routes of endpoints whose generation changed; True if any did."""
        rows = (await session.exec(select(Endpoint.name, Endpoint.generation))).all()
        current = {name: gen for name, gen in rows}
        changed = [n for n, g in current.items() if force or self._generations.get(n) != g]
        gone = [n for n in self.routes if n not in current]
        for name in gone:
            self.routes.pop(name, None)
            self._generations.pop(name, None)
        if not changed:
            return bool(gone)
        endpoints = (
            await session.exec(select(Endpoint).where(col(Endpoint.name).in_(changed)))
        ).all()
        ids = [i for e in endpoints for i in (e.stable_id, e.candidate_id) if i]
        deployments = {
            d.id: d
            for d in (await session.exec(select(Deployment).where(col(Deployment.id).in_(ids))))
        }
        for e in endpoints:
            stable = deployments.get(e.stable_id or "")
            candidate = deployments.get(e.candidate_id or "")
            self.routes[e.name] = Route(
                endpoint=e.name,
                team=e.team,
                strategy=e.strategy,
                config=EndpointConfig.model_validate(e.config),
                stable=ServingVersion.of(stable) if stable else None,
                candidate=ServingVersion.of(candidate) if candidate else None,
                candidate_weight=e.candidate_weight,
                generation=e.generation,
            )
            self._generations[e.name] = e.generation
        return True
