"""CRM sync: connected CRMs, the CRM records linked to leads, and the push outbox

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from qualify.adapters.schema import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "crm_connections",
        sa.Column("crm", sa.String(length=40), nullable=False),
        sa.Column("mapping", sa.Text(), nullable=False),
        sa.Column("mapping_name", sa.String(length=300), nullable=False),
        sa.Column("account", sa.String(length=300), nullable=True),
        sa.Column("push_to", sa.String(length=10), nullable=False),
        sa.Column("push_accounts", sa.String(length=80), nullable=True),
        sa.Column("cursors", _json(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("pulled_at", UTCDateTime(), nullable=True),
        sa.Column("pulling_until", UTCDateTime(), nullable=True),
        sa.Column("failed_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_summary", _json(), nullable=True),
        sa.PrimaryKeyConstraint("crm", name=op.f("pk_crm_connections")),
    )
    op.create_table(
        "crm_records",
        sa.Column("crm", sa.String(length=40), nullable=False),
        sa.Column("object", sa.String(length=80), nullable=False),
        sa.Column("record_id", sa.String(length=200), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=200), nullable=True),
        sa.Column("pushed", _json(), nullable=True),
        sa.Column("pushed_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_crm_records_lead_id_leads")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_crm_records_account_id_accounts")),
        sa.PrimaryKeyConstraint("crm", "object", "record_id", name=op.f("pk_crm_records")),
    )
    op.create_index(op.f("ix_crm_records_lead_id"), "crm_records", ["lead_id"])
    op.create_index(op.f("ix_crm_records_account_id"), "crm_records", ["account_id"])
    op.create_table(
        "crm_pushes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("crm", sa.String(length=40), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("pushed_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_crm_pushes_lead_id_leads")),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name=op.f("fk_crm_pushes_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_pushes")),
    )
    op.create_index(op.f("ix_crm_pushes_lead_id"), "crm_pushes", ["lead_id"])
    op.create_index(op.f("ix_crm_pushes_account_id"), "crm_pushes", ["account_id"])
    op.create_index("ix_crm_pushes_status_next", "crm_pushes", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_crm_pushes_status_next", table_name="crm_pushes")
    op.drop_index(op.f("ix_crm_pushes_account_id"), table_name="crm_pushes")
    op.drop_index(op.f("ix_crm_pushes_lead_id"), table_name="crm_pushes")
    op.drop_table("crm_pushes")
    op.drop_index(op.f("ix_crm_records_account_id"), table_name="crm_records")
    op.drop_index(op.f("ix_crm_records_lead_id"), table_name="crm_records")
    op.drop_table("crm_records")
    op.drop_table("crm_connections")
