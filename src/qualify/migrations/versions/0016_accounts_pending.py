"""Accounts left to the worker: when their people changed in an ingestion that leaves account
upkeep to the worker (the HTTP API's, the event streams', the web tracker's), and the index the
worker scans

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column

from qualify.adapters.schema import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(Column("pending_since", UTCDateTime(), nullable=True))
        batch_op.create_index("ix_accounts_pending_since", ["pending_since"])


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_index("ix_accounts_pending_since")
        batch_op.drop_column("pending_since")
