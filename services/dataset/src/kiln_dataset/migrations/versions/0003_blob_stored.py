"""Blobs remember whether their bytes reached the object store.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "blobs", sa.Column("stored", sa.Boolean, nullable=False, server_default=sa.false())
    )
    # Blobs recorded before this revision were stored right after being recorded.
    op.execute("UPDATE blobs SET stored = true")


def downgrade() -> None:
    op.drop_column("blobs", "stored")
