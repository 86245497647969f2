"""Inputs of flagged predictions waiting to join their dataset (active learning).

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flagged_inputs",
        sa.Column("prediction_id", sa.String(64), primary_key=True),
        sa.Column("dataset_id", sa.String(32), nullable=False, index=True),
        sa.Column("blob", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(100), nullable=False),
        sa.Column("prediction", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("version", sa.Integer),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("flagged_inputs")
