"""several leads per person: leads.person_email names the person of every journey

Revision ID: 0009
Revises: 0008

Existing workspaces: every lead is its person's only journey, so `person_email` is its email.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("leads", sa.Column("person_email", sa.String(length=254), nullable=True))
    op.create_index("ix_leads_person_email", "leads", ["person_email"])
    op.execute("UPDATE leads SET person_email = email WHERE email IS NOT NULL")


def downgrade() -> None:
    op.drop_index("ix_leads_person_email", table_name="leads")
    with op.batch_alter_table("leads") as batch:
        batch.drop_column("person_email")
