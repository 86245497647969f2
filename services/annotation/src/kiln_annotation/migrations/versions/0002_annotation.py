"""Projects, tasks, audit trail and label commits.

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
        "projects",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("dataset_id", sa.String(32), nullable=False, index=True),
        sa.Column("label_schema", sa.JSON, nullable=False),
        sa.Column("auto_annotate", sa.Boolean, nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("overlap", sa.Integer, nullable=False),
        sa.Column("review_levels", sa.Integer, nullable=False),
        sa.Column("lease_seconds", sa.Integer, nullable=False),
        sa.Column("prelabel_endpoint", sa.String(200)),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(32), nullable=False, index=True),
        sa.Column("group_id", sa.String(32), nullable=False, index=True),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("dataset_version", sa.Integer, nullable=False),
        sa.Column("items", sa.JSON, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, index=True),
        sa.Column("source", sa.String(30), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("assignee", sa.String(200), index=True),
        _ts("lease_expires_at", True),
        sa.Column("review_level", sa.Integer, nullable=False),
        sa.Column("labels", sa.JSON),
        sa.Column("prelabels", sa.JSON),
        sa.Column("gold_labels", sa.JSON),
        sa.Column("commit_id", sa.String(32)),
        _ts("created_at"),
        _ts("updated_at"),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.String(32), nullable=False, index=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        _ts("at"),
    )
    op.create_table(
        "commits",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(32), nullable=False, index=True),
        sa.Column("dataset_version", sa.Integer, nullable=False),
        sa.Column("manifest_key", sa.String(500), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("task_count", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("created_at"),
    )


def downgrade() -> None:
    for table in ("commits", "audit", "tasks", "projects"):
        op.drop_table(table)
