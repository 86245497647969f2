"""The annotation service's long work: one Celery task that runs a pre-labelling job or a
selection job by id (``kind``, sent with the id; a job enqueued before selections existed
carries only its id and is a pre-labelling job)."""

from __future__ import annotations

import asyncio

from kiln_annotation.models import PrelabelJob, SelectionJob
from kiln_annotation.prelabel import prelabel
from kiln_annotation.selection import select_batch
from kiln_core.jobs import JobContext, LongWork, run_job

PRELABEL, SELECTION = "prelabel", "selection"


def run(context: JobContext, job_id: str, kind: str = PRELABEL) -> None:
    if kind == SELECTION:
        asyncio.run(run_job(context.new_runtime(), SelectionJob, select_batch, job_id))
    else:
        asyncio.run(run_job(context.new_runtime(), PrelabelJob, prelabel, job_id))


LONG_WORK = LongWork(task_name="kiln.annotation.prelabel", run=run, queues=("annotation",))
