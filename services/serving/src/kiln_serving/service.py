"""The serving service's parts: routes, event handlers, migrations."""

from pathlib import Path

from kiln_core.ping import ping_handlers, ping_router
from kiln_core.service import ServiceSpec

SERVICE = ServiceSpec(
    name="serving",
    description="Deployments, traffic splits, Triton model state and prediction logs.",
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("serving")],
    handlers={**ping_handlers("serving")},
)
