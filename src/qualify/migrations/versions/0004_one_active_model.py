"""at most one active scoring model

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Before this revision, concurrent activations could leave several models active, which the
    # index refuses: keep the newest activation (then the newest model) and deactivate the others.
    connection = op.get_bind()
    active = connection.execute(
        sa.text(
            "SELECT version FROM scoring_models WHERE active "
            "ORDER BY activated_at IS NULL, activated_at DESC, created_at DESC, version DESC"
        )
    ).scalars()
    kept, *others = list(active) or [None]
    if others:
        connection.execute(
            sa.text("UPDATE scoring_models SET active = :off WHERE active AND version != :kept"),
            {"off": False, "kept": kept},
        )
        logging.getLogger("alembic.runtime.migration").warning(
            "%d scoring models were active: kept %s, the newest activation; deactivated %s",
            len(others) + 1,
            kept,
            ", ".join(others),
        )
    with op.batch_alter_table("scoring_models", schema=None) as batch_op:
        batch_op.create_index(
            "uq_scoring_models_active",
            ["active"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )


def downgrade() -> None:
    with op.batch_alter_table("scoring_models", schema=None) as batch_op:
        batch_op.drop_index("uq_scoring_models_active")
