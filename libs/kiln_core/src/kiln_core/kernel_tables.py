"""Tables every service schema has: outbox, inbox and the skeleton ping log.

A service's first Alembic revision calls :func:`create_kernel_tables`; later kernel changes
ship as helper functions that each service's new revision calls.
"""

from __future__ import annotations

from typing import Any

from kiln_core.inbox import create_inbox_table
from kiln_core.outbox import create_outbox_table
from kiln_core.ping import create_ping_tables


def create_kernel_tables(op: Any) -> None:
    create_outbox_table(op)
    create_inbox_table(op)
    create_ping_tables(op)


def drop_kernel_tables(op: Any) -> None:
    for table in ("ping_received", "inbox", "outbox"):
        op.drop_table(table)
