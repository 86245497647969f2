"""Teams: counted limits, who may train on a dataset version, and the ownership log.

And this service's copy of who is in which team (kiln_core.teams).

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

from kiln_core.teams import (
    create_memberships_table,
    create_team_limits_table,
    create_team_operations_table,
    drop_team_operations_table,
)

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_memberships_table(op)
    create_team_limits_table(op)
    op.add_column("teams", sa.Column("limits", sa.JSON, nullable=False, server_default="{}"))
    op.add_column(
        "known_versions",
        sa.Column("team", sa.String(100), nullable=False, server_default="default"),
    )
    op.add_column(
        "known_versions", sa.Column("shared_with", sa.JSON, nullable=False, server_default="[]")
    )
    create_team_operations_table(op)


def downgrade() -> None:
    op.drop_table("team_limits")
    op.drop_table("memberships")
    drop_team_operations_table(op)
    op.drop_column("known_versions", "shared_with")
    op.drop_column("known_versions", "team")
    op.drop_column("teams", "limits")
