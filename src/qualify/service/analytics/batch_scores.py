"""Batch scoring use case: every lead's scores as of an instant, on the engine chosen."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import pyarrow as pa

from qualify.analytics.batch_evaluator import Sources, explanations, scores_as_of
from qualify.analytics.engines import duckdb_sources, postgres_sources, spark_sources
from qualify.analytics.reports import cohorts
from qualify.domain.errors import InvalidInput
from qualify.service.analytics.export import export_workspace
from qualify.service.unit_of_work import Workspace

T = TypeVar("T")
Engine = Literal["duckdb", "postgres", "spark"]
ENGINES: tuple[Engine, ...] = ("duckdb", "postgres", "spark")


@dataclass(frozen=True)
class BatchScores:
    engine: str
    as_of: datetime
    model_version: str
    table: pa.Table  # lead_id, fit, grade, persona, engagement
    explanations: pa.Table | None = None  # lead_id, kind, rule, points, event_id, occurred_at

    def summary(self) -> dict[str, Any]:
        rows = self.table.to_pylist()
        grades: dict[str, int] = {}
        for row in rows:
            grades[row["grade"]] = grades.get(row["grade"], 0) + 1
        engagement = [row["engagement"] for row in rows]
        return {
            "engine": self.engine,
            "as_of": self.as_of.isoformat(),
            "model_version": self.model_version,
            "leads": len(rows),
            "grades": dict(sorted(grades.items())),
            "engagement_mean": round(sum(engagement) / len(engagement), 4) if engagement else None,
        }


def batch_scores(
    workspace: Workspace, *, engine: str, as_of: datetime, export: Path | None = None, explain: bool = False
) -> BatchScores:
    """Score every lead as of `as_of` with the active model, on DuckDB or Spark (over a Parquet
    export, made now unless `export` names one) or on PostgreSQL (the workspace's own tables);
    with `explain`, every score's contributions too (analytics.batch.explanations)."""
    with workspace.unit_of_work() as uow:
        model = uow.active_model()

    def run(sources: Sources) -> tuple[pa.Table, pa.Table | None]:
        table = scores_as_of(model, sources, as_of).to_pyarrow()
        why = explanations(model, sources, as_of).to_pyarrow() if explain else None
        return table, why

    table, why = on_engine(workspace, engine, export, run)
    if why is not None:
        why = why.sort_by(
            [("lead_id", "ascending"), ("kind", "descending"), ("event_id", "ascending"), ("rule", "ascending")]
        )
    return BatchScores(engine, as_of, model.version, table.sort_by("lead_id"), why)


def batch_sources(workspace: Workspace, engine: str, export: Path, *, make_export: bool) -> Sources:
    """The tables for `engine`: the workspace's own on postgres, a Parquet export otherwise
    (written to `export` first when `make_export`)."""
    if engine == "postgres":
        return postgres_sources(workspace.settings.database_url)
    if engine not in ENGINES:
        raise InvalidInput(f"unknown engine {engine!r}; expected one of: {', '.join(ENGINES)}", field="engine")
    if make_export:
        export_workspace(workspace, export)
    return duckdb_sources(export) if engine == "duckdb" else spark_sources(export)


def on_engine(workspace: Workspace, engine: str, export: Path | None, use: Callable[[Sources], T]) -> T:
    """Run `use` (an analytics.reports function) on the chosen engine's tables: the workspace's own on
    postgres, else `export` or, without one, an export made for the run and removed after it."""
    if export is not None or engine == "postgres":
        return use(batch_sources(workspace, engine, export or Path("."), make_export=False))
    with tempfile.TemporaryDirectory() as folder:
        return use(batch_sources(workspace, engine, Path(folder) / "export", make_export=True))


def cohort_report(
    workspace: Workspace, *, by: str, engine: str = "duckdb", export: Path | None = None
) -> list[dict[str, Any]]:
    """Leads per cohort (month of creation, source, channel, campaign) and how far each got (analytics.reports)."""
    return on_engine(workspace, engine, export, lambda sources: cohorts(sources, by))
