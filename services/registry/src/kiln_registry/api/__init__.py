"""REST API of the registry service, under ``/v1``: one module per resource."""

from fastapi import APIRouter

from kiln_registry.api import aliases, jobs, log, policies, registered, versions

router = APIRouter()
for resource in (registered, versions, aliases, policies, log, jobs):
    router.include_router(resource.router)

__all__ = ["router"]
