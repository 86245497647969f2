"""The training service: training jobs, trials, quotas, the fair-share queue, checkpoints and
metrics history."""

from pathlib import Path

from kiln_core.ping import ping_handlers, ping_router
from kiln_core.service import ServiceSpec

SERVICE = ServiceSpec(
    name="training",
    description=" ".join((__doc__ or "").split()),
    migrations=Path(__file__).parent / "migrations",
    routers=[ping_router("training")],
    handlers={**ping_handlers("training")},
)
