"""Teams: every registered model belongs to one.

Revision ID: 0003
"""

from alembic import op

from kiln_core.teams import add_team_column

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_team_column(op, "registered_models")


def downgrade() -> None:
    op.drop_index("ix_registered_models_team", "registered_models")
    op.drop_column("registered_models", "team")
