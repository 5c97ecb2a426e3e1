"""Shared fixtures: a fresh workspace on SQLite and on PostgreSQL for every test that asks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from qualify.bootstrap import open_workspace
from qualify.domain.model_loader import default_model_text
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def postgres_url() -> str:
    return os.environ.get("QUALIFY_TEST_POSTGRES_URL", DEFAULT_POSTGRES)


def _postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        engine = create_engine(postgres_url())
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


_PG_PROBLEM: str | None = None
_PG_CHECKED = False


def require_postgres() -> None:
    global _PG_PROBLEM, _PG_CHECKED
    if not _PG_CHECKED:
        _PG_PROBLEM, _PG_CHECKED = _postgres_available(), True
    if _PG_PROBLEM is not None:
        message = f"PostgreSQL at {make_url(postgres_url()).render_as_string(hide_password=True)} is not reachable ({_PG_PROBLEM})"
        if os.environ.get("QUALIFY_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections use a fresh, private PostgreSQL schema, dropped afterwards."""
    with fresh_postgres_schema() as url:
        yield url


@contextmanager
def fresh_postgres_schema() -> Iterator[str]:
    """`postgres_schema_url` as a context manager: for property tests, one schema per example."""
    require_postgres()
    name = f"qualify_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{name}"'))
    url = make_url(postgres_url()).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database on each engine the suite runs on."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'workspace.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


def _ready_workspace(database_url: str) -> Iterator[Workspace]:
    ws = open_workspace(Settings(database_url=database_url), create=True)
    with ws.unit_of_work() as uow:
        activate_model(uow, default_model_text(), "default_model.yaml")
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture
def workspace(database_url: str) -> Iterator[Workspace]:
    """A migrated workspace with the default scoring model active."""
    yield from _ready_workspace(database_url)


@pytest.fixture
def sqlite_workspace(tmp_path: Path) -> Iterator[Workspace]:
    """Only SQLite: for tests about behaviour that does not depend on the engine."""
    yield from _ready_workspace(f"sqlite:///{tmp_path / 'workspace.db'}")


@pytest.fixture
def shared_data() -> Path:
    """The real public lead data beside the checkout; skipped only where the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder is absent ({SHARED_DATA}); real-data tests need it")
    return SHARED_DATA


_TEMPLATES: dict[str, Path] = {}


def copy_of_fresh_workspace(directory: Path, name: str = "workspace.db") -> Workspace:
    """A copy of one migrated SQLite workspace with the default model: for property tests, where
    migrating anew for every example would dominate the run."""
    import shutil
    import sqlite3
    import tempfile

    if "default" not in _TEMPLATES:
        template = Path(tempfile.mkdtemp()) / "template.db"
        ws = open_workspace(Settings(database_url=f"sqlite:///{template}"), create=True)
        with ws.unit_of_work() as uow:
            activate_model(uow, default_model_text())
        ws.close()
        with sqlite3.connect(template) as raw:  # fold the WAL in, so one file is the whole workspace
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _TEMPLATES["default"] = template
    shutil.copyfile(_TEMPLATES["default"], directory / name)
    return open_workspace(Settings(database_url=f"sqlite:///{directory / name}"))
