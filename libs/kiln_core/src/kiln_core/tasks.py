"""Long work on Celery: one app per service, broker from ``KILN_CELERY_BROKER_URL``.

Task state lives in the owning service's database (its ``jobs`` table), never in a Celery
result backend. Tasks are plain functions of a job id, so a redelivered task (acks late, worker
lost) picks the job up again from what the database says. On the embedded defaults
(``memory://``) no worker runs: ``kiln_core.jobs.JobQueue`` runs the work on a small thread
pool in the process that enqueued it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, signals

from kiln_core.metrics import CELERY_TASK_SECONDS, CELERY_TASKS
from kiln_core.settings import Settings, get_settings

log = logging.getLogger(__name__)


def make_celery(service: str, settings: Settings | None = None) -> Celery:
    """The Celery app of ``service``: its queue is named after it."""
    settings = settings or get_settings()
    app = Celery(f"kiln-{service}", broker=settings.celery_broker_url)
    app.conf.update(
        task_default_queue=service,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A task is acknowledged only once it finished, so a killed worker's task runs again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        broker_transport_options={"visibility_timeout": 6 * 3600},
    )
    if is_embedded_broker(app):
        # The in-memory transport polls; keep job pickup snappy in the quickstart.
        app.conf.broker_transport_options = {"polling_interval": 0.05}
    return app


def is_embedded_url(broker_url: str) -> bool:
    """Whether ``broker_url`` is the in-process broker of the embedded defaults."""
    return broker_url.startswith("memory://")


def is_embedded_broker(app: Celery) -> bool:
    return is_embedded_url(str(app.conf.broker_url or ""))


_OUTCOMES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}


def count_task_outcomes() -> None:
    """Export, from this worker process, each task's outcome and time (Celery's signals);
    idempotent."""
    started: dict[str, float] = {}

    def prerun(task_id: str | None = None, **_: Any) -> None:
        if task_id is not None:
            started[task_id] = time.perf_counter()

    def postrun(
        task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
    ) -> None:
        name = getattr(task, "name", "unknown")
        began = started.pop(task_id or "", None)
        if began is not None:
            CELERY_TASK_SECONDS.labels(name).observe(time.perf_counter() - began)
        CELERY_TASKS.labels(name, _OUTCOMES.get(state or "", (state or "unknown").lower())).inc()

    def rejected(message: Any = None, **_: Any) -> None:
        headers = getattr(message, "headers", None) or {}
        CELERY_TASKS.labels(str(headers.get("task", "unknown")), "rejected").inc()

    signals.task_prerun.connect(prerun, weak=False, dispatch_uid="kiln-task-prerun")
    signals.task_postrun.connect(postrun, weak=False, dispatch_uid="kiln-task-postrun")
    signals.task_rejected.connect(rejected, weak=False, dispatch_uid="kiln-task-rejected")
