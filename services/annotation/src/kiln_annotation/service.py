"""The annotation service's parts: routes, event handlers, migrations."""

from pathlib import Path

from kiln_core.ping import ping_handlers, ping_router
from kiln_core.service import ServiceSpec

SERVICE = ServiceSpec(
    name="annotation",
    description="Labelling projects, schemas, tasks, assignments, reviews, annotator statistics and pre-labels.",
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("annotation")],
    handlers={**ping_handlers("annotation")},
)
