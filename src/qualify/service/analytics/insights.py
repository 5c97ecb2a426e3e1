"""The dashboard's insights: content influence among MQLs, sources with sales' acceptance, and why
MQLs were rejected.

Content influence and the sources are batch reports (analytics.reports): on PostgreSQL they read
the store's tables, elsewhere a Parquet export of the workspace made for them (seconds to tens of
seconds at 100,000 leads). So they are computed off the request, by `InsightsCache`: a request
reads the last computed figures, with the instant of the data they are of, and when the data has
changed since (new events, stage changes, leads, another model) starts their recomputation in a
thread of its own and says so; the next request after it ends reads the new figures. Only the
first request of a process waits for them (up to `wait` seconds). The rejection reasons are one
small query, read on every request.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.analytics.batch_evaluator import Sources
from qualify.analytics.reports import content_influence, sources_report
from qualify.service.analytics.batch_scores import on_engine
from qualify.service.analytics.export import export_workspace
from qualify.service.reading.dashboard import rejection_reasons
from qualify.service.unit_of_work import UnitOfWork, Workspace, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Insights:
    content: dict[str, Any]  # analytics.reports.content_influence: reaching customer, among MQLs
    sources: list[dict[str, Any]]  # analytics.reports.sources_report, by source
    rejections: list[tuple[str, int]]  # reason code, how many rejections gave it; commonest first (now)
    as_of: datetime  # when the data content and sources were computed from was read
    current: bool  # False: the data has changed since `as_of`, and newer figures are being computed
    failed: str | None = None  # the last recomputation's error, while it is retried (RETRY_AFTER apart)


def compute(workspace: Workspace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Content influence and sources now: on the store's tables on PostgreSQL, else on an export
    made for them (and removed after)."""

    def read(sources: Sources) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return content_influence(sources, target="customer", among="mql"), sources_report(sources, "source")

    if workspace.settings.database_url.startswith("postgresql"):
        return on_engine(workspace, "postgres", None, read)
    with tempfile.TemporaryDirectory(prefix="qualify-insights-") as folder:
        export = Path(folder) / "export"
        export_workspace(workspace, export)
        return on_engine(workspace, "duckdb", export, read)


def data_version(uow: UnitOfWork) -> tuple[Any, ...]:
    """What changes whenever the figures could: the newest event and stage change, the leads'
    count and latest update, and the active scoring model."""
    conn = uow.connection
    return (
        conn.execute(select(func.max(schema.events.c.id))).scalar(),
        conn.execute(select(func.max(schema.stage_history.c.id))).scalar(),
        conn.execute(select(func.count(), func.max(schema.leads.c.updated_at)).select_from(schema.leads)).one()[:],
        uow.active_model().version,
    )


@dataclass(frozen=True, slots=True)
class _Figures:
    version: tuple[Any, ...]
    content: dict[str, Any]
    sources: list[dict[str, Any]]
    as_of: datetime


RETRY_AFTER = 60.0  # seconds between recomputations that fail


class InsightsCache:
    """The last computed content influence and sources of one workspace, and their recomputation
    in a background thread when the data has changed (one at a time; after a failure, not again
    for RETRY_AFTER seconds)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._lock = threading.Lock()
        self._figures: _Figures | None = None
        self._running: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._failed_at = 0.0  # time.monotonic() of the last failure

    def read(self, *, wait: float = 10.0) -> Insights | None:
        """The insights: the last figures (recomputed in the background when the data has changed
        since they were made). None while the first figures are still being computed after
        `wait` seconds; the error of the last computation when it failed and there is nothing
        to show."""
        with self.workspace.unit_of_work(read_only=True) as uow:
            version = data_version(uow)
            rejections = rejection_reasons(uow)
        with self._lock:
            figures = self._figures
            if figures is None or figures.version != version:
                self._start()
        if figures is None:
            self.wait(wait)
            with self._lock:
                figures, error = self._figures, self._failed
            if figures is None:
                if error is not None:
                    raise error
                return None
        with self._lock:
            said = None if self._failed is None else f"{type(self._failed).__name__}: {self._failed}"[:300]
        return Insights(figures.content, figures.sources, rejections, figures.as_of, figures.version == version, said)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the computation under way, if any; whether none is under way now."""
        running = self._running
        if running is not None:
            running.join(timeout)
        return self._running is None

    def _start(self) -> None:
        """Start a recomputation (the lock is held), unless one runs or the last failed lately.
        Not a daemon: an interpreter that exits lets it finish, so its export is always removed."""
        lately = self._failed is not None and time.monotonic() - self._failed_at < RETRY_AFTER
        if self._running is None and not lately:
            self._running = threading.Thread(target=self._compute, name="qualify-insights")
            self._running.start()

    def _compute(self) -> None:
        try:
            with self.workspace.unit_of_work(read_only=True) as uow:
                version = data_version(uow)
            as_of = utcnow()
            content, sources = compute(self.workspace)
            with self._lock:
                self._figures = _Figures(version, content, sources, as_of)
                self._failed = None
        except Exception as error:  # kept for the request that waits, and said on the page
            log.exception("the insights could not be computed")
            with self._lock:
                self._failed, self._failed_at = error, time.monotonic()
        finally:
            with self._lock:
                self._running = None
