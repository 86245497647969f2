"""The dataset service under test, on the embedded defaults and on the real stack
(PostgreSQL in a throw-away schema, MinIO, Kafka in a throw-away namespace)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import text

from kiln_core.db import Database
from kiln_core.service import ServiceRuntime
from kiln_core.settings import Settings
from tests.support.apps import running_service


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(params=["embedded", pytest.param("stack", marks=pytest.mark.integration)])
def service_settings(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> Settings:
    if request.param == "embedded":
        return Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
            bus_url=f"embedded://d{unique}",
            storage_url=f"file://{tmp_path}/store",
            celery_broker_url="memory://",
            auth_required=True,
        )
    return Settings(
        database_url=request.getfixturevalue("pg_url"),
        db_schema_prefix=f"t{unique}_",
        bus_url=request.getfixturevalue("kafka_url"),
        # A bucket of its own, so store listings in assertions see only this test's objects.
        storage_url=request.getfixturevalue("s3_url").replace("/kiln?", f"/t{unique}?"),
        celery_broker_url="memory://",
        auth_required=True,
    )


@pytest.fixture
async def dataset_service(
    service_settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceRuntime]]:
    from kiln_dataset.service import SERVICE

    async with running_service(SERVICE, service_settings) as pair:
        yield pair
    if service_settings.db_schema_prefix:
        db = Database(service_settings.database_url, schema="public")
        async with db.engine.begin() as conn:
            await conn.execute(
                text(f'DROP SCHEMA IF EXISTS "{service_settings.db_schema_prefix}dataset" CASCADE')
            )
        await db.dispose()
