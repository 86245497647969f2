"""Endpoints and deployments.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "endpoints",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False, index=True),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("candidate_alias", sa.String(100), nullable=False),
        sa.Column("strategy", sa.String(20), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("stable_id", sa.String(32)),
        sa.Column("candidate_id", sa.String(32)),
        sa.Column("candidate_weight", sa.Float, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("endpoint", sa.String(63), nullable=False, index=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("version_id", sa.String(64), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("triton_model", sa.String(200), nullable=False, unique=True),
        sa.Column("artifact", sa.JSON, nullable=False),
        sa.Column("dataset_id", sa.String(64)),
        sa.Column("state", sa.String(20), index=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("load_seconds", sa.Float),
        sa.Column("analysis", sa.JSON, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )


def downgrade() -> None:
    op.drop_table("deployments")
    op.drop_table("endpoints")
