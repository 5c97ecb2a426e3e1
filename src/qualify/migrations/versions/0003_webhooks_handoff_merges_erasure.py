"""webhooks, handoff, merges, erasure

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:35:31.402907
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import qualify.adapters.schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "routing_state",
        sa.Column("team", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("team", name=op.f("pk_routing_state")),
    )
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column(
            "kinds", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("description", sa.String(length=300), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_subscriptions")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("created_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("delivered_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["webhook_subscriptions.id"],
            name=op.f("fk_webhook_deliveries_subscription_id_webhook_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_webhook_deliveries_status_next", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_webhook_deliveries_subscription_id"), ["subscription_id"], unique=False)

    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("team", sa.String(length=200), nullable=True),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_assignments_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignments")),
    )
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_assignments_lead_id"), ["lead_id"], unique=False)
        batch_op.create_index("ix_assignments_owner_at", ["owner", "at"], unique=False)

    op.create_table(
        "lead_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("merged_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_lead_aliases_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_aliases")),
        sa.UniqueConstraint("email", name=op.f("uq_lead_aliases_email")),
        sa.UniqueConstraint("external_id", name=op.f("uq_lead_aliases_external_id")),
    )
    with op.batch_alter_table("lead_aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lead_aliases_lead_id"), ["lead_id"], unique=False)

    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sla_due_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("sla_breached_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("erased_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_leads_sla_due_at"), ["sla_due_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leads_sla_due_at"))
        batch_op.drop_column("erased_at")
        batch_op.drop_column("sla_breached_at")
        batch_op.drop_column("sla_due_at")

    with op.batch_alter_table("lead_aliases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lead_aliases_lead_id"))

    op.drop_table("lead_aliases")
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_assignments_owner_at")
        batch_op.drop_index(batch_op.f("ix_assignments_lead_id"))

    op.drop_table("assignments")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_deliveries_subscription_id"))
        batch_op.drop_index("ix_webhook_deliveries_status_next")

    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_subscriptions")
    op.drop_table("routing_state")
