"""Jobs remember the trace they were submitted in.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("training_jobs", sa.Column("traceparent", sa.String(64)))


def downgrade() -> None:
    op.drop_column("training_jobs", "traceparent")
