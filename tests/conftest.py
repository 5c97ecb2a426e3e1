"""Shared fixtures: a fresh workspace on SQLite and on PostgreSQL for every test that asks."""

from __future__ import annotations

import atexit
import csv
import fcntl
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from qualify.bootstrap import open_workspace
from qualify.domain.model_loader import default_model_text
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# The tests' webhook receivers listen on loopback: allowed explicitly, as an operator would allow an
# internal receiver (docs/webhooks.md); the tests of the defence itself give settings without it.
LOOPBACK_RECEIVERS = "127.0.0.1,::1,localhost"
os.environ.setdefault("QUALIFY_WEBHOOK_ALLOW", LOOPBACK_RECEIVERS)
# LightGBM's and scikit-learn's OpenMP threads (here and in the `qualify` commands the tests start)
# spin while they wait for work; beside a second worker on two cores the spinning takes the core
# the other thread needs. Waiting asleep changes no result and made the training tests 10-20 %
# quicker. Read when the OpenMP runtime loads: set before anything imports either library.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, filled by `build` once per test run: under pytest-xdist the workers share
    the run's temporary folder, and the first to ask builds it there under a lock while the others
    wait. Copy what it holds; never change it."""
    own = tmp_path_factory.getbasetemp()
    shared = own.parent if os.environ.get("PYTEST_XDIST_WORKER") else own  # the run's folder, not older runs'
    folder = shared / name
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not folder.is_dir():
            scratch = shared / f"{name}-{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)  # left by a build of this worker that failed
            scratch.mkdir()
            build(scratch)
            scratch.rename(folder)  # whole, or not there
    return folder


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


_ADMIN: Engine | None = None


def _admin() -> Engine:
    """One autocommit connection pool to the test database per process, for DDL."""
    global _ADMIN
    if _ADMIN is None:
        _ADMIN = create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    return _ADMIN


@contextmanager
def fresh_postgres_schema() -> Iterator[str]:
    """`postgres_schema_url` as a context manager: for property tests, one schema per example."""
    require_postgres()
    name = f"qualify_test_{uuid.uuid4().hex[:12]}"
    with _admin().connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{name}"'))
    url = make_url(postgres_url()).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with _admin().connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))


@pytest.fixture(params=["sqlite", "postgres"])
def engine_name(request: pytest.FixtureRequest) -> str:
    """The engines the suite runs on: `database_url` and `workspace` are parametrized by it."""
    return str(request.param)


@pytest.fixture
def database_url(engine_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database on each engine the suite runs on."""
    if engine_name == "sqlite":
        return f"sqlite:///{tmp_path / 'workspace.db'}"
    return str(request.getfixturevalue("postgres_schema_url"))


# Migrating a workspace for every test would dominate the run: each process migrates one template
# per engine (with the default model active) and every test gets a copy of it, a file copy on
# SQLite and `CREATE DATABASE ... TEMPLATE` on PostgreSQL. Tests that need an empty, unmigrated
# database (migrations, restores, `qualify init`) take `database_url` or `postgres_schema_url`.


def _migrate_with_default_model(url: str) -> None:
    ws = open_workspace(Settings(database_url=url), create=True)
    with ws.unit_of_work() as uow:
        activate_model(uow, default_model_text(), "default_model.yaml")
    ws.close()


_SQLITE_TEMPLATE: list[Path] = []


def _sqlite_template() -> Path:
    """A migrated SQLite workspace with the default model, made once per process."""
    if not _SQLITE_TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="qualify-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = folder / "template.db"
        _migrate_with_default_model(f"sqlite:///{template}")
        with closing(sqlite3.connect(template)) as raw:  # fold the WAL in: one file is the whole workspace
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _SQLITE_TEMPLATE.append(template)
    return _SQLITE_TEMPLATE[0]


def copy_of_fresh_workspace(directory: Path, name: str = "workspace.db") -> Workspace:
    """A copy of one migrated SQLite workspace with the default model: for property tests, where
    migrating anew for every example would dominate the run."""
    shutil.copyfile(_sqlite_template(), directory / name)
    return open_workspace(Settings(database_url=f"sqlite:///{directory / name}"))


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    """A CSV file of `rows` under `header`, as an export would write it (for import tests)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def postgres_copies() -> Iterator[_Copies | None]:
    """Copies of a database migrated once for this process (xdist worker), with the default model
    active; None where this role may not create databases (each test then migrates a schema)."""
    require_postgres()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    template = f"qualify_template_{worker}_{uuid.uuid4().hex[:8]}"  # other runs may share the server
    try:
        with _admin().connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{template}"'))
    except ProgrammingError:  # no CREATEDB privilege
        yield None
        return
    copies = None
    try:
        _migrate_with_default_model(_database_url(template))
        copies = _Copies(template)
        yield copies
    finally:
        if copies is not None:
            copies.close()
        _DROPPER.drain()
        _drop_database(template)


def _database_url(name: str) -> str:
    return make_url(postgres_url()).set(database=name).render_as_string(hide_password=False)


def _drop_database(name: str) -> None:
    with _admin().connect() as connection:
        try:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except ProgrammingError:  # before PostgreSQL 13: no FORCE
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


class _Copies:
    """`CREATE DATABASE ... TEMPLATE` in a background thread, one copy ahead of the tests: the
    copying waits on the server's disk, which the test before need not wait for."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.ready: queue.Queue[str | Exception] = queue.Queue(maxsize=1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="copy-test-databases", daemon=True)
        self.thread.start()

    def _make(self) -> str:
        name = f"qualify_test_{uuid.uuid4().hex[:12]}"
        with _admin().connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        return name

    def _run(self) -> None:
        while not self.stopping.is_set():
            item: str | Exception
            try:
                item = self._make()
            except Exception as exc:  # raised in the test that takes it
                item = exc
            while True:
                try:
                    self.ready.put(item, timeout=0.2)
                    break
                except queue.Full:
                    if self.stopping.is_set():
                        if isinstance(item, str):
                            _DROPPER.drop(item)
                        return

    def take(self) -> str:
        """The name of a fresh copy, the caller's to use; dropped with `_DROPPER.drop`."""
        item = self.ready.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        while True:
            try:
                item = self.ready.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, str):
                _DROPPER.drop(item)


class _Dropper:
    """Drops the tests' databases in a background thread: DROP DATABASE waits for a checkpoint,
    which the next test need not wait for."""

    def __init__(self) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.failures: list[str] = []

    def drop(self, name: str) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="drop-test-databases", daemon=True)
            self.thread.start()
        self.queue.put(name)

    def _run(self) -> None:
        while True:
            name = self.queue.get()
            try:
                _drop_database(name)
            except Exception as exc:  # reported at the end of the session, not lost
                self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            finally:
                self.queue.task_done()

    def drain(self) -> None:
        self.queue.join()
        assert not self.failures, f"test databases not dropped: {self.failures}"


_DROPPER = _Dropper()


@contextmanager
def copy_of_postgres_template(copies: _Copies) -> Iterator[str]:
    """The URL of a fresh copy of the migrated template, dropped afterwards (in the background)."""
    name = copies.take()
    try:
        yield _database_url(name)
    finally:
        _DROPPER.drop(name)


@contextmanager
def postgres_copy(copies: _Copies | None) -> Iterator[str]:
    """The URL of a migrated PostgreSQL database with the default model active: a copy of the
    template (`postgres_copies`), or where this role may not create databases a schema of its own,
    migrated. For property tests, one per example."""
    if copies is None:
        with fresh_postgres_schema() as url:
            _migrate_with_default_model(url)
            yield url
        return
    with copy_of_postgres_template(copies) as url:
        yield url


@contextmanager
def workspace_on(engine_name: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[Workspace]:
    """A migrated workspace with the default scoring model active on `engine_name` ("sqlite", its
    file in `folder`, or "postgres"): a copy of this process's template, for fixtures of any scope."""
    with _url_of_a_copy(engine_name, request, folder) as url:
        ws = open_workspace(Settings(database_url=url))
        try:
            yield ws
        finally:
            ws.close()


@contextmanager
def _url_of_a_copy(engine_name: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[str]:
    if engine_name == "sqlite":
        path = folder / "workspace.db"
        shutil.copyfile(_sqlite_template(), path)
        yield f"sqlite:///{path}"
        return
    with postgres_copy(request.getfixturevalue("postgres_copies")) as url:
        yield url


@pytest.fixture
def workspace(engine_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """A migrated workspace with the default scoring model active, on each engine."""
    with workspace_on(engine_name, request, tmp_path) as ws:
        yield ws


@pytest.fixture
def sqlite_workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    """Only SQLite: for tests about behaviour that does not depend on the engine."""
    with workspace_on("sqlite", request, tmp_path) as ws:
        yield ws


@pytest.fixture
def shared_data() -> Path:
    """The real public lead data beside the checkout; skipped only where the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder is absent ({SHARED_DATA}); real-data tests need it")
    return SHARED_DATA


# Under pytest-xdist (`-n`, scripts/test.sh) with `--dist loadgroup` (scripts/test.sh), the tests
# go to the workers a module at a time, so that a module's module-scoped fixtures (worlds built once
# and only read) are built once, not once per worker; and the timing-sensitive crash, load and
# concurrency tests all go to one worker, so that they never run at the same time as each other.
# The modules that start a Spark session also share one worker: two JVMs on two cores slow both.
# (xdist's own loadgroup reads `xdist_group` marks into the node ids, which pytest 9.2 no longer
# lets it change: the scheduler below groups by the node ids' paths instead.)
SERIAL_MODULES = {
    "test_concurrency",
    "test_concurrent_stages",
    "test_concurrent_writers",
    "test_crash_load",
    "test_fuzz_api",
    "test_workflow_crash",
}
SPARK_MODULES = {"test_batch_parity", "test_probability_as_of", "test_reports"}
# Seconds of one worker's time each heavy group took (`--durations`, on two cores): the groups go
# out longest first, so that the run does not end with one worker busy on a long group while the
# other waits; every other module comes after them, in xdist's order (most tests first).
HEAVY_SECONDS = {
    "spark": 380,
    "serial": 350,
    "tests/e2e/test_docs_commands.py": 300,
    "tests/integration/test_predictions.py": 200,
    "tests/e2e/test_readme.py": 135,
    "tests/integration/test_known_outcomes.py": 110,
    "tests/integration/test_crm_features.py": 80,
    "tests/integration/test_scorecard.py": 60,
    "tests/integration/test_training_set.py": 60,
    "tests/e2e/test_benchmarks.py": 45,
    "tests/integration/test_predictive_use_cases.py": 40,
}


def _scope_of(nodeid: str) -> str:
    stem = Path(nodeid.split("::", 1)[0]).stem
    if stem in SERIAL_MODULES:
        return "serial"
    return "spark" if stem in SPARK_MODULES else nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadgroup":
        return None  # another --dist given: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):  # type: ignore[misc]
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            return _scope_of(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:  # once, before the first unit goes out: the heavy groups first
                units = sorted(self.workqueue.items(), key=lambda unit: -HEAVY_SECONDS.get(unit[0], 0))
                self.workqueue.clear()
                self.workqueue.update(units)  # a stable sort: the rest keep xdist's order
                self.ordered = True
            super()._assign_work_unit(node)

    return ByModule(config, log)


def batch_equals_online(workspace: Workspace, sources: Any, at: datetime) -> int:
    """Every lead's batch probability at `at` against the online one (serving.subjects at that
    instant, engagement replayed from the events up to it) from `sources` (batch_evaluator.Sources);
    returns how many leads were compared."""
    import numpy as np
    from sqlalchemy import select

    from qualify.adapters import schema
    from qualify.service.analytics.batch_scores import batch_probabilities
    from qualify.service.predictions import serving as predictions

    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
        found = predictions.active_predictor(uow)
        assert found is not None
        batch = batch_probabilities(found, model, sources, at)
        leads = schema.leads
        expected = set(
            uow.connection.execute(
                select(leads.c.id).where(leads.c.created_at <= at, leads.c.erased_at.is_(None))
            ).scalars()
        )
        ids = sorted(batch)
        online = found.probabilities(predictions.subjects(uow, ids, dict.fromkeys(ids, at)))
    assert set(ids) == expected  # the leads created by then, and only those
    gaps = np.abs(np.array([batch[i] for i in ids]) - online)
    assert gaps.max(initial=0.0) <= 1e-9, (at, float(gaps.max()))
    return len(ids)


SALES_REP = "sam.rivera"  # a rep of the default model's north-america team


def key_for(uow: Any, role: str, name: str | None = None, *, user: str = SALES_REP) -> str:
    """A bearer token of `role`; a sales key acts for `user`, added as a dashboard user if missing."""
    from qualify.service.admin.api_keys import create_key
    from qualify.service.admin.users import add_user, list_users

    bound = None
    if role == "sales":
        if user not in {u.name for u in list_users(uow)}:
            add_user(uow, user, "sales", "a long enough password")
        bound = user
    token, _ = create_key(uow, name or f"{role}-key", role, user=bound)
    return token
