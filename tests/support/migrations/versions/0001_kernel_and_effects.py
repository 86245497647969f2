"""Kernel tables plus the test effects table.

Revision ID: 0001
"""

from alembic import op

from kiln_core.kernel_tables import create_kernel_tables
from tests.support.effects import create_effects_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kernel_tables(op)
    create_effects_table(op)


def downgrade() -> None:
    op.drop_table("effects")
