"""Teams: every endpoint belongs to one.

Revision ID: 0004
"""

from alembic import op

from kiln_core.teams import add_team_column

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_team_column(op, "endpoints")


def downgrade() -> None:
    op.drop_index("ix_endpoints_team", "endpoints")
    op.drop_column("endpoints", "team")
