"""stage facts, deals, rebuild queue: people's stage decisions and a CRM's deals, kept apart from the derived history

Revision ID: 0008
Revises: 0007

Existing workspaces: every stage change a person made (actor `user` in the stage history) becomes
a stage fact, so that rebuilding a lead's history from its events and facts keeps it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import qualify.adapters.schema

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Time = qualify.adapters.schema.UTCDateTime


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "deals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deal_id", sa.String(length=200), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("opened_at", Time(timezone=True), nullable=True),
        sa.Column("closed_at", Time(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("amount", sa.Float(), nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("properties", _json(), nullable=False),
        sa.Column("created_at", Time(timezone=True), nullable=False),
        sa.Column("updated_at", Time(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_deals_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deals")),
        sa.UniqueConstraint("deal_id", name=op.f("uq_deals_deal_id")),
    )
    op.create_index("ix_deals_lead_id", "deals", ["lead_id"])
    facts = op.create_table(
        "stage_facts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("at", Time(timezone=True), nullable=False),
        sa.Column("from_stage", sa.String(length=20), nullable=True),
        sa.Column("to_stage", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=True),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("recorded_at", Time(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_stage_facts_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_facts")),
        sa.UniqueConstraint("lead_id", "at", "to_stage", name=op.f("uq_stage_facts_lead_id_at_to_stage")),
    )
    op.create_index("ix_stage_facts_lead_id", "stage_facts", ["lead_id"])
    op.create_table(
        "rebuild_queue",
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("queued_at", Time(timezone=True), nullable=False),
        sa.Column("history_before", Time(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_rebuild_queue_lead_id_leads")),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_rebuild_queue")),
    )
    _backfill(facts)


def _backfill(facts: sa.Table) -> None:
    """The people's stage changes already in the history become facts (the earliest of a duplicate)."""
    history = sa.table(
        "stage_history",
        sa.column("id", sa.Integer()),
        sa.column("lead_id", sa.Integer()),
        sa.column("at", Time()),
        sa.column("from_stage", sa.String()),
        sa.column("to_stage", sa.String()),
        sa.column("actor", sa.String()),
        sa.column("by", sa.String()),
        sa.column("reason", sa.String()),
        sa.column("note", sa.Text()),
    )
    first = (
        sa.select(sa.func.min(history.c.id))
        .where(history.c.actor == "user")
        .group_by(history.c.lead_id, history.c.at, history.c.to_stage)
    )
    rows = sa.select(
        history.c.lead_id,
        history.c.at,
        history.c.from_stage,
        history.c.to_stage,
        history.c.by,
        history.c.reason,
        history.c.note,
        sa.literal("live").label("source"),
        history.c.at.label("recorded_at"),
    ).where(history.c.id.in_(first))
    op.execute(
        facts.insert().from_select(
            ["lead_id", "at", "from_stage", "to_stage", "by", "reason", "note", "source", "recorded_at"], rows
        )
    )


def downgrade() -> None:
    op.drop_table("rebuild_queue")
    op.drop_index("ix_stage_facts_lead_id", table_name="stage_facts")
    op.drop_table("stage_facts")
    op.drop_index("ix_deals_lead_id", table_name="deals")
    op.drop_table("deals")
