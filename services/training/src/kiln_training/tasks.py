"""Training runs on Celery: queues per resource pool (``training.cpu``, ``training.gpu``).

The job row is the truth. The scheduler marks a job running (attempt n) and sends
``run_job(job_id, n)`` to its pool's queue; the task claims the job only if it is still running
at attempt n, so a late or duplicate delivery changes nothing. While it runs, a heartbeat every
``heartbeat_s`` renews the job's lease, stores sampled metrics, sends bounded-rate progress
events and reads pause/cancel requests into a flag that ``RunControl.requested`` returns without
any I/O. A worker killed mid-run stops renewing; the scheduler takes the job back when the
lease lapses and starts it again from its last checkpoint.

``kiln worker training`` serves the ``training`` queue; this module adds the pool's queue
(``KILN_TRAINING_POOL``, default cpu) and advertises the worker's capacity
(``KILN_TRAINING_CAPACITY`` or the machine's) with heartbeats while it lives.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Literal, TypeVar, cast

from celery import Celery, signals
from sqlalchemy import delete
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import (
    ModelArtifact,
    ModelSignature,
    Preprocessing,
    TrainingJobProgress,
    TrainingJobStarted,
    TrainingJobSucceeded,
)
from kiln_core.db import aware, utcnow
from kiln_core.jobs import JobContext, LongWork
from kiln_core.service import ServiceRuntime
from kiln_core.tasks import is_embedded_broker
from kiln_core.telemetry import continued_span
from kiln_training.lifecycle import (
    TrainingSettings,
    after_trial_end,
    default_worker_id,
    event_base,
    get_job,
    lease_until,
    mark_cancelled,
    mark_failed,
    register_worker,
    training_settings,
    unregister_worker,
    worker_capacity,
)
from kiln_training.models import BadCase, JobStatus, KnownVersion, MetricPoint, TrainingJob

log = logging.getLogger(__name__)
T = TypeVar("T")

# One run at a time per process: PyTorch's thread count and default RNG are process-global, so
# two runs in one process would perturb each other and lose bit-exact resumes.
_RUN_LOCK = threading.Lock()
# Bad cases beyond this are counted, not stored.
MAX_BAD_CASES = 5000
QUEUES = ("training", "training.cpu", "training.gpu")


def run_job_task(context: JobContext, job_id: str, attempt: int) -> None:
    """The task a scheduling round sends to a pool's queue (see ``executor.schedule_once``)."""
    JobRun(context, job_id, attempt).run()


# --- worker advertising -----------------------------------------------------------------------


class _Advertiser:
    """A thread that keeps this worker process's capacity row fresh."""

    def __init__(self, context: JobContext, tsettings: TrainingSettings) -> None:
        self.context = context
        self.tsettings = tsettings
        self.worker_id = default_worker_id(tsettings.pool)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="kiln-training-advertise")
        self.thread.daemon = True

    def _run(self) -> None:
        # Capacity is advertised only once PyTorch is warm, so no job waits on the warm-up.
        warm_up_once()
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        runtime = self.context.new_runtime()
        capacity = worker_capacity(self.tsettings)
        try:
            while not self.stop.is_set():
                try:
                    await register_worker(runtime, self.worker_id, self.tsettings.pool, capacity)
                except Exception:  # noqa: BLE001 - retried on the next beat
                    log.warning("could not advertise the worker", exc_info=True)
                await asyncio.to_thread(self.stop.wait, self.tsettings.heartbeat_s)
            await unregister_worker(runtime, self.worker_id)
        finally:
            await runtime.db.dispose()


_advertiser: _Advertiser | None = None
_warm_lock = threading.Lock()
_warmed = False


def warm_up_once() -> None:
    """Pay PyTorch's one-time lazy imports once per process, before any job's clock runs."""
    global _warmed
    with _warm_lock:
        if not _warmed:
            from kiln_training.trainer import warm_up  # heavy: torch, only where runs happen

            warm_up()
            _warmed = True


# The apps this process bound as training workers, with the context their tasks run in.
_BOUND: weakref.WeakKeyDictionary[Celery, JobContext] = weakref.WeakKeyDictionary()


def setup_worker(app: Celery, context: JobContext) -> None:
    """Make ``app`` a training worker's app: it also serves its pool's queue and, on a real
    broker, advertises the worker's capacity while it lives."""
    _BOUND[app] = context


@signals.celeryd_after_setup.connect
def _serve_pool_queue(sender: Any, instance: Any, **_: Any) -> None:
    if instance.app in _BOUND:
        instance.app.amqp.queues.select_add(f"training.{training_settings().pool}")


@signals.worker_ready.connect
def _start_advertising(sender: Any = None, **_: Any) -> None:
    global _advertiser
    app = getattr(sender, "app", None)
    if app not in _BOUND or is_embedded_broker(app) or _advertiser is not None:
        return
    _advertiser = _Advertiser(_BOUND[app], training_settings())
    _advertiser.thread.start()


@signals.worker_shutting_down.connect
def _stop_advertising(**_: Any) -> None:
    if _advertiser is not None:
        _advertiser.stop.set()
        _advertiser.thread.join(10)


LONG_WORK = LongWork(
    task_name="kiln.training.run_job", run=run_job_task, queues=QUEUES, setup=setup_worker
)


# --- one run ----------------------------------------------------------------------------------


def progress_metrics(progress: Any) -> dict[str, float]:
    """The numeric metrics of a step or epoch report (its fields other than step/epoch)."""
    if dataclasses.is_dataclass(progress) and not isinstance(progress, type):
        fields = dataclasses.asdict(progress)
    elif hasattr(progress, "model_dump"):
        fields = progress.model_dump()
    else:
        fields = dict(vars(progress))
    out: dict[str, float] = {}
    for name, value in fields.items():
        if name in ("step", "epoch"):
            continue
        if isinstance(value, dict):
            out.update({k: float(v) for k, v in value.items() if isinstance(v, int | float)})
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _as_model(cls: type[Any], value: Any) -> Any:
    if isinstance(value, cls):
        return value
    if hasattr(value, "model_dump"):
        return cls.model_validate(value.model_dump())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return cls.model_validate(dataclasses.asdict(value))
    return cls.model_validate(value)


class RunLost(Exception):
    """This run no longer owns the job (it was taken back or finished elsewhere)."""


class JobRun:
    """One attempt of one job in this worker: claims it, runs it, records how it ended."""

    def __init__(self, context: JobContext, job_id: str, attempt: int) -> None:
        self.context = context
        self.settings = context.settings
        self.tsettings = training_settings()
        self.job_id = job_id
        self.attempt = attempt
        self.worker_id = f"{default_worker_id(self.tsettings.pool)}/{threading.get_ident()}"
        self.flag: Literal["pause", "cancel"] | None = None
        self.lost = False
        self.loop = asyncio.new_event_loop()
        self.stopping = asyncio.Event()
        self.checkpointing: Future[None] | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"kiln-run-{job_id}")
        self.lock = threading.Lock()
        self.pending: list[MetricPoint] = []
        self.last_sample = 0.0
        self.step = 0
        self.epoch = 0
        self.last_metrics: dict[str, float] = {}
        self.first_step_at: Any = None
        self.runtime: ServiceRuntime | None = None
        self.job: TrainingJob | None = None
        # Wall-clock marks of this attempt's phases (see ``phases``), for the run's log line.
        self.marks: dict[str, float] = {"received": time.time()}

    # The run is synchronous (PyTorch in this thread); database and store work happens on a
    # private event loop in a helper thread.
    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def run(self) -> None:
        # Import and warm PyTorch before claiming: loading its libraries holds the GIL for
        # seconds, which would starve the heartbeat of a lease already running.
        from kiln_training.trainer import run_training  # heavy: torch, only where runs happen

        warm_up_once()

        self.thread.start()
        self.runtime = self.context.new_runtime()
        beat: Future[None] | None = None
        try:
            self.job = self._call(self._claim())
            if self.job is None:
                return
            self.marks["claimed"] = time.time()
            beat = asyncio.run_coroutine_threadsafe(self._heartbeat(), self.loop)
            try:
                spec = self._call(self._spec(self.job))
                # The claim holds the lease (heartbeats go on) while another run finishes.
                with _RUN_LOCK:
                    self.marks["training"] = time.time()
                    outcome = run_training(spec, self)
                    self.marks["trained"] = time.time()
                self._checkpoint_written()
            except Exception as exc:  # noqa: BLE001 - recorded on the job
                log.exception("training run failed", extra={"job_id": self.job_id})
                self._stop_beat(beat)
                beat = None
                self._call(self._record_failure(f"{type(exc).__name__}: {exc}"))
                return
            self._stop_beat(beat)
            beat = None
            self._call(self._record(outcome))
            self.marks["recorded"] = time.time()
            log.info(
                "training run phases",
                extra={"job_id": self.job_id, "phases": self.phases(outcome.timings)},
            )
        finally:
            if beat is not None:
                self._stop_beat(beat)
            if self.runtime is not None:
                self._call(self.runtime.db.dispose())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def phases(self, timings: dict[str, float]) -> dict[str, float]:
        """Seconds per phase of this attempt: dispatch (scheduler start to the task arriving),
        claim, setup (spec, lock), the trainer's own phases, and after (checkpoint wait, model
        upload, recording the outcome)."""
        marks = self.marks
        out: dict[str, float] = {}
        job = self.job
        if job is not None and job.started_at is not None:
            out["dispatch"] = marks["received"] - _aware(job.started_at).timestamp()
        steps = [("claim", "received", "claimed"), ("setup", "claimed", "training")]
        steps += [("trainer", "training", "trained"), ("after", "trained", "recorded")]
        steps += [("model_upload", "uploading", "uploaded")]
        for name, start, end in steps:
            if start in marks and end in marks:
                out[name] = marks[end] - marks[start]
        out.update({f"trainer.{k}": v for k, v in timings.items()})
        return {k: round(v, 4) for k, v in out.items()}

    def _stop_beat(self, beat: Future[None]) -> None:
        # Never cancel a beat mid-transaction (its metrics would roll back): ask it to stop
        # between beats and wait for that.
        self.loop.call_soon_threadsafe(self.stopping.set)
        try:
            beat.result(timeout=30)
        except BaseException:  # noqa: BLE001 - a failed last beat is retried by the final one
            log.debug("heartbeat ended with an error", exc_info=True)

    @property
    def rt(self) -> ServiceRuntime:
        assert self.runtime is not None
        return self.runtime

    async def _fenced(self, session: Any) -> TrainingJob:
        """The job row, locked, if this run still owns it."""
        job = await get_job(session, self.job_id, for_update=True)
        if (
            job.status != JobStatus.running
            or job.attempts != self.attempt
            or job.worker_id != self.worker_id
        ):
            self.lost = True
            raise RunLost(self.job_id)
        return job

    def _span(self, job: TrainingJob, name: str) -> Any:
        """Events of the run continue the trace the job was submitted in."""
        return continued_span(
            name, job.traceparent, **{"kiln.service": "training", "kiln.job_id": job.id}
        )

    async def _claim(self) -> TrainingJob | None:
        async with self.rt.db.transaction() as session:
            job = await get_job(session, self.job_id, for_update=True)
            if job.status != JobStatus.running or job.attempts != self.attempt:
                log.info("stale delivery ignored", extra={"job_id": self.job_id})
                return None
            job.worker_id = self.worker_id
            job.lease_expires_at = lease_until(self.tsettings.lease_s)
            job.updated_at = utcnow()
            self.flag = _request(job.requested)
            session.add(job)
            with self._span(job, "training run started"):
                await self.rt.emit(
                    session,
                    TrainingJobStarted(
                        **_base(job),
                        attempt=job.attempts,
                        resumed_from_step=job.checkpoint_step,
                    ),
                    subject=job.id,
                )
            return job

    async def _spec(self, job: TrainingJob) -> Any:
        from kiln_training.trainer import DataRef, RunSpec  # heavy: torch (see run)

        init_weights = None
        if job.warm_start_key:
            init_weights = await self.rt.store.read_bytes(job.warm_start_key)
        s = self.settings
        return RunSpec(
            template=job.template,
            params=dict(job.params),
            seed=job.seed,
            data=DataRef(
                storage_url=s.resolve(s.storage_url, "training"),
                manifest_key=job.manifest_key,
                train_split=job.train_split,
                eval_split=job.eval_split,
            ),
            max_epochs=job.max_epochs,
            time_budget_s=job.time_budget_s,
            early_stopping_patience=job.early_stopping_patience,
            world_size=job.world_size,
            init_weights=init_weights,
            checkpoint_every_steps=job.checkpoint_every_steps,
            # The job's cpu allocation, fixed per job so a resumed run computes identically.
            num_threads=max(1, int(job.resources.get("cpu", 1))),
        )

    # --- RunControl ---------------------------------------------------------------------------

    def requested(self) -> Literal["pause", "cancel"] | None:
        return "cancel" if self.lost else self.flag

    def on_step(self, progress: Any) -> None:
        now = time.monotonic()
        self.step = int(progress.step)
        self.epoch = int(getattr(progress, "epoch", self.epoch))
        if self.first_step_at is None:
            self.first_step_at = utcnow()
        if now - self.last_sample >= self.tsettings.step_sample_s:
            self.last_sample = now
            metrics = progress_metrics(progress)
            self.last_metrics = metrics
            with self.lock:
                self.pending.append(
                    MetricPoint(
                        job_id=self.job_id,
                        kind="step",
                        step=self.step,
                        epoch=self.epoch,
                        metrics=metrics,
                    )
                )

    def on_epoch(self, progress: Any) -> None:
        self.epoch = int(progress.epoch)
        step = int(getattr(progress, "step", self.step))
        metrics = progress_metrics(progress)
        self.last_metrics = {**self.last_metrics, **metrics}
        with self.lock:
            self.pending.append(
                MetricPoint(
                    job_id=self.job_id, kind="epoch", step=step, epoch=self.epoch, metrics=metrics
                )
            )

    def save_checkpoint(self, data: bytes, step: int) -> None:
        # Written in the background so training goes on; the next save and the outcome wait
        # for it, so checkpoints land in order and a pause never records an unwritten one.
        self._checkpoint_written()
        self.checkpointing = asyncio.run_coroutine_threadsafe(
            self._save_checkpoint(data, step), self.loop
        )

    def _checkpoint_written(self) -> None:
        if self.checkpointing is not None:
            future, self.checkpointing = self.checkpointing, None
            future.result()

    def load_checkpoint(self) -> bytes | None:
        job = self.job
        if job is None or not job.checkpoint_key:
            return None
        return self._call(self.rt.store.read_bytes(job.checkpoint_key))

    # --- the run's I/O ------------------------------------------------------------------------

    async def _save_checkpoint(self, data: bytes, step: int) -> None:
        key = f"checkpoints/{self.job_id}/step-{step:09d}.pt"
        await self.rt.store.put(key, data)
        previous = None
        async with self.rt.db.transaction() as session:
            job = await self._fenced(session)
            previous = job.checkpoint_key
            job.checkpoint_key, job.checkpoint_step = key, step
            session.add(job)
            self.job = job
        if previous and previous != key:
            try:
                await self.rt.store.delete(previous)
            except Exception:  # noqa: BLE001 - an orphan checkpoint costs only space
                log.debug("could not delete an old checkpoint", exc_info=True)

    async def _heartbeat(self) -> None:
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), self.tsettings.heartbeat_s)
                return
            except TimeoutError:
                pass
            try:
                await self._beat()
            except RunLost:
                log.warning("run lost its job; stopping", extra={"job_id": self.job_id})
                return
            except Exception:  # noqa: BLE001 - the next beat retries
                log.warning("heartbeat failed", exc_info=True)

    async def _beat(self, *, final: bool = False) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        try:
            await self._write_beat(pending, final)
        except BaseException:
            with self.lock:  # keep the points for the next beat
                self.pending = pending + self.pending
            raise

    async def _write_beat(self, pending: list[MetricPoint], final: bool) -> None:
        async with self.rt.db.transaction() as session:
            job = await self._fenced(session)
            self.flag = _request(job.requested)
            for point in pending:
                session.add(point)
            job.step, job.epoch = self.step, self.epoch
            if self.first_step_at is not None and job.first_step_at is None:
                job.first_step_at = self.first_step_at
            now = utcnow()
            if not final:
                job.lease_expires_at = lease_until(self.tsettings.lease_s)
            last = job.last_progress_event_at
            due = last is None or (now - _aware(last)).total_seconds() >= (
                self.tsettings.progress_event_interval_s
            )
            if due and self.last_metrics and self.step > 0:
                job.last_progress_event_at = now
                await self.rt.emit(
                    session,
                    TrainingJobProgress(
                        **_base(job), epoch=self.epoch, step=self.step, metrics=self.last_metrics
                    ),
                    subject=job.id,
                )
            job.updated_at = now
            session.add(job)
            self.job = job

    async def _record_failure(self, reason: str) -> None:
        try:
            await self._beat(final=True)
            async with self.rt.db.transaction() as session:
                job = await self._fenced(session)
                await mark_failed(session, self.rt, job, reason)
        except RunLost:
            return

    async def _record(self, outcome: Any) -> None:
        try:
            await self._beat(final=True)
        except RunLost:
            return
        status = str(outcome.status)
        artifact = None
        if status == "succeeded" and outcome.model is not None:
            self.marks["uploading"] = time.time()
            artifact = await self._store_model(outcome.model)
            self.marks["uploaded"] = time.time()
        try:
            async with self.rt.db.transaction() as session:
                job = await self._fenced(session)
                job.step = int(outcome.step)
                job.epoch = int(outcome.epoch)
                if status == "succeeded":
                    with self._span(job, "training run succeeded"):
                        await self._succeed(session, job, outcome, artifact)
                elif status == "cancelled" or job.requested == "cancel":
                    await mark_cancelled(session, self.rt, job, None)
                elif status == "paused":
                    job.status = JobStatus.paused
                    job.requested = None
                    job.worker_id = None
                    job.lease_expires_at = None
                    job.updated_at = utcnow()
                    session.add(job)
                else:
                    await mark_failed(session, self.rt, job, f"the run ended as {status}")
        except RunLost:
            return

    async def _store_model(self, model: Any) -> dict[str, Any]:
        store = self.rt.store
        script = await store.put_blob(model.torchscript)
        weights = await store.put_blob(model.state_dict)
        artifact = ModelArtifact(
            uri=store.uri(script.key),
            key=script.key,
            sha256=script.sha256,
            size_bytes=script.size,
            signature=_as_model(ModelSignature, model.signature),
            label_map=list(model.label_map),
            preprocessing=_as_model(Preprocessing, model.preprocessing),
        )
        return {**artifact.model_dump(mode="json"), "state_dict_key": weights.key}

    async def _succeed(
        self, session: Any, job: TrainingJob, outcome: Any, artifact: dict[str, Any] | None
    ) -> None:
        if artifact is None:
            await mark_failed(session, self.rt, job, "the run succeeded but exported no model")
            return
        report = outcome.evaluation.model_dump() if outcome.evaluation is not None else None
        bad_cases = list((report or {}).pop("bad_cases", []) or [])
        await session.execute(delete(BadCase).where(BadCase.job_id == job.id))  # type: ignore[arg-type]
        seen: set[str] = set()
        for case in bad_cases[:MAX_BAD_CASES]:
            item_id = str(case["item_id"])
            if item_id in seen:
                continue
            seen.add(item_id)
            session.add(
                BadCase(
                    job_id=job.id,
                    item_id=item_id,
                    label=str(case["label"]),
                    predicted=str(case["predicted"]),
                    confidence=float(case["confidence"]),
                )
            )
        if report is not None:
            report["bad_case_count"] = len(bad_cases)
        metrics = {k: float(v) for k, v in (outcome.metrics or {}).items()}
        job.metrics = metrics
        job.evaluation = report
        job.artifact = artifact
        job.status = JobStatus.succeeded
        job.requested = None
        job.worker_id = None
        job.lease_expires_at = None
        job.finished_at = job.updated_at = utcnow()
        session.add(job)
        public_artifact = {k: v for k, v in artifact.items() if k != "state_dict_key"}
        await self.rt.emit(
            session,
            TrainingJobSucceeded(
                **_base(job),
                dataset_id=job.dataset_id,
                dataset_version=job.dataset_version,
                dataset_version_id=job.dataset_version_id,
                dataset_team=await _dataset_team(session, job.dataset_version_id),
                evaluation_split=job.eval_split,
                params=dict(job.params),
                metrics=metrics,
                artifact=ModelArtifact.model_validate(public_artifact),
                parent_model_version_id=job.warm_start_model_version_id,
                bad_case_count=len(bad_cases),
            ),
            subject=job.id,
        )
        await after_trial_end(session, job)


async def _dataset_team(session: AsyncSession, version_id: str) -> str | None:
    known = await session.get(KnownVersion, version_id)
    return None if known is None else known.team


def _request(value: str | None) -> Literal["pause", "cancel"] | None:
    return cast(Literal["pause", "cancel"], value) if value in ("pause", "cancel") else None


def _aware(value: Any) -> Any:
    return aware(value)


def _base(job: TrainingJob) -> dict[str, Any]:
    return event_base(job)
