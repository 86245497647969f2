"""The annotation service: labelling projects, schemas, tasks, assignments, reviews, annotator
statistics and pre-labels."""

from pathlib import Path

from kiln_core.ping import ping_handlers, ping_router
from kiln_core.service import ServiceSpec

SERVICE = ServiceSpec(
    name="annotation",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("annotation")],
    handlers={**ping_handlers("annotation")},
)
