"""Teams: every project belongs to one.

Revision ID: 0005
"""

from alembic import op

from kiln_core.teams import add_team_column

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_team_column(op, "projects")


def downgrade() -> None:
    op.drop_index("ix_projects_team", "projects")
    op.drop_column("projects", "team")
