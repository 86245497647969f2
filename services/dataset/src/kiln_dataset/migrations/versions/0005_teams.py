"""Teams: every dataset belongs to one and may be shared read-only; the ownership log.

And this service's copy of who is in which team (kiln_core.teams).

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

from kiln_core.teams import (
    add_team_column,
    create_memberships_table,
    create_team_limits_table,
    create_team_operations_table,
    drop_team_operations_table,
)

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_memberships_table(op)
    create_team_limits_table(op)
    add_team_column(op, "datasets")
    # A name is unique among the team's datasets that are not deleted (another team's name
    # clashing would tell of a dataset the caller may not see).
    op.drop_index("uq_datasets_live_name", "datasets")
    op.create_index(
        "uq_datasets_live_team_name",
        "datasets",
        ["team", "name"],
        unique=True,
        postgresql_where=sa.text("status <> 'deleted'"),
        sqlite_where=sa.text("status <> 'deleted'"),
    )
    op.add_column(
        "datasets", sa.Column("shared_with", sa.JSON, nullable=False, server_default="[]")
    )
    create_team_operations_table(op)


def downgrade() -> None:
    op.drop_table("team_limits")
    op.drop_table("memberships")
    drop_team_operations_table(op)
    op.drop_column("datasets", "shared_with")
    op.drop_index("uq_datasets_live_team_name", "datasets")
    op.create_index(
        "uq_datasets_live_name",
        "datasets",
        ["name"],
        unique=True,
        postgresql_where=sa.text("status <> 'deleted'"),
        sqlite_where=sa.text("status <> 'deleted'"),
    )
    op.drop_index("ix_datasets_team", "datasets")
    op.drop_column("datasets", "team")
