"""Datasets, versions, blob references, drafts and jobs.

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
        "datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, index=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("task_type", sa.String(30), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("source_channel", sa.String(100), index=True),
        sa.Column("product_standard", sa.String(20)),
        sa.Column("media_format", sa.String(50)),
        sa.Column("usability", sa.String(20)),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("next_version", sa.Integer, nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("deleted_at", True),
        _ts("purge_after", True),
    )
    # A name is unique among datasets that are not deleted.
    op.create_index(
        "uq_datasets_live_name",
        "datasets",
        ["name"],
        unique=True,
        postgresql_where=sa.text("status <> 'deleted'"),
        sqlite_where=sa.text("status <> 'deleted'"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(32), nullable=False, index=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("parent_id", sa.String(32)),
        sa.Column("manifest_key", sa.String(500), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("labelled_count", sa.Integer, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("categories", sa.JSON),
        sa.Column("stats", sa.JSON),
        sa.Column("lineage", sa.JSON),
        sa.Column("quality", sa.JSON),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        _ts("created_at"),
        _ts("deleted_at", True),
        sa.UniqueConstraint("dataset_id", "number", name="uq_versions_number"),
    )
    op.create_table(
        "version_blobs",
        sa.Column("version_id", sa.String(32), primary_key=True),
        sa.Column("blob", sa.String(64), primary_key=True, index=True),
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(100), nullable=False),
        _ts("created_at"),
        _ts("last_seen_at"),
    )
    op.create_table(
        "drafts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(32), nullable=False, index=True),
        sa.Column("base_version", sa.Integer),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "draft_items",
        sa.Column("draft_id", sa.String(32), primary_key=True),
        sa.Column("item_id", sa.String(500), primary_key=True),
        sa.Column("blob", sa.String(64), nullable=False, index=True),
        sa.Column("record", sa.JSON, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("dataset_id", sa.String(32), index=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("done", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
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
        "jobs",
        "draft_items",
        "drafts",
        "blobs",
        "version_blobs",
        "versions",
        "datasets",
    ):
        op.drop_table(table)
