"""Teams and ownership: every resource belongs to one team; its members see and change it,
other teams do not even learn it exists, and a dataset may be shared read-only.

Each service names, per path parameter, how to find the team that owns what the parameter
names (``ServiceSpec.ownership``); :func:`kiln_core.auth.require_roles` checks it after the
caller's platform role, so every route of every service is covered by the same rule. Lists
filter with :func:`visible_teams`; creation picks the team with :func:`team_for_new`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel
from pydantic import Field as PydField
from sqlalchemy import JSON, Column, Integer, String
from sqlmodel import Field, SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from kiln_core.db import UtcDateTime, utcnow
from kiln_core.errors import Forbidden, NotFound, QuotaExceeded, ValidationFailed

TEAM_ROLES = ("owner", "maintainer", "member", "annotator", "viewer")
TeamRole = Literal["owner", "maintainer", "member", "annotator", "viewer"]
assert get_args(TeamRole) == TEAM_ROLES
TEAM_NAME = r"^[a-z0-9][a-z0-9_\-]*$"

# Team roles that may change their team's resources (within what their platform role allows).
WRITERS = frozenset({"owner", "maintainer", "member"})
# Team roles that may change the team's membership.
MANAGERS = frozenset({"owner", "maintainer"})
# Platform roles whose routes are labelling work: a team's annotators may call those.
LABELLING = frozenset({"annotator", "reviewer"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Member(Protocol):
    """What the checks need of a caller (kiln_core.auth.Principal)."""

    @property
    def subject(self) -> str: ...
    @property
    def teams(self) -> Mapping[str, str]: ...
    @property
    def is_admin(self) -> bool: ...


@dataclass(frozen=True)
class Owner:
    """Who owns what a path names: its team (None: nothing by that name), and the teams it
    is shared with read-only."""

    team: str | None
    shared_with: frozenset[str] = field(default_factory=frozenset)
    # The refusal a missing resource gets, word for word, so another team's looks the same.
    not_found: str = "not found"


def missing(not_found: str) -> Owner:
    return Owner(None, not_found=not_found)


# How a service finds the owner of what a path parameter's value names. A missing resource is
# refused here as another team's is, before the body is validated, so the two answers match
# (a platform admin's request goes on to the route). None: a platform resource, no team's.
OwnerLookup = Callable[[AsyncSession, str], Awaitable[Owner | None]]


def parse_teams_claim(value: Any) -> dict[str, str]:
    """A token's teams claim: a list of team names (each as ``member``) or ``{team: role}``."""
    if value is None:
        return {}
    if isinstance(value, list) and all(isinstance(t, str) and t for t in value):
        return dict.fromkeys(value, "member")
    if isinstance(value, dict) and all(
        isinstance(t, str) and t and r in TEAM_ROLES for t, r in value.items()
    ):
        return dict(value)
    raise ValueError(
        "the teams claim must be a list of team names or an object of team → one of "
        + ", ".join(TEAM_ROLES)
    )


def visible_teams(principal: Member) -> frozenset[str] | None:
    """The teams whose resources ``principal`` may list (None: every team, for admins)."""
    return None if principal.is_admin else frozenset(principal.teams)


def team_for_new(principal: Member, requested: str | None, default_team: str) -> str:
    """The team a new resource goes to: the one named (the caller must be able to change its
    resources), else the caller's only such team; admins may name any and default to
    ``default_team``."""
    if principal.is_admin:
        return requested or default_team
    writable = sorted(t for t, role in principal.teams.items() if role in WRITERS)
    if requested is not None:
        if requested not in writable:
            raise Forbidden(
                f"you are not a member of team '{requested}' who may create in it"
                + (f"; your teams: {', '.join(writable)}" if writable else "")
            )
        return requested
    if len(writable) == 1:
        return writable[0]
    if not writable:
        raise Forbidden("you belong to no team that may create resources; ask a team's owner")
    raise ValidationFailed(f"name the team it belongs to ('team'): one of {', '.join(writable)}")


def check_access(principal: Member, owner: Owner, method: str, route_roles: frozenset[str]) -> None:
    """Raise unless ``principal`` may call a route of ``route_roles`` with ``method`` on what
    ``owner`` owns: another team's resource is 404 (its existence is not revealed), a shared
    one is readable and nothing more, and a team's viewers and annotators change nothing but
    their labelling work."""
    if principal.is_admin:
        return
    if owner.team is None:
        raise NotFound(owner.not_found)
    role = principal.teams.get(owner.team)
    reading = method in READ_METHODS
    if role is None:
        if reading and principal.teams.keys() & owner.shared_with:
            return
        if principal.teams.keys() & owner.shared_with:
            raise Forbidden(f"shared with your team read-only; team '{owner.team}' owns it")
        raise NotFound(owner.not_found)
    if reading or role in WRITERS:
        return
    if role == "annotator" and route_roles and route_roles <= LABELLING | {"admin"}:
        return
    raise Forbidden(f"your role in team '{owner.team}' ({role}) may not change its resources")


# --- the operation log of ownership changes -------------------------------------------------------


class TeamOperation(SQLModel, table=True):
    """One change of membership, sharing or quota, with who made it: appended, never changed
    (no route updates or deletes a row; on PostgreSQL a trigger refuses it too)."""

    __tablename__ = "team_operations"

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False))
    actor: str = Field(sa_column=Column(String(200), nullable=False))
    action: str = Field(sa_column=Column(String(50), nullable=False))
    team: str = Field(sa_column=Column(String(100), nullable=False, index=True))
    target: str = Field(sa_column=Column(String(200), nullable=False))
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class TeamOperationPublic(BaseModel):
    at: datetime
    actor: str = PydField(description="who made the change")
    action: str = PydField(description="what changed, e.g. member.set, dataset.shared")
    team: str = PydField(description="the team it concerns")
    target: str = PydField(description="the member, dataset or quota changed")
    detail: dict[str, Any] = PydField(description="the values after the change")


def record_operation(
    session: AsyncSession, actor: str, action: str, team: str, target: str, **detail: Any
) -> None:
    session.add(TeamOperation(actor=actor, action=action, team=team, target=target, detail=detail))


def create_team_operations_table(op: Any) -> None:
    """A service's migration adds the log with this (and its append-only guard on PostgreSQL)."""
    import sqlalchemy as sa

    op.create_table(
        "team_operations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("team", sa.String(100), nullable=False, index=True),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION team_operations_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'team_operations is append-only'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER team_operations_append_only BEFORE UPDATE OR DELETE ON "
            "team_operations FOR EACH ROW EXECUTE FUNCTION team_operations_append_only()"
        )


def drop_team_operations_table(op: Any) -> None:
    op.drop_table("team_operations")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS team_operations_append_only()")


def add_team_column(op: Any, table: str, default: str = "default") -> None:
    """Give an existing table its owning team; rows made before teams go to ``default``."""
    import sqlalchemy as sa

    op.add_column(table, sa.Column("team", sa.String(100), nullable=False, server_default=default))
    op.create_index(f"ix_{table}_team", table, ["team"])


# --- Kiln's own membership -----------------------------------------------------------------------
# The training service owns who is in which team (its /v1/teams/{name}/members routes) and
# announces each change; every service keeps the same table from those events, so it checks a
# caller's teams locally, with no call on the request path. A token that carries the teams
# claim (an identity provider that manages groups) is taken at its word instead.


class Membership(SQLModel, table=True):
    """One person's role in one team, as this service last heard it."""

    __tablename__ = "memberships"

    team: str = Field(sa_column=Column(String(100), primary_key=True))
    subject: str = Field(sa_column=Column(String(200), primary_key=True))
    role: str = Field(sa_column=Column(String(20), nullable=False))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


def create_memberships_table(op: Any) -> None:
    import sqlalchemy as sa

    op.create_table(
        "memberships",
        sa.Column("team", sa.String(100), primary_key=True),
        sa.Column("subject", sa.String(200), primary_key=True, index=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


async def memberships_of(session: AsyncSession, subject: str) -> dict[str, str]:
    """``subject``'s teams and roles in them, from this service's copy."""
    from sqlmodel import select

    rows = await session.exec(select(Membership).where(Membership.subject == subject))
    return {m.team: m.role for m in rows.all()}


async def apply_membership(
    session: AsyncSession, team: str, subject: str, role: str | None
) -> None:
    """Make this service's copy say ``subject`` has ``role`` in ``team`` (None: not in it).
    Setting the whole state makes a repeated event harmless."""
    row = await session.get(Membership, (team, subject))
    if role is None:
        if row is not None:
            await session.delete(row)
        return
    if row is None:
        row = Membership(team=team, subject=subject, role=role)
    row.role, row.updated_at = role, utcnow()
    session.add(row)


class TeamLimits(SQLModel, table=True):
    """A team's counted limits (``{"endpoints": 3, ...}``), as this service last heard them
    from the training service, which owns teams. The row is what concurrent creations in the
    team lock, so they are counted one at a time."""

    __tablename__ = "team_limits"

    team: str = Field(sa_column=Column(String(100), primary_key=True))
    limits: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )


def create_team_limits_table(op: Any) -> None:
    import sqlalchemy as sa

    op.create_table(
        "team_limits",
        sa.Column("team", sa.String(100), primary_key=True),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


async def apply_limits(session: AsyncSession, team: str, limits: dict[str, int]) -> None:
    row = await session.get(TeamLimits, team) or TeamLimits(team=team)
    row.limits, row.updated_at = dict(limits), utcnow()
    session.add(row)


async def locked_limits(session: AsyncSession, team: str) -> dict[str, int]:
    """The team's limits, its row locked until the transaction ends (PostgreSQL; SQLite's one
    writer at a time does the same for a write transaction)."""
    row = await session.get(TeamLimits, team, with_for_update=True)
    return dict(row.limits) if row is not None else {}


def within(limits: dict[str, int], quota: str, team: str, usage: int, adding: int) -> None:
    """Refuse ``adding`` more of ``quota`` past the team's limit, naming usage and limit."""
    limit = limits.get(quota)
    if limit is not None and usage + adding > limit:
        raise QuotaExceeded(
            f"team {team} uses {usage} {quota.replace('_', ' ')} of its limit {limit}",
            quota=quota,
            team=team,
            usage=usage,
            limit=limit,
        )
