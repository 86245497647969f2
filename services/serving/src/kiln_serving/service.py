"""The serving service: endpoints over Triton, deployments of promoted model versions, traffic
strategies (direct, canary with automatic analysis, shadow, A/B), prediction logging."""

from pathlib import Path

from kiln_core.ping import ping_router
from kiln_core.service import ServiceSpec
from kiln_serving import api, oip
from kiln_serving.handlers import HANDLERS
from kiln_serving.ownership import OWNERSHIP

SERVICE = ServiceSpec(
    name="serving",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    # The API router's lifespan runs the Triton client and controller in every API process.
    routers=[ping_router("serving"), api.router, oip.router],
    handlers=HANDLERS,
    ownership=OWNERSHIP,
)
