"""Teams: every endpoint belongs to one.

And this service's copy of who is in which team (kiln_core.teams).

Revision ID: 0004
"""

from alembic import op

from kiln_core.teams import add_team_column, create_memberships_table, create_team_limits_table

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_memberships_table(op)
    create_team_limits_table(op)
    add_team_column(op, "endpoints")


def downgrade() -> None:
    op.drop_table("team_limits")
    op.drop_table("memberships")
    op.drop_index("ix_endpoints_team", "endpoints")
    op.drop_column("endpoints", "team")
