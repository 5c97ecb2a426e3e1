"""Alembic environment: runs on the connection Qualify hands it (see adapters/store.py)."""

from __future__ import annotations

from alembic import context

from qualify.adapters.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
