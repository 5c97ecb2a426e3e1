"""The workspace (engine + settings + active model) and its units of work."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError, OperationalError

from qualify.adapters import schema
from qualify.adapters.store import (
    BUSY_TIMEOUT_SECONDS,
    READ_ONLY,
    create_store_engine,
    head_revision,
    migrate,
    schema_revision,
    storage_failure,
)
from qualify.domain.errors import Conflict, NotFound, QualifyError
from qualify.domain.model_loader import load_model
from qualify.domain.scoring_model import ScoringModel
from qualify.settings import Settings


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_ts(moment: datetime) -> float:
    return moment.timestamp()


def from_ts(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class UnitOfWork:
    """One transaction: committed when the block ends cleanly, rolled back otherwise."""

    def __init__(self, workspace: Workspace, *, read_only: bool = False, small: bool = False) -> None:
        self.workspace = workspace
        self.read_only = read_only
        self.small = small
        self._connection: Connection | None = None
        self._queued = False  # holds the workspace's write turn

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            raise RuntimeError("unit of work used outside its `with` block")
        return self._connection

    def __enter__(self) -> UnitOfWork:
        self._queued = not self.read_only and self.workspace.write_turn(small=self.small)
        try:
            self._connection = self.workspace.engine.connect()
            if self.read_only:
                self._connection.execution_options(**{READ_ONLY: True})
            self._connection.begin()
        except BaseException:
            self._end_turn()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._connection is not None
        try:
            if kind is None:
                self._connection.commit()
            else:
                self._connection.rollback()
        finally:
            self._connection.close()
            self._connection = None
            self._end_turn()

    def _end_turn(self) -> None:
        if self._queued:
            self._queued = False
            self.workspace.end_write_turn()

    def active_model(self) -> ScoringModel:
        return self.workspace.active_model(self.connection)


SMALL_CHANGE = 10  # events (or leads) a writer may bring and still go ahead of larger writers waiting
PATIENCE_SECONDS = 0.5  # a larger writer waiting this long goes ahead of smaller ones arriving after it


class WriteTurns:
    """The writers of one process taking turns (re-entrant, like an RLock): the next turn goes to
    the waiter with the smallest change, first come first served among equals, so that a single
    event is not kept behind a queue of large batches (its wait is then the batch being written
    at most); a large writer that has waited `PATIENCE_SECONDS` counts as small, so it is never
    kept waiting for ever."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._owner: int | None = None
        self._depth = 0
        self._waiting: list[tuple[int, float, bool]] = []  # (arrival, since, small)
        self._arrivals = 0

    def _next(self, now: float) -> int:
        """The arrival number of the waiter whose turn it is."""
        first = min(self._waiting, key=lambda w: (not (w[2] or now - w[1] >= PATIENCE_SECONDS), w[0]))
        return first[0]

    def acquire(self, *, small: bool, timeout: float) -> bool:
        me = threading.get_ident()
        with self._changed:
            if self._owner == me:
                self._depth += 1
                return True
            self._arrivals += 1
            mine = (self._arrivals, time.monotonic(), small)
            self._waiting.append(mine)
            deadline = mine[1] + timeout
            while self._owner is not None or self._next(time.monotonic()) != mine[0]:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._waiting.remove(mine)
                    self._changed.notify_all()
                    return False
                # Waking up again by PATIENCE_SECONDS: a large waiter may have become first meanwhile.
                self._changed.wait(min(left, PATIENCE_SECONDS))
            self._waiting.remove(mine)
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._changed:
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._changed.notify_all()


@dataclass
class Workspace:
    """Everything a use case needs, built once by `open_workspace` (no globals)."""

    settings: Settings
    engine: Engine
    _models: dict[str, ScoringModel] = field(default_factory=dict)
    _predictors: dict[str, Any] = field(default_factory=dict)  # predictive models by version, loaded once
    _automation: dict[Any, Any] = field(default_factory=dict)  # segments and workflows, by their versions
    # The after-change pipeline (a service.pipeline.Pipeline), set by the composition root,
    # qualify.bootstrap; service/pipeline.py reads it (`of`, `react`), so this module need not know it.
    pipeline: object | None = None
    # The writers of this process take turns on a lock, on either engine. SQLite has one writer
    # at a time: one waiting for another starts the moment it commits, where waiting on SQLite's
    # own lock it would sleep in growing steps (up to 100 ms each) and look again. On PostgreSQL
    # the writers of one process share one interpreter, so running them at once adds little but
    # puts a single event behind the Python work of every batch under way (`http_ingest.py` on
    # PostgreSQL, p50 72-76 ms at once, 48 ms taking turns). Writers in other processes still
    # meet SQLite's lock (busy_timeout), or PostgreSQL's row locks.
    _writers: WriteTurns = field(default_factory=WriteTurns)

    def write_turn(self, *, small: bool = False) -> bool:
        """Wait for this process's other writers, as long as SQLite would wait for a lock (then go
        on to meet SQLite's lock and its error); returns whether the turn was taken. A `small`
        change (at most SMALL_CHANGE events or leads) goes ahead of larger ones waiting."""
        return self._writers.acquire(small=small, timeout=BUSY_TIMEOUT_SECONDS)

    def end_write_turn(self) -> None:
        self._writers.release()

    def unit_of_work(self, *, read_only: bool = False, size: int | None = None) -> UnitOfWork:
        """A transaction; `read_only` ones do not take SQLite's write lock (they must not write).
        `size`: how many events or leads it will write, where the caller knows (a small change
        takes its turn ahead of larger ones waiting)."""
        return UnitOfWork(self, read_only=read_only, small=size is not None and size <= SMALL_CHANGE)

    def active_model(self, connection: Connection) -> ScoringModel:
        row = connection.execute(
            select(schema.scoring_models.c.version, schema.scoring_models.c.document).where(
                schema.scoring_models.c.active
            )
        ).first()
        if row is None:
            raise NotFound("no active scoring model: run `qualify init` or `qualify model activate FILE`")
        return self.model_by_version(row.version, row.document)

    def model_by_version(self, version: str, document: str) -> ScoringModel:
        if version not in self._models:
            self._models[version] = load_model(document, f"model {version}", stored=True)
        return self._models[version]

    def close(self) -> None:
        self.engine.dispose()


class WorkspaceNotReady(QualifyError):
    pass


class StoreUnavailable(QualifyError):
    """The database cannot store anything now (its disk is full, it is read-only): nothing was
    written, and no retry will help until an operator acts. Logged as an error where it happens."""

    def __init__(self, why: str) -> None:
        super().__init__(f"{why}: nothing was written; the operator must free space or make it writable")
        logging.getLogger("qualify.store").error("%s: nothing was written", why)


T = TypeVar("T")

# Failures another attempt can get past: a unique key another process inserted first (e.g. the
# same new lead created by two requests), a deadlock or serialisation failure (PostgreSQL 40P01,
# 40001), or a locked SQLite file. Only for use cases that are idempotent, like ingestion.
_TRANSIENT = (IntegrityError, OperationalError)


def retrying(
    workspace: Workspace, use_case: Callable[[UnitOfWork], T], *, attempts: int = 5, size: int | None = None
) -> T:
    """Run `use_case` in a unit of work (of `size`, as `Workspace.unit_of_work` takes it), again in
    a fresh one after a transient conflict."""
    for attempt in range(1, attempts + 1):
        try:
            with workspace.unit_of_work(size=size) as uow:
                return use_case(uow)
        except _TRANSIENT as error:
            if (why := storage_failure(error)) is not None:
                raise StoreUnavailable(why) from error
            if attempt == attempts:
                raise Conflict(
                    f"the change kept conflicting with concurrent writes ({type(error.orig).__name__}); try again"
                ) from error
            time.sleep(random.uniform(0, 0.02 * 2**attempt))  # jitter: two retrying peers part ways
    raise AssertionError("unreachable")


def open_workspace(
    settings: Settings | None = None, *, create: bool = False, pipeline: object | None = None
) -> Workspace:
    """Open the workspace at `settings.database_url`; with `create`, migrate it to the newest schema.

    The use cases that change leads need the `pipeline` of reactions: the composition root
    (`qualify.bootstrap.open_workspace`) passes the product's; without one, only reading, admin
    and maintenance (backup, restore) work."""
    settings = settings or Settings()
    if not create:
        _refuse_missing_sqlite_file(settings.database_url)
    else:
        private_sqlite_file(settings.database_url)
    engine = create_store_engine(settings.database_url)
    _reach(engine, settings.database_url)
    if create:
        _upgrade(engine, settings.database_url)
    else:
        current, head = schema_revision(engine), head_revision()
        if current is None:
            engine.dispose()
            raise WorkspaceNotReady(
                f"no Qualify workspace at {_safe_url(settings.database_url)}: run `qualify init` first"
            )
        if current != head:
            _upgrade(engine, settings.database_url)  # migrations are additive; an older workspace is brought up to date
    return Workspace(settings, engine, pipeline=pipeline)


# What to do when the database cannot be reached, by what its driver said.
_UNREACHABLE_HINTS = (
    ("does not exist", "create it first (createdb NAME), or name one that exists"),
    ("password authentication failed", "check the user name and password in the URL"),
    ("no password supplied", "put the password in the URL (postgresql://user:password@host/db)"),
    ("could not translate host name", "check the host name"),
    ("name or service not known", "check the host name"),
    ("connection refused", "is PostgreSQL running there, and on that port?"),
    ("timeout", "is PostgreSQL running there, and can this machine reach it?"),
    ("unable to open database file", "check that the folder exists and that you may write in it"),
)


def _reach(engine: Engine, url: str) -> None:
    """Connect once, or say in one line why the database cannot be reached and what to do."""
    try:
        with engine.connect():
            pass
    except OperationalError as error:
        engine.dispose()
        said = str(error.orig or error).strip()
        cause = said.splitlines()[-1] if "FATAL" not in said else said[said.index("FATAL") :].splitlines()[0]
        hint = next((what for needle, what in _UNREACHABLE_HINTS if needle in said.lower()), "check the URL")
        raise WorkspaceNotReady(
            f"cannot reach the database at {_safe_url(url)} ({cause.strip()[:300]}): {hint}"
        ) from error


def _upgrade(engine: Engine, url: str) -> None:
    """Migrate to the newest schema, or say in one line what failed and what to do: the upgrade
    runs in one transaction, so a failed one leaves the workspace as it was."""
    try:
        migrate(engine)
    except Exception as error:  # any database error of any migration
        engine.dispose()
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
        raise WorkspaceNotReady(
            f"upgrading the workspace at {_safe_url(url)} to schema {head_revision()} failed "
            f"({type(error).__name__}: {cause}); nothing was changed: keep using the version that made it, "
            "restore a backup, or report this line"
        ) from error


def private_sqlite_file(url: str) -> None:
    """A new SQLite workspace file is made readable by its owner only (0600): it holds people's
    personal data and the dashboard's session key. SQLite gives its -wal and -shm files the same."""
    import contextlib
    import os
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database).expanduser()
    if not path.exists() and path.parent.is_dir():
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile: its mode is its own
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _refuse_missing_sqlite_file(url: str) -> None:
    """Opening a SQLite file that is not there would create an empty one: say what to do instead."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).expanduser().exists():
            raise WorkspaceNotReady(f"no Qualify workspace at {url}: run `qualify init --db {url}` first")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
