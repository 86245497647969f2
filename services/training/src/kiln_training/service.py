"""The training service: training jobs, trials, quotas, the fair-share queue, checkpoints and
metrics history."""

from __future__ import annotations

from pathlib import Path

from kiln_core.ping import ping_router
from kiln_core.service import ServiceSpec
from kiln_training import api
from kiln_training.executor import scheduler_loop
from kiln_training.handlers import HANDLERS
from kiln_training.models import TrainingJob
from kiln_training.ownership import OWNERSHIP
from kiln_training.tasks import LONG_WORK

SERVICE = ServiceSpec(
    name="training",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("training"), api.router],
    handlers=HANDLERS,
    workers=[scheduler_loop],
    long_work=LONG_WORK,
    ownership=OWNERSHIP,
    job_tables=(TrainingJob,),
)
