"""kiln_core.db on SQLite: a number past 64 bits is the caller's invalid value, and timestamps
come back with their UTC offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text

from kiln_core.db import Database, UtcDateTime
from kiln_core.errors import InvalidValue


async def test_integer_past_64_bits_is_an_invalid_value_on_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/a.db", schema="a")
    try:
        async with db.session() as session:
            with pytest.raises(InvalidValue) as info:
                await session.execute(text("SELECT :x"), {"x": 2**63})
        assert info.value.status == 422 and info.value.problem()["type"].endswith("invalid-value")
    finally:
        await db.dispose()


async def test_timestamps_read_back_from_sqlite_are_aware_utc(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/a.db", schema="a")
    table = Table(
        "t", MetaData(), Column("id", Integer, primary_key=True), Column("at", UtcDateTime())
    )
    at = datetime(2026, 12, 3, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    try:
        async with db.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
            await conn.execute(insert(table).values(id=1, at=at))
        async with db.begin() as conn:
            (got,) = (await conn.execute(select(table.c.at))).one()
        assert got == at and got.tzinfo is UTC and got.isoformat().endswith("+00:00")
    finally:
        await db.dispose()
