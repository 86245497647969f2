"""``python -m kiln_training run-job <job id>``: run one started job in this process (the
entry point of a Kubernetes training pod; see ``k8s.py``)."""

from __future__ import annotations

import asyncio
import sys

from kiln_core.jobs import JobContext
from kiln_core.service import ServiceRuntime
from kiln_core.settings import get_settings
from kiln_training.lifecycle import get_job
from kiln_training.service import SERVICE
from kiln_training.tasks import JobRun


async def _current_attempt(context: JobContext, job_id: str) -> int:
    runtime = context.new_runtime()
    try:
        async with runtime.db.session() as session:
            return (await get_job(session, job_id)).attempts
    finally:
        await runtime.db.dispose()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "run-job":
        print("usage: python -m kiln_training run-job <job id>", file=sys.stderr)
        return 2
    # This process's wiring root: the pod runs one job with the settings of its environment.
    settings = get_settings()
    context = JobContext(settings, lambda: ServiceRuntime(SERVICE, settings))
    job_id = argv[1]
    JobRun(context, job_id, asyncio.run(_current_attempt(context, job_id))).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
