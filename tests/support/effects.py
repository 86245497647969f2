"""A test table whose rows are the observable effects of event handlers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Integer, String
from sqlmodel import Field, SQLModel, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.catalog import PingSent
from kiln_core.events import CloudEvent


class Effect(SQLModel, table=True):
    __tablename__ = "effects"

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    ping_id: str = Field(sa_column=Column(String(64), nullable=False))
    event_id: str = Field(sa_column=Column(String(64), nullable=False))


def create_effects_table(op: Any) -> None:
    import sqlalchemy as sa

    op.create_table(
        "effects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ping_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
    )


async def record_effect(session: AsyncSession, event: CloudEvent, data: PingSent) -> None:
    session.add(Effect(ping_id=data.ping_id, event_id=event.id))


async def count_effects(db: Any, ping_id: str | None = None) -> int:
    async with db.session() as session:
        query = select(func.count()).select_from(Effect)
        if ping_id is not None:
            query = query.where(Effect.ping_id == ping_id)
        return int((await session.exec(query)).one())
