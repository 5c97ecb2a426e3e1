"""The dashboard's insights: content influence among MQLs, sources with sales' acceptance, and why
MQLs were rejected. One query each on the batch side: the store's tables on PostgreSQL, else a
Parquet export made for them and made again only when the data changed."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.analytics.batch_evaluator import Sources
from qualify.analytics.reports import content_influence, sources_report
from qualify.service.analytics.batch_scores import on_engine
from qualify.service.analytics.export import export_workspace
from qualify.service.reading.dashboard import rejection_reasons
from qualify.service.unit_of_work import UnitOfWork, Workspace

# An export kept between calls: the data version it was made of, and its folder.
KeptExport = tuple[Any, Path]


@dataclass(frozen=True, slots=True)
class Insights:
    content: dict[str, Any]  # analytics.reports.content_influence: reaching customer, among MQLs
    sources: list[dict[str, Any]]  # analytics.reports.sources_report, by source
    rejections: list[tuple[str, int]]  # reason code, how many rejections gave it; commonest first
    export: KeptExport | None  # the export read, to keep for the next call (None on PostgreSQL)


def insights(workspace: Workspace, kept: KeptExport | None = None) -> Insights:
    """The insights now. Off PostgreSQL they are read from `kept` while the data has not changed
    since it was made, else from a new export (and `kept`'s folder is removed)."""

    def read(sources: Sources) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return content_influence(sources, target="customer", among="mql"), sources_report(sources, "source")

    export = None
    if workspace.settings.database_url.startswith("postgresql"):
        content, by_source = on_engine(workspace, "postgres", None, read)
    else:
        export = fresh_export(workspace, kept)
        content, by_source = on_engine(workspace, "duckdb", export[1], read)
    with workspace.unit_of_work(read_only=True) as uow:
        rejections = rejection_reasons(uow)
    return Insights(content, by_source, rejections, export)


def data_version(uow: UnitOfWork) -> tuple[Any, ...]:
    """What changes whenever the export would: the newest event and stage change, the leads'
    count and latest update, and the active scoring model."""
    conn = uow.connection
    return (
        conn.execute(select(func.max(schema.events.c.id))).scalar(),
        conn.execute(select(func.max(schema.stage_history.c.id))).scalar(),
        conn.execute(select(func.count(), func.max(schema.leads.c.updated_at)).select_from(schema.leads)).one()[:],
        uow.active_model().version,
    )


def fresh_export(workspace: Workspace, kept: KeptExport | None) -> KeptExport:
    """`kept` while the data is as it was when it was made, else a new export (in a folder of its
    own under the temporary directory; `kept`'s is removed)."""
    with workspace.unit_of_work(read_only=True) as uow:
        key = data_version(uow)
    if kept is not None and kept[0] == key and kept[1].exists():
        return kept
    folder = Path(tempfile.mkdtemp(prefix="qualify-insights-")) / "export"
    export_workspace(workspace, folder)
    if kept is not None:
        shutil.rmtree(kept[1].parent, ignore_errors=True)
    return key, folder
