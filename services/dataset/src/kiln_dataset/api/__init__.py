"""REST API of the dataset service, under ``/v1``: one module per resource."""

from fastapi import APIRouter

from kiln_dataset.api import datasets, drafts, jobs, media, sharing, versions

router = APIRouter()
for resource in (datasets, drafts, jobs, versions, media, sharing):
    router.include_router(resource.router)

__all__ = ["router"]
