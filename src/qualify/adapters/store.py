"""Engines and migrations: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

from qualify.adapters import json_codec


def create_store_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the workspace at `url`; SQLite gets WAL and foreign keys. A database error
    never shows the statement's parameters (people's data, keys) in its message or a log line."""
    parsed = make_url(url)
    kwargs.setdefault("hide_parameters", True)
    kwargs.setdefault("json_serializer", json_codec.dumps)
    kwargs.setdefault("json_deserializer", json_codec.loads)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    logging.getLogger("psycopg").addFilter(_second_errors)
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _second_errors(record: logging.LogRecord) -> bool:
    """Drop psycopg's warning that ending a batch's pipeline failed too, after the error that
    ended it (a unique key another writer took, a deadlock): that error is raised and handled
    (`retrying` runs the batch again), and the echo only alarmed the reader of `qualify import`."""
    return not str(record.msg).startswith("error ignored terminating")


# What the database says when it cannot store anything, whoever writes: no retry gets past it.
_STORAGE_FAILURES = (
    ("database or disk is full", "the database's disk is full"),
    ("no space left on device", "the database's disk is full"),
    ("could not extend file", "the database's disk is full"),
    ("readonly database", "the database is read-only"),
    ("read-only transaction", "the database is read-only"),
    ("disk i/o error", "the database's disk failed to read or write (I/O error)"),
)
_STORAGE_CODES = {"53100": "the database's disk is full", "25006": "the database is read-only"}


def storage_failure(error: BaseException) -> str | None:
    """Why the database cannot store anything (disk full, read-only, I/O error), or None for any
    other error (a conflict another attempt may get past, say)."""
    original = getattr(error, "orig", None) or error
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if code in _STORAGE_CODES:
        return _STORAGE_CODES[str(code)]
    text = str(original).lower()
    return next((why for needle, why in _STORAGE_FAILURES if needle in text), None)


READ_ONLY = "qualify_read_only"


BUSY_TIMEOUT_SECONDS = 30.0  # how long a SQLite writer waits for another's lock before it fails


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # The driver would open transactions itself, lazily at the first write, after the reads a use
    # case bases its writes on; Qualify opens them instead (below), so reads are inside them.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable in WAL mode across a process crash; only an OS crash can lose the last commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    """A unit of work that writes takes SQLite's write lock before its first read (BEGIN
    IMMEDIATE): two writers then take turns over read-and-write, and neither overwrites what
    the other read. Read-only units (marked READ_ONLY) begin deferred and never wait."""
    read_only = connection.get_execution_options().get(READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _alembic_config() -> Any:
    from alembic.config import Config  # Alembic loads only to migrate: opening a workspace reads two numbers

    config = Config()
    config.set_main_option("script_location", str(files("qualify").joinpath("migrations")))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent)."""
    from alembic import command

    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def schema_revision(engine: Engine) -> str | None:
    """The schema revision the workspace is at (Alembic's version table), or None for a database
    Qualify has not made."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return found[0] if len(found) == 1 else None


def head_revision() -> str | None:
    """The newest schema revision this Qualify writes: the migrations are numbered `NNNN_*.py`, each
    revising the one before (tests/integration/test_migrations.py checks this against Alembic's
    own reading of them)."""
    numbers = [
        p.name[:4] for p in files("qualify").joinpath("migrations", "versions").iterdir() if p.name[:4].isdigit()
    ]
    return max(numbers, default=None)


def make_revision(engine: Engine, message: str) -> None:
    """Developer helper: autogenerate a migration from the difference to `schema.metadata`."""
    from alembic import command

    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.revision(config, message=message, autogenerate=True)
