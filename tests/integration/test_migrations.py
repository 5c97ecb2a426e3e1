"""The migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from qualify.adapters.schema import metadata
from qualify.adapters.store import create_store_engine, head_revision, migrate, schema_revision
from qualify.service import unit_of_work
from qualify.service.unit_of_work import WorkspaceNotReady
from qualify.settings import Settings


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


def test_an_upgrade_repairs_the_data_its_constraint_needs_and_a_failed_one_says_what_to_do(
    database_url: str,
) -> None:
    """A workspace at schema 0003 where concurrent activations left two models active failed
    migration 0004 (its unique index) from every command, with no way out."""
    engine = create_store_engine(database_url)
    migrate(engine, "0003")
    with engine.begin() as connection:
        for version, activated in (("older", "2026-01-01 10:00:00"), ("newer", "2026-01-02 10:00:00")):
            connection.execute(
                text(
                    "INSERT INTO scoring_models (version, name, document, created_at, activated_at, active) "
                    "VALUES (:v, 'm', 'name: m', :t, :t, :on)"
                ),
                {"v": version, "t": activated, "on": True},
            )
    migrate(engine)
    with engine.connect() as connection:
        active = connection.execute(text("SELECT version FROM scoring_models WHERE active")).scalars().all()
    assert active == ["newer"] and schema_revision(engine) == head_revision()
    engine.dispose()


def test_a_failed_upgrade_is_one_line_that_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_store_engine(url)
    migrate(engine, "0008")
    engine.dispose()

    def broken(engine: Any, revision: str = "head") -> None:
        raise OperationalError("ALTER TABLE leads", {}, Exception("disk I/O error"))

    monkeypatch.setattr(unit_of_work, "migrate", broken)
    with pytest.raises(WorkspaceNotReady) as caught:
        unit_of_work.open_workspace(Settings(database_url=url))
    message = str(caught.value)
    assert "\n" not in message and "failed (OperationalError: disk I/O error)" in message
    assert "nothing was changed" in message and "restore a backup" in message


def test_the_upgrade_binds_each_sales_key_to_the_user_of_its_name(database_url: str) -> None:
    """Keys had no user before 0010: a sales key named after an enabled user now acts as that
    user; the others stay unbound (they may read, their actions are refused)."""
    engine = create_store_engine(database_url)
    migrate(engine, "0009")
    with engine.begin() as connection:
        for name, disabled in (("sam.rivera", None), ("gone.rep", "2026-01-01 00:00:00")):
            connection.execute(
                text(
                    "INSERT INTO users (name, role, password_hash, created_at, disabled_at, session_epoch) "
                    "VALUES (:n, 'sales', 'x', '2026-01-01 00:00:00', :d, 0)"
                ),
                {"n": name, "d": disabled},
            )
        for key_id, name, role in (
            ("k1", "sam.rivera", "sales"),
            ("k2", "gone.rep", "sales"),
            ("k3", "crm-sync", "sales"),
            ("k4", "sam.rivera", "admin"),
        ):
            connection.execute(
                text(
                    "INSERT INTO api_keys (key_id, secret_hash, name, role, created_at) "
                    "VALUES (:k, 'x', :n, :r, '2026-01-01 00:00:00')"
                ),
                {"k": key_id, "n": name, "r": role},
            )
    migrate(engine)
    with engine.connect() as connection:
        bound = dict(connection.execute(text("SELECT key_id, user_name FROM api_keys ORDER BY key_id")).all())
    engine.dispose()
    assert bound == {"k1": "sam.rivera", "k2": None, "k3": None, "k4": None}


def test_the_head_revision_read_from_the_file_names_is_alembics() -> None:
    """Opening a workspace reads the newest revision from the migrations' names (NNNN_*.py), without
    loading Alembic: every migration must revise the one numbered before it."""
    from alembic.script import ScriptDirectory

    from qualify.adapters.store import _alembic_config, head_revision

    scripts = ScriptDirectory.from_config(_alembic_config())
    assert head_revision() == scripts.get_current_head()
    for revision in scripts.walk_revisions():
        assert revision.down_revision == (f"{int(revision.revision) - 1:04d}" if revision.revision != "0001" else None)
