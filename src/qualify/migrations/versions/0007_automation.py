"""automation: segments, tags, workflows, email outbox, web tracking

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import qualify.adapters.schema

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Time = qualify.adapters.schema.UTCDateTime


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "segments",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("created_at", Time(timezone=True), nullable=False),
        sa.Column("updated_at", Time(timezone=True), nullable=False),
        sa.Column("refreshed_at", Time(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_segments")),
    )
    op.create_table(
        "segment_members",
        sa.Column("segment", sa.String(length=100), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("entered_at", Time(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_segment_members_lead_id_leads")),
        sa.PrimaryKeyConstraint("segment", "lead_id", name=op.f("pk_segment_members")),
    )
    op.create_index("ix_segment_members_lead_id", "segment_members", ["lead_id"])
    op.create_table(
        "segment_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("segment", sa.String(length=100), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=8), nullable=False),
        sa.Column("at", Time(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_segment_history_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segment_history")),
    )
    op.create_index(op.f("ix_segment_history_lead_id"), "segment_history", ["lead_id"])
    op.create_index("ix_segment_history_segment_at", "segment_history", ["segment", "at"])
    op.create_table(
        "lead_tags",
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=100), nullable=False),
        sa.Column("added_at", Time(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_lead_tags_lead_id_leads")),
        sa.PrimaryKeyConstraint("lead_id", "tag", name=op.f("pk_lead_tags")),
    )
    op.create_index("ix_lead_tags_tag", "lead_tags", ["tag"])
    op.create_table(
        "email_templates",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("updated_at", Time(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_email_templates")),
    )
    op.create_table(
        "workflows",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", Time(timezone=True), nullable=False),
        sa.Column("updated_at", Time(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_workflows")),
    )
    op.create_table(
        "workflow_enrolments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workflow", sa.String(length=100), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("next_run_at", Time(timezone=True), nullable=True),
        sa.Column("waiting_for", sa.String(length=64), nullable=True),
        sa.Column("wait_started_at", Time(timezone=True), nullable=True),
        sa.Column("trigger", sa.String(length=300), nullable=False),
        sa.Column("enrolled_at", Time(timezone=True), nullable=False),
        sa.Column("finished_at", Time(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_workflow_enrolments_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_enrolments")),
    )
    op.create_index(op.f("ix_workflow_enrolments_lead_id"), "workflow_enrolments", ["lead_id"])
    op.create_index("ix_workflow_enrolments_status_next", "workflow_enrolments", ["status", "next_run_at"])
    op.create_index("ix_workflow_enrolments_workflow_lead", "workflow_enrolments", ["workflow", "lead_id"])
    op.create_index(
        "uq_workflow_enrolments_active",
        "workflow_enrolments",
        ["workflow", "lead_id"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "workflow_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrolment_id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("workflow", sa.String(length=100), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", Time(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["enrolment_id"], ["workflow_enrolments.id"], name=op.f("fk_workflow_log_enrolment_id_workflow_enrolments")
        ),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_workflow_log_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_log")),
    )
    op.create_index(op.f("ix_workflow_log_lead_id"), "workflow_log", ["lead_id"])
    op.create_index("uq_workflow_log_enrolment_step", "workflow_log", ["enrolment_id", "step"], unique=True)
    op.create_table(
        "emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=40), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("enrolment_id", sa.Integer(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("to_address", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=500), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("created_at", Time(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Time(timezone=True), nullable=False),
        sa.Column("sent_at", Time(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_emails_lead_id_leads")),
        sa.ForeignKeyConstraint(
            ["enrolment_id"], ["workflow_enrolments.id"], name=op.f("fk_emails_enrolment_id_workflow_enrolments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emails")),
        sa.UniqueConstraint("token", name=op.f("uq_emails_token")),
    )
    op.create_index(op.f("ix_emails_lead_id"), "emails", ["lead_id"])
    op.create_index("ix_emails_status_next", "emails", ["status", "next_attempt_at"])
    op.create_table(
        "visitors",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("first_seen_at", Time(timezone=True), nullable=False),
        sa.Column("last_seen_at", Time(timezone=True), nullable=False),
        sa.Column("identified_at", Time(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_visitors_lead_id_leads")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visitors")),
    )
    op.create_index(op.f("ix_visitors_lead_id"), "visitors", ["lead_id"])
    op.create_table(
        "visitor_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("visitor_id", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", Time(timezone=True), nullable=False),
        sa.Column("properties", _json(), nullable=False),
        sa.Column("stitched_at", Time(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["visitor_id"], ["visitors.id"], name=op.f("fk_visitor_events_visitor_id_visitors")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visitor_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_visitor_events_event_id")),
    )
    op.create_index(op.f("ix_visitor_events_visitor_id"), "visitor_events", ["visitor_id"])


def downgrade() -> None:
    for table in (
        "visitor_events",
        "visitors",
        "emails",
        "workflow_log",
        "workflow_enrolments",
        "workflows",
        "email_templates",
        "lead_tags",
        "segment_history",
        "segment_members",
        "segments",
    ):
        op.drop_table(table)
