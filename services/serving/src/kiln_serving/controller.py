"""The serving controller: one background task per API process that loads promoted versions
into Triton, runs rollouts (canary analysis), drains and unloads old versions, keeps the
in-memory routing table fresh and re-reconciles when Triton comes back from a restart."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import logging
import time
from datetime import timedelta

from sqlalchemy import literal, union_all
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import DeploymentFailed, DeploymentReady, ModelArtifact
from kiln_core.db import aware, utcnow
from kiln_core.metrics import TRITON_MODEL_READY
from kiln_core.outage import Outage
from kiln_core.service import ServiceRuntime
from kiln_core.storage import ObjectNotFound
from kiln_core.wake import Wake
from kiln_core.wake import register as register_wake
from kiln_core.wake import unregister as unregister_wake
from kiln_serving import canary
from kiln_serving.detection import is_detector
from kiln_serving.model_repository import build_model, request_input, warmup_input
from kiln_serving.models import (
    Deployment,
    DeploymentState,
    Endpoint,
    EndpointConfig,
    deployments_channel,
)
from kiln_serving.predictions import PredictionLog
from kiln_serving.reconcile import reconcile
from kiln_serving.traffic import RoutingTable
from kiln_serving.triton import TritonGateway, TritonUnavailable

log = logging.getLogger(__name__)

TICK_S = 0.2
HEALTH_EVERY_S = 1.0
ANALYSIS_EVERY_S = 0.5
RECONCILE_EVERY_S = 5.0
# An old version stays loaded this long after leaving the routes (other processes refresh
# their table within a tick) and until its in-flight requests are done.
DRAIN_GRACE_S = 1.0


class DeploymentError(Exception):
    """A version could not be made ready; the reason goes into DeploymentFailed."""


class Controller:
    def __init__(self, runtime: ServiceRuntime, triton: TritonGateway) -> None:
        self.runtime = runtime
        self.triton = triton
        self.table = RoutingTable()
        self.predictions = PredictionLog(runtime)
        self.triton_up = True
        self._working: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reconcile_now = asyncio.Event()
        self._lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile, then tick until ``stop``: at once when a deployment is requested (a
        promotion's handler wakes it, in this process or by NOTIFY from another), else every
        ``TICK_S`` for what nothing announces (routes changed elsewhere, health, canaries)."""
        logger = asyncio.ensure_future(self.predictions.run(stop))
        woken = Wake()
        channel = deployments_channel(self.runtime.db.schema)
        register_wake(channel, woken)
        db = self.runtime.db
        listener = await db.listen(channel, woken.set) if db.is_postgres else None
        try:
            await self._retry(lambda: reconcile(self, startup=True), stop)
            last = {"health": 0.0, "analysis": 0.0, "reconcile": time.monotonic()}
            # A tick fails every TICK_S while Triton or the database is down: log the outage.
            outage = Outage(log, "serving controller", traceback_first=True)
            while not stop.is_set():
                now = time.monotonic()
                try:
                    await self.tick(now, last)
                except Exception as exc:  # noqa: BLE001 - keep controlling; the next tick retries
                    outage.failed(exc)
                else:
                    outage.recovered()
                await woken.wait(stop, TICK_S)
        finally:
            unregister_wake(channel, woken)
            if listener is not None:
                await listener.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await logger

    async def _retry(self, job, stop: asyncio.Event) -> None:  # type: ignore[no-untyped-def]
        outage = Outage(log, "serving start-up reconcile")
        while not stop.is_set():
            try:
                await job()
                outage.recovered()
                return
            except Exception as exc:  # noqa: BLE001 - Triton or the database may still be starting
                outage.failed(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def tick(self, now: float, last: dict[str, float]) -> None:
        # One autocommitted statement per tick (not BEGIN, two queries, ROLLBACK): it runs five
        # times a second in every API process, under load too.
        watch = union_all(
            select(Endpoint.name, Endpoint.generation, literal(False).label("pending")),
            select(Deployment.id, literal(0), literal(True)).where(
                Deployment.state == DeploymentState.pending
            ),
        )
        async with self.runtime.db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            rows = (await conn.execute(watch)).all()
        pending = [key for key, _, is_pending in rows if is_pending]
        if self.table.stale({key: gen for key, gen, is_pending in rows if not is_pending}):
            async with self.runtime.db.session() as session:
                await self.table.refresh(session)
        if self.triton_up:
            for deployment_id in pending:
                self.spawn(deployment_id)
        if now - last["health"] >= HEALTH_EVERY_S or self._reconcile_now.is_set():
            last["health"] = now
            await self.check_health()
        if self.triton_up and (
            self._reconcile_now.is_set() or now - last["reconcile"] >= RECONCILE_EVERY_S
        ):
            self._reconcile_now.clear()
            last["reconcile"] = now
            await reconcile(self)
        if now - last["analysis"] >= ANALYSIS_EVERY_S:
            last["analysis"] = now
            await self.analyse()
            await self.drain()

    async def check_health(self) -> None:
        """Notice Triton going away and coming back; a managed one we restart ourselves."""
        if self.triton.managed is not None and not self.triton.managed.alive():
            log.warning("managed Triton is gone; restarting it")
            self.triton_up = False
            await self.triton.ensure_managed()
        up = await self.triton.ready(timeout_s=5.0)
        if not up and self.triton_up:
            up = await self.triton.ready(timeout_s=5.0)  # a busy box answers late; ask twice
        if up and not self.triton_up:
            log.info("Triton is back; reconciling loaded models")
            self._reconcile_now.set()
        if not up and self.triton_up:
            log.warning("Triton is unavailable")
        self.triton_up = up

    async def check_triton(self) -> None:
        """Readiness: Triton answers and has every model the routes send traffic to ready
        (raises, naming what is not)."""
        if not await self.triton.ready(timeout_s=2.0):
            raise TritonUnavailable(f"Triton at {self.triton.address} does not answer")
        routed = {
            version.triton_model
            for route in self.table.routes.values()
            for version in (route.stable, route.candidate)
            if version is not None
        }
        missing = []
        for model in sorted(routed):
            ready = await self.triton.model_ready(model)
            TRITON_MODEL_READY.labels(model).set(1 if ready else 0)
            if not ready:
                missing.append(model)
        if missing:
            raise TritonUnavailable(f"models not ready on Triton: {', '.join(missing)}")

    async def refresh_routes(self) -> None:
        """Re-read changed routes now (at most every 50 ms, so misses cannot flood the DB)."""
        async with self._refresh_lock:
            if time.monotonic() - self._refreshed_at < 0.05:
                return
            async with self.runtime.db.session() as session:
                await self.table.refresh(session)
            self._refreshed_at = time.monotonic()

    def triton_failed(self) -> None:
        """The request path saw Triton unavailable: check health at the next tick."""
        self._reconcile_now.set()

    def spawn(self, deployment_id: str) -> None:
        if deployment_id in self._working:
            return
        self._working.add(deployment_id)
        task = asyncio.ensure_future(self._deploy(deployment_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- deploying -----------------------------------------------------------------------------

    async def load_version(self, d: Deployment, config: EndpointConfig) -> float:
        """Fetch and verify the artifact, load it into Triton and warm it up; seconds taken."""
        started = time.perf_counter()
        artifact = ModelArtifact.model_validate(d.artifact)
        if artifact.format != "torchscript":
            raise DeploymentError(f"unsupported artifact format {artifact.format!r}")
        try:
            data = await self.runtime.store.read_bytes(artifact.key)
        except ObjectNotFound:
            raise DeploymentError(f"artifact {artifact.key!r} is not in the object store") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != artifact.sha256:
            raise DeploymentError(
                f"checksum mismatch: artifact {artifact.key!r} has sha256 {digest}, "
                f"the promotion says {artifact.sha256}"
            )
        cfg, files = build_model(
            artifact,
            data,
            instance_count=config.instance_count,
            max_batch_size=config.max_batch_size,
        )
        try:
            await self.triton.load(d.triton_model, cfg, files)
        except Exception as exc:
            if not await self.triton.ready():
                raise TritonUnavailable(str(exc)) from exc  # not the model's fault: retry
            raise DeploymentError(str(exc)) from exc
        shape = request_input(artifact)
        try:
            probs = await self.triton.infer(
                d.triton_model, shape.name, shape.datatype, warmup_input(artifact), timeout_s=60
            )
        except TritonUnavailable:
            raise
        except Exception as exc:
            await self.triton.unload(d.triton_model)
            raise DeploymentError(f"warm-up inference failed: {exc}") from exc
        # A detector answers [n, K, 6] box rows, not one column per label.
        if not is_detector(artifact) and probs.shape[-1] != len(artifact.label_map):
            await self.triton.unload(d.triton_model)
            raise DeploymentError(
                f"model answers {probs.shape[-1]} classes, the label map has "
                f"{len(artifact.label_map)}"
            )
        return time.perf_counter() - started

    async def _deploy(self, deployment_id: str) -> None:
        try:
            async with self.runtime.db.transaction() as session:
                # Claimed under a row lock: with several API processes only one loads it.
                d = (
                    await session.exec(
                        select(Deployment)
                        .where(Deployment.id == deployment_id)
                        .with_for_update(skip_locked=True)
                    )
                ).first()
                if d is None or d.state != DeploymentState.pending:
                    return
                endpoint = await session.get(Endpoint, d.endpoint)
                if endpoint is None:
                    d.state, d.reason = DeploymentState.failed, "endpoint deleted"
                    return
                d.state, d.updated_at = DeploymentState.loading, utcnow()
                config = EndpointConfig.model_validate(endpoint.config)
            try:
                seconds = await self.load_version(d, config)
            except asyncio.CancelledError:
                # Shutting down mid-load: hand it back so the next start loads it at once.
                await asyncio.shield(self._unclaim(deployment_id))
                raise
            except TritonUnavailable:
                log.warning("Triton went away during a load; it will be retried")
                self.triton_up = False
                self._reconcile_now.set()
                await self._unclaim(deployment_id)
                return
            except Exception as exc:  # noqa: BLE001 - every failure is reported, never raised
                reason = str(exc) if isinstance(exc, DeploymentError) else repr(exc)
                await self._fail(deployment_id, reason[:2000])
                return
            await self._go_live(deployment_id, seconds)
        finally:
            self._working.discard(deployment_id)

    async def _unclaim(self, deployment_id: str) -> None:
        async with self.runtime.db.transaction() as session:
            d = await session.get(Deployment, deployment_id)
            if d is not None and d.state == DeploymentState.loading:
                d.state, d.updated_at = DeploymentState.pending, utcnow()
                session.add(d)
        if d is not None:
            with contextlib.suppress(Exception):
                await self.triton.unload(d.triton_model)

    async def _fail(self, deployment_id: str, reason: str) -> None:
        log.warning("deployment failed", extra={"deployment": deployment_id, "reason": reason})
        async with self.runtime.db.transaction() as session:
            d = await session.get(Deployment, deployment_id)
            if d is None:
                return
            d.state, d.reason, d.updated_at = DeploymentState.failed, reason, utcnow()
            session.add(d)
            await self.runtime.emit(
                session,
                DeploymentFailed(
                    endpoint=d.endpoint,
                    model_name=d.model_name,
                    version=d.version,
                    version_id=d.version_id,
                    triton_model=d.triton_model,
                    reason=reason,
                ),
                subject=d.endpoint,
            )

    async def _go_live(self, deployment_id: str, seconds: float) -> None:
        async with self._lock, self.runtime.db.transaction() as session:
            d = await session.get(Deployment, deployment_id)
            endpoint = await _endpoint_for_update(session, d.endpoint if d else "")
            if d is None or endpoint is None:
                if d is not None:
                    d.state = DeploymentState.draining
                return
            stable, cand = await _pair(session, endpoint)
            d.load_seconds = seconds
            d.updated_at = utcnow()
            await self.runtime.emit(
                session,
                DeploymentReady(
                    endpoint=d.endpoint,
                    model_name=d.model_name,
                    version=d.version,
                    version_id=d.version_id,
                    triton_model=d.triton_model,
                    load_seconds=round(seconds, 3),
                ),
                subject=d.endpoint,
            )
            await canary.place(self.runtime, session, endpoint, d, stable, cand)
            for row in (d, endpoint, stable, cand):
                if row is not None:
                    session.add(row)
        async with self.runtime.db.session() as session:
            await self.table.refresh(session)

    # --- rollouts and draining -----------------------------------------------------------------

    async def analyse(self) -> None:
        """Fold this process's request outcomes into each rollout's analysis and judge it."""
        rollouts = [r for r in self.table.routes.values() if r.candidate is not None and r.stable]
        for route in rollouts:
            assert route.candidate is not None and route.stable is not None
            cand_out = self.table.take_outcomes(route.candidate.deployment_id)
            stable_out = self.table.take_outcomes(route.stable.deployment_id)
            async with self._lock, self.runtime.db.transaction() as session:
                endpoint = await _endpoint_for_update(session, route.endpoint)
                if endpoint is None or endpoint.candidate_id != route.candidate.deployment_id:
                    continue
                stable, cand = await _pair(session, endpoint)
                if cand is None or stable is None:
                    continue
                # A deep copy: JSON columns notice only a changed value, not nested edits in place.
                analysis = copy.deepcopy(cand.analysis or canary.fresh_analysis())
                config = EndpointConfig.model_validate(endpoint.config)
                canary.merge(analysis, "candidate", cand_out, warmup=config.warmup_requests)
                canary.merge(analysis, "stable", stable_out)
                canary.merge(analysis, "shadow", cand_out)
                cand.analysis = analysis
                session.add(cand)
                if endpoint.strategy != "canary":
                    continue  # shadow and A/B wait for an explicit promote or rollback
                verdict = canary.judge(config, analysis, utcnow())
                if verdict.action == "rollback":
                    await canary.rollback(
                        self.runtime, session, endpoint, stable, cand, verdict.reason
                    )
                elif verdict.action == "promote":
                    await canary.promote(
                        self.runtime, session, endpoint, stable, cand, verdict.reason
                    )
                elif verdict.action == "step":
                    await canary.advance(self.runtime, session, endpoint, stable, cand)
                else:
                    continue
                session.add(endpoint)
                session.add(stable)
            async with self.runtime.db.session() as session:
                await self.table.refresh(session)

    async def drain(self) -> None:
        """Unload versions that left the routes once nothing is in flight on them."""
        cutoff = utcnow() - timedelta(seconds=DRAIN_GRACE_S)
        async with self.runtime.db.session() as session:
            draining = (
                await session.exec(
                    select(Deployment).where(Deployment.state == DeploymentState.draining)
                )
            ).all()
        for d in draining:
            if aware(d.updated_at) > cutoff or self.table.busy(d.triton_model):
                continue
            if not self.triton_up:
                return
            await self.triton.unload(d.triton_model)
            async with self.runtime.db.transaction() as session:
                row = await session.get(Deployment, d.id)
                if row is not None and row.state == DeploymentState.draining:
                    row.state, row.updated_at = DeploymentState.retired, utcnow()
                    session.add(row)


async def _endpoint_for_update(session: AsyncSession, name: str) -> Endpoint | None:
    # Row lock on PostgreSQL, so API actions and the controller never interleave a transition.
    return (
        await session.exec(select(Endpoint).where(Endpoint.name == name).with_for_update())
    ).first()


async def _pair(
    session: AsyncSession, endpoint: Endpoint
) -> tuple[Deployment | None, Deployment | None]:
    ids = [i for i in (endpoint.stable_id, endpoint.candidate_id) if i]
    rows = {
        d.id: d for d in (await session.exec(select(Deployment).where(col(Deployment.id).in_(ids))))
    }
    return rows.get(endpoint.stable_id or ""), rows.get(endpoint.candidate_id or "")
