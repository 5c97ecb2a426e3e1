"""indexes on the leads' source and channel, whose values the funnel's filters and the lead list offer

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_leads_source"), "leads", ["source"])
    op.create_index(op.f("ix_leads_channel"), "leads", ["channel"])


def downgrade() -> None:
    op.drop_index(op.f("ix_leads_channel"), table_name="leads")
    op.drop_index(op.f("ix_leads_source"), table_name="leads")
