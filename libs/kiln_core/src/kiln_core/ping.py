"""The skeleton event every service has: a ping one service sends and every other records.

It proves the whole path — HTTP, outbox, relay, bus, inbox, one trace — for each service.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel
from pydantic import Field as PydField
from sqlalchemy import Column, String, Text
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.auth import require_roles
from kiln_core.catalog import PING_EVENTS, PingSent
from kiln_core.db import UtcDateTime, utcnow
from kiln_core.events import SERVICES, CloudEvent
from kiln_core.http import SessionDep, get_runtime
from kiln_core.inbox import EventHandler
from kiln_core.telemetry import trace_id_of


class PingReceived(SQLModel, table=True):
    __tablename__ = "ping_received"

    event_id: str = Field(sa_column=Column(String(64), primary_key=True))
    ping_id: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    origin: str = Field(sa_column=Column(String(50), nullable=False))
    message: str = Field(default="", sa_column=Column(Text, nullable=False))
    trace_id: str | None = Field(default=None, sa_column=Column(String(32)))
    received_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(UtcDateTime(), nullable=False),
    )


def create_ping_tables(op: Any) -> None:
    import sqlalchemy as sa

    op.create_table(
        "ping_received",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("ping_id", sa.String(64), nullable=False, index=True),
        sa.Column("origin", sa.String(50), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


class PingRequest(BaseModel):
    message: str = PydField(default="", max_length=1000)


class PingAccepted(BaseModel):
    ping_id: str
    event_id: str
    event_type: str
    trace_id: str | None


def ping_router(service: str) -> APIRouter:
    router = APIRouter(prefix="/v1/pings", tags=["pings"])
    event_cls = PING_EVENTS[service]

    @router.post(
        "",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=PingAccepted,
        dependencies=[require_roles("admin", "ml-engineer", "data-engineer")],
    )
    async def send_ping(body: PingRequest, request: Request) -> PingAccepted:
        """Send a ping from this service to every other service (through the outbox)."""
        runtime = get_runtime(request)
        ping_id = uuid.uuid4().hex
        data = event_cls(ping_id=ping_id, origin=service, message=body.message, sent_at=utcnow())
        async with runtime.db.transaction() as session:
            event = await runtime.emit(session, data, subject=ping_id)
        return PingAccepted(
            ping_id=ping_id, event_id=event.id, event_type=event.type, trace_id=trace_id_of()
        )

    @router.get("/received", response_model=list[PingReceived])
    async def received_pings(
        session: SessionDep,
        ping_id: str | None = Query(default=None, max_length=64),
        _viewer: object = require_roles(
            "viewer", "admin", "ml-engineer", "data-engineer", "annotator", "reviewer"
        ),
    ) -> list[PingReceived]:
        """Pings this service has received from the others, newest first."""
        query = select(PingReceived).order_by(col(PingReceived.received_at).desc()).limit(100)
        if ping_id:
            query = query.where(PingReceived.ping_id == ping_id)
        return list((await session.exec(query)).all())

    return router


async def record_ping(session: AsyncSession, event: CloudEvent, data: PingSent) -> None:
    session.add(
        PingReceived(
            event_id=event.id,
            ping_id=data.ping_id,
            origin=data.origin,
            message=data.message,
            trace_id=trace_id_of(),
        )
    )


def ping_handlers(service: str) -> dict[str, EventHandler]:
    """Every other service's ping, recorded by this one."""
    return {PING_EVENTS[s].event_type: record_ping for s in SERVICES if s != service}
