"""The migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from qualify.adapters.schema import metadata
from qualify.adapters.store import create_store_engine, head_revision, migrate, schema_revision


def test_migrated_schema_matches_the_declared_tables(database_url: str) -> None:
    engine = create_store_engine(database_url)
    migrate(engine)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == [], "a schema change needs a migration: run adapters.store.make_revision"


def test_migrating_twice_is_harmless_and_reaches_head(database_url: str) -> None:
    engine = create_store_engine(database_url)
    migrate(engine)
    migrate(engine)
    assert schema_revision(engine) == head_revision()
    engine.dispose()


def test_sqlite_workspaces_use_write_ahead_logging(tmp_path: object) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path}/wal.db")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
