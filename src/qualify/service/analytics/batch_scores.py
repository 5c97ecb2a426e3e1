"""Batch scoring use case: every lead's scores as of an instant, on the engine chosen, with the
active predictive model's probability as of that instant."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pyarrow as pa

from qualify.analytics.batch_evaluator import Sources, account_scores_as_of, explanations, scores_as_of
from qualify.analytics.engines import duckdb_sources, postgres_sources, spark_sources
from qualify.analytics.reports import cohorts
from qualify.domain.errors import InvalidInput
from qualify.domain.scoring_model import ScoringModel
from qualify.service.analytics.export import export_workspace
from qualify.service.predictions.serving import active_predictor
from qualify.service.unit_of_work import Workspace

if TYPE_CHECKING:
    from qualify.predictive.online import Predictor

T = TypeVar("T")
Engine = Literal["duckdb", "postgres", "spark"]
ENGINES: tuple[Engine, ...] = ("duckdb", "postgres", "spark")


COLUMNS = ("lead_id", "email", "external_id", "fit", "grade", "persona", "engagement", "probability")
ACCOUNT_COLUMNS = ("account_id", "domain", "fit", "grade", "engagement", "covered", "roles")


@dataclass(frozen=True)
class BatchScores:
    engine: str
    as_of: datetime
    model_version: str
    table: pa.Table  # COLUMNS: the lead's keys, its scores and probability as of `as_of`
    explanations: pa.Table | None = None  # lead_id, kind, rule, points, event_id, occurred_at
    predictive_version: str | None = None  # the predictive model that gave the probabilities
    accounts: pa.Table | None = None  # ACCOUNT_COLUMNS: every account's scores as of `as_of`

    def summary(self) -> dict[str, Any]:
        rows = self.table.to_pylist()
        grades: dict[str, int] = {}
        for row in rows:
            grades[row["grade"]] = grades.get(row["grade"], 0) + 1
        engagement = [row["engagement"] for row in rows]
        chances = [row["probability"] for row in rows if row["probability"] is not None]
        return {
            "engine": self.engine,
            "as_of": self.as_of.isoformat(),
            "model_version": self.model_version,
            "leads": len(rows),
            "grades": dict(sorted(grades.items())),
            "engagement_mean": round(sum(engagement) / len(engagement), 4) if engagement else None,
            "predictive_model": self.predictive_version,
            "probabilities": len(chances),
            "probability_mean": round(sum(chances) / len(chances), 4) if chances else None,
        } | ({"accounts": self.accounts.num_rows} if self.accounts is not None else {})


def batch_scores(
    workspace: Workspace,
    *,
    engine: str,
    as_of: datetime,
    export: Path | None = None,
    explain: bool = False,
    accounts: bool = False,
) -> BatchScores:
    """Score every lead as of `as_of` with the active model, on DuckDB or Spark (over a Parquet
    export, made now unless `export` names one) or on PostgreSQL (the workspace's own tables);
    with `explain`, every score's contributions too (analytics.batch.explanations). With an active
    predictive model, each lead's probability as of `as_of` too (`batch_probabilities`). With
    `accounts`, every account's scores as of `as_of` too (`account_scores_as_of`: equal to the
    roll-up the ingestion pipeline keeps; tested)."""
    with workspace.unit_of_work() as uow:
        model = uow.active_model()
        found = active_predictor(uow)
    if accounts and model.accounts is None:
        raise InvalidInput(f"model {model.version} scores no accounts (it has no accounts section)", field="accounts")
    companies: list[pa.Table] = []

    def run(sources: Sources) -> tuple[pa.Table, pa.Table | None, dict[int, float]]:
        if accounts:
            companies.append(_account_table(model, sources, as_of))
        scores = scores_as_of(model, sources, as_of)
        keys = sources.leads.select(
            key_id=sources.leads.id, email=sources.leads.email, external_id=sources.leads.external_id
        )
        named = scores.left_join(keys, scores.lead_id == keys.key_id).drop("key_id")
        table = named.to_pyarrow()
        why = explanations(model, sources, as_of).to_pyarrow() if explain else None
        chances = batch_probabilities(found, model, sources, as_of) if found is not None else {}
        return table, why, chances

    table, why, chances = on_engine(workspace, engine, export, run)
    if why is not None:
        why = why.sort_by(
            [("lead_id", "ascending"), ("kind", "descending"), ("event_id", "ascending"), ("rule", "ascending")]
        )
    table = table.sort_by("lead_id")
    probability = pa.array([chances.get(i) for i in table.column("lead_id").to_pylist()], pa.float64())
    table = table.append_column("probability", probability).select(list(COLUMNS))
    return BatchScores(
        engine, as_of, model.version, table, why, found.version if found is not None else None,
        companies[0] if companies else None,
    )  # fmt: skip


def _account_table(model: ScoringModel, sources: Sources, as_of: datetime) -> pa.Table:
    """Every account's scores as of `as_of` with its domain, the covered roles named."""
    assert model.accounts is not None
    roles = [r.name for r in model.accounts.roles]
    scores = account_scores_as_of(model, sources, as_of)
    keys = sources.accounts.select(key_id=sources.accounts.id, domain=sources.accounts.domain)
    rows = scores.left_join(keys, scores.account_id == keys.key_id).to_pyarrow().sort_by("account_id").to_pylist()
    for row in rows:
        row["roles"] = [name for i, name in enumerate(roles) if row.pop(f"role_{i}")]
    columns = {name: [row[name] for row in rows] for name in ACCOUNT_COLUMNS}
    types = {"account_id": pa.int64(), "domain": pa.string(), "fit": pa.float64(), "grade": pa.string(),
             "engagement": pa.float64(), "covered": pa.int64(), "roles": pa.list_(pa.string())}  # fmt: skip
    return pa.table({name: pa.array(columns[name], types[name]) for name in ACCOUNT_COLUMNS})


def batch_probabilities(found: Predictor, model: ScoringModel, sources: Sources, as_of: datetime) -> dict[int, float]:
    """The predictive model's probability of every lead created by `as_of` (and not erased), as of
    that instant: the training set's features with `as_of` as the cutoff (predictive.features),
    built on the batch engine, the fit and engagement under `model` (the active scoring model, as
    online). Equal to the online probability at that instant (serving.subjects; tested)."""
    from qualify.predictive.features import features_as_of

    frame = features_as_of(model, sources, as_of, found.recipe)
    if frame.empty:
        return {}
    values = found.trained.probabilities(frame)
    return {int(i): float(p) for i, p in zip(frame["lead_id"], values, strict=True)}


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
