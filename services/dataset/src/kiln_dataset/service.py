"""The dataset service: datasets, immutable versions, content-addressed items, splits, lineage,
augmentation and quality reports."""

from pathlib import Path

from kiln_core.ping import ping_handlers, ping_router
from kiln_core.service import ServiceSpec

SERVICE = ServiceSpec(
    name="dataset",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("dataset")],
    handlers={**ping_handlers("dataset")},
)
