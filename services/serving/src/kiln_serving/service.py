"""The serving service: deployments, traffic splits, Triton model state and prediction logs."""

from pathlib import Path

from kiln_core.ping import ping_handlers, ping_router
from kiln_core.service import ServiceSpec

SERVICE = ServiceSpec(
    name="serving",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("serving")],
    handlers={**ping_handlers("serving")},
)
