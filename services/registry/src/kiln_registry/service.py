"""The registry service: registered models, versions, aliases and stages, lineage, audit log and
promotion policies."""

from pathlib import Path

from kiln_core.ping import ping_handlers, ping_router
from kiln_core.service import ServiceSpec

SERVICE = ServiceSpec(
    name="registry",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("registry")],
    handlers={**ping_handlers("registry")},
)
