"""The registry service: registered models, versions, aliases and stages, lineage, audit log,
promotion policies, compression and edge pull."""

from __future__ import annotations

from pathlib import Path

from kiln_core.ping import ping_router
from kiln_core.service import ServiceSpec
from kiln_registry import api
from kiln_registry.handlers import HANDLERS
from kiln_registry.jobs import LONG_WORK
from kiln_registry.models import Job
from kiln_registry.ownership import OWNERSHIP

SERVICE = ServiceSpec(
    name="registry",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("registry"), api.router],
    handlers=HANDLERS,
    long_work=LONG_WORK,
    ownership=OWNERSHIP,
    job_tables=(Job,),
)
