"""The annotation service: labelling projects, schemas, tasks, assignments, reviews, annotator
statistics and pre-labels."""

from pathlib import Path

from kiln_annotation import api
from kiln_annotation.handlers import HANDLERS
from kiln_annotation.jobs import LONG_WORK
from kiln_annotation.models import PrelabelJob, SelectionJob
from kiln_annotation.ownership import OWNERSHIP
from kiln_annotation.workflow import sweep_uncommitted_versions
from kiln_core.ping import ping_router
from kiln_core.service import ServiceSpec

SERVICE = ServiceSpec(
    name="annotation",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("annotation"), api.router],
    handlers=HANDLERS,
    long_work=LONG_WORK,
    workers=[sweep_uncommitted_versions],
    ownership=OWNERSHIP,
    job_tables=(PrelabelJob, SelectionJob),
)
