"""predictive models, and each lead's probability

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import qualify.adapters.schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictive_models",
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=20), nullable=False),
        sa.Column("within_days", sa.Integer(), nullable=False),
        sa.Column("cutoff", sa.String(length=40), nullable=False),
        sa.Column("scoring_model", sa.String(length=64), nullable=True),
        sa.Column("data_from", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("data_to", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "metrics", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("activated_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_predictive_models")),
    )
    with op.batch_alter_table("predictive_models", schema=None) as batch_op:
        batch_op.create_index(
            "uq_predictive_models_active",
            ["active"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("probability", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("probability_at", qualify.adapters.schema.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("predictive_version", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_column("predictive_version")
        batch_op.drop_column("probability_at")
        batch_op.drop_column("probability")
    with op.batch_alter_table("predictive_models", schema=None) as batch_op:
        batch_op.drop_index("uq_predictive_models_active")
    op.drop_table("predictive_models")
