"""The task queue's indexes: a lease reads the first waiting task in priority order from an
index instead of sorting every task of the project.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The lease's order (priority first, highest first; then oldest), behind its equalities.
    op.create_index(
        "ix_tasks_queue",
        "tasks",
        ["project_id", "status", sa.text("priority DESC"), "created_at", "id"],
    )
    # Leases past their expiry, found without reading the live ones.
    op.create_index("ix_tasks_lease_expiry", "tasks", ["project_id", "status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_lease_expiry", "tasks")
    op.drop_index("ix_tasks_queue", "tasks")
