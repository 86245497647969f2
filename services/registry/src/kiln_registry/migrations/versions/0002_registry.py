"""Registered models, versions, aliases, promotion policies, operation log and jobs.

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
        "registered_models",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("task_type", sa.String(30)),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("next_version", sa.Integer, nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model_id", sa.String(32), nullable=False, index=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("evaluation_split", sa.String(100)),
        sa.Column("artifact", sa.JSON, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("lineage", sa.JSON, nullable=False),
        sa.Column("training_job_id", sa.String(64), unique=True),
        sa.Column("compression", sa.JSON),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.UniqueConstraint("model_id", "number", name="uq_model_versions_number"),
    )
    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("version_id", sa.String(32), nullable=False, index=True),
        sa.Column("updated_by", sa.String(200), nullable=False),
        _ts("updated_at"),
    )
    op.create_table(
        "promotion_policies",
        sa.Column("model_id", sa.String(32), primary_key=True),
        sa.Column("rules", sa.JSON, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        _ts("updated_at"),
    )
    op.create_table(
        "model_operations",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("model_id", sa.String(32), nullable=False, index=True),
        sa.Column("version_id", sa.String(32), index=True),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        _ts("at"),
    )
    op.create_table(
        "registry_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("model_id", sa.String(32), nullable=False, index=True),
        sa.Column("version_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("error", sa.JSON),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
    )


def downgrade() -> None:
    for table in (
        "registry_jobs",
        "model_operations",
        "promotion_policies",
        "model_aliases",
        "model_versions",
        "registered_models",
    ):
        op.drop_table(table)
