"""Accounts qualified as a whole: their stage, owner, scores and roll-up, their stage history, and
the buying roles each lead fills

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from qualify.adapters.schema import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(sa.Column("stage", sa.String(length=20), nullable=False, server_default="target"))
        batch_op.add_column(sa.Column("stage_entered_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("requalify_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("owner_assigned_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("sla_due_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("sla_breached_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("fit_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("fit_grade", sa.String(length=1), nullable=True))
        batch_op.add_column(sa.Column("engagement_score", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("covered_roles", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rollup", _json(), nullable=True))
        batch_op.add_column(sa.Column("scored_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("model_version", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_accounts_stage", ["stage"])
        batch_op.create_index("ix_accounts_owner", ["owner"])
    with op.batch_alter_table("leads") as batch_op:
        batch_op.add_column(sa.Column("buying_roles", _json(), nullable=True))
    op.create_table(
        "account_stage_history",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("from_stage", sa.String(length=20), nullable=True),
        sa.Column("to_stage", sa.String(length=20), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=20), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("fit_score", sa.Float(), nullable=True),
        sa.Column("engagement_score", sa.Float(), nullable=True),
        sa.Column("covered_roles", sa.Integer(), nullable=True),
        sa.Column("roles", _json(), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
    )
    op.create_index("ix_account_stage_history_account_id", "account_stage_history", ["account_id"])
    op.create_index("ix_account_stage_history_at", "account_stage_history", ["at"])


def downgrade() -> None:
    op.drop_table("account_stage_history")
    with op.batch_alter_table("leads") as batch_op:
        batch_op.drop_column("buying_roles")
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_index("ix_accounts_owner")
        batch_op.drop_index("ix_accounts_stage")
        for name in (
            "model_version", "scored_at", "rollup", "covered_roles", "engagement_score", "fit_grade", "fit_score",
            "sla_breached_at", "sla_due_at", "owner_assigned_at", "owner", "requalify_at", "stage_entered_at", "stage",
        ):  # fmt: skip
            batch_op.drop_column(name)
