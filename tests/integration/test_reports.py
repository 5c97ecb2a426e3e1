"""Funnel analytics on the batch side agree with the funnel of the stage history, on every engine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from qualify.demo.world import build_demo
from qualify.domain.model_loader import default_model_text
from qualify.service.batch_scoring import cohort_report
from qualify.service.models import activate_model
from qualify.service.queries import funnel
from qualify.service.unit_of_work import Workspace, open_workspace
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def demo_workspace(url: str) -> Workspace:
    workspace = open_workspace(Settings(database_url=url), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=9, leads=200, days=90, now=NOW)
    return workspace


def check_against_funnel(workspace: Workspace, rows: list[dict[str, object]]) -> None:
    with workspace.unit_of_work(read_only=True) as uow:
        report = funnel(uow)
    assert sum(int(r["leads"]) for r in rows) == report.total_leads  # type: ignore[call-overload]
    for stage in ("mql", "sql", "opportunity", "customer"):
        assert sum(r[stage]["count"] for r in rows) == report.reached[stage], stage  # type: ignore[index]


@pytest.mark.parametrize("by", ["month", "source", "channel"])
def test_cohorts_on_duckdb_add_up_to_the_funnel(tmp_path: Path, by: str) -> None:
    workspace = demo_workspace(f"sqlite:///{tmp_path / 'demo.db'}")
    rows = cohort_report(workspace, by=by)
    check_against_funnel(workspace, rows)
    for row in rows:
        low, high = row["mql"]["interval_95"]
        assert low <= row["mql"]["rate"] <= high
    workspace.close()


def test_cohorts_on_postgresql_equal_those_on_duckdb(postgres_schema_url: str) -> None:
    workspace = demo_workspace(postgres_schema_url)
    assert cohort_report(workspace, by="month", engine="postgres") == cohort_report(
        workspace, by="month", engine="duckdb"
    )
    workspace.close()
