"""keys bound to users: api_keys.user_name, the dashboard user a key acts for

Revision ID: 0010
Revises: 0009

Existing sales keys named like an enabled user (`keys create` suggests naming a key after who
uses it) are bound to that user; other sales keys stay unbound and may read but no longer act
until replaced by one made with `qualify keys create NAME --role sales --user REP`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("user_name", sa.String(length=200), nullable=True))
    op.execute(
        "UPDATE api_keys SET user_name = name WHERE role = 'sales' "
        "AND name IN (SELECT name FROM users WHERE disabled_at IS NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("user_name")
