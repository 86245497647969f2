"""The dataset service: datasets, immutable versions, content-addressed items, splits, lineage,
augmentation and quality reports."""

from __future__ import annotations

from pathlib import Path

from kiln_core.ping import ping_router
from kiln_core.service import ServiceSpec
from kiln_dataset import api
from kiln_dataset.active_learning import flush_flagged_inputs
from kiln_dataset.handlers import HANDLERS
from kiln_dataset.models import Job
from kiln_dataset.ownership import OWNERSHIP
from kiln_dataset.runners import LONG_WORK

SERVICE = ServiceSpec(
    name="dataset",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("dataset"), api.router],
    handlers=HANDLERS,
    workers=[flush_flagged_inputs],
    long_work=LONG_WORK,
    ownership=OWNERSHIP,
    job_tables=(Job,),
)
