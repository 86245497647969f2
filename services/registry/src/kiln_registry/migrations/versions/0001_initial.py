"""Initial schema: the kernel tables (outbox, inbox, ping log).

Revision ID: 0001
"""

from alembic import op

from kiln_core.kernel_tables import create_kernel_tables, drop_kernel_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kernel_tables(op)


def downgrade() -> None:
    drop_kernel_tables(op)
