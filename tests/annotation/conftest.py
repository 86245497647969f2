"""Annotation and dataset services together in one process, on the embedded defaults and on
the real stack, talking through the bus as in production."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from sqlalchemy import text

from kiln_core.db import Database
from kiln_core.settings import Settings
from tests.dataset.conftest import service_settings  # noqa: F401 - same two backends
from tests.support.apps import running_service


@pytest.fixture
async def services(service_settings: Settings) -> AsyncIterator[dict[str, Any]]:  # noqa: F811
    from kiln_annotation.service import SERVICE as ANNOTATION
    from kiln_dataset.service import SERVICE as DATASET

    async with AsyncExitStack() as stack:
        dataset = await stack.enter_async_context(running_service(DATASET, service_settings))
        annotation = await stack.enter_async_context(running_service(ANNOTATION, service_settings))
        yield {
            "dataset": dataset[0],
            "annotation": annotation[0],
            "annotation_runtime": annotation[1],
            "settings": service_settings,
        }
    if service_settings.db_schema_prefix:
        db = Database(service_settings.database_url, schema="public")
        async with db.engine.begin() as conn:
            for name in ("dataset", "annotation"):
                await conn.execute(
                    text(
                        f'DROP SCHEMA IF EXISTS "{service_settings.db_schema_prefix}{name}" CASCADE'
                    )
                )
        await db.dispose()
