"""Funnel analytics on the batch side agree with the funnel of the stage history, on every engine."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.conftest import fresh_postgres_schema

from qualify.adapters import schema
from qualify.analytics.batch_evaluator import Sources
from qualify.analytics.engines import duckdb_sources, postgres_sources
from qualify.analytics.reports import (
    cohorts,
    content_influence,
    lookalikes,
    paths,
    relative_risk,
    sources_report,
    velocity,
)
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.model_loader import default_model_text
from qualify.service.analytics.batch_scores import cohort_report
from qualify.service.analytics.export import export_workspace
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.reading.funnel import funnel
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def demo_workspace(url: str, leads: int = 200, days: int = 90) -> Workspace:
    workspace = open_workspace(Settings(database_url=url), create=True)
    with workspace.unit_of_work() as uow:
        activate_model(uow, default_model_text())
    build_demo(workspace, seed=9, leads=leads, days=days, now=NOW)
    return workspace


def check_against_funnel(workspace: Workspace, rows: list[dict[str, object]]) -> None:
    with workspace.unit_of_work(read_only=True) as uow:
        report = funnel(uow)
    assert sum(int(r["leads"]) for r in rows) == report.total_leads  # type: ignore[call-overload]
    for stage in ("mql", "sql", "opportunity", "customer"):
        assert sum(r[stage]["count"] for r in rows) == report.reached[stage], stage  # type: ignore[index]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """The 200-lead demo on SQLite, built once for the tests that only read it."""
    workspace = demo_workspace(f"sqlite:///{tmp_path_factory.mktemp('small-demo') / 'demo.db'}")
    yield workspace
    workspace.close()


@pytest.fixture(scope="module")
def postgres_demo() -> Iterator[tuple[Workspace, str]]:
    """The 200-lead demo on PostgreSQL and its URL, built once for the tests that only read it."""
    with fresh_postgres_schema() as url:
        workspace = demo_workspace(url)
        yield workspace, url
        workspace.close()


@pytest.mark.parametrize("by", ["month", "source", "channel"])
def test_cohorts_on_duckdb_add_up_to_the_funnel(small_demo: Workspace, by: str) -> None:
    workspace = small_demo
    rows = cohort_report(workspace, by=by)
    check_against_funnel(workspace, rows)
    for row in rows:
        low, high = row["mql"]["interval_95"]
        assert low <= row["mql"]["rate"] <= high


def test_cohorts_on_postgresql_equal_those_on_duckdb(postgres_demo: tuple[Workspace, str]) -> None:
    workspace, _ = postgres_demo
    assert cohort_report(workspace, by="month", engine="postgres") == cohort_report(
        workspace, by="month", engine="duckdb"
    )


# --- velocity, sources, content, paths, lookalikes -------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, Sources]]:
    folder = tmp_path_factory.mktemp("reports")
    workspace = demo_workspace(f"sqlite:///{folder / 'demo.db'}", leads=400, days=150)
    export_workspace(workspace, folder / "export")
    yield workspace, duckdb_sources(folder / "export")
    workspace.close()


def test_velocity_agrees_with_the_funnel_of_the_stage_history(demo: tuple[Workspace, Sources]) -> None:
    workspace, sources = demo
    data = velocity(sources)
    with workspace.unit_of_work(read_only=True) as uow:
        report = funnel(uow)
    for stage, stay in data["days_in_stage"].items():
        expected = report.days_in_stage[stage]
        assert stay["completed"] == expected["count"], stage
        assert stay["median"] == pytest.approx(expected["median"], abs=0.011), stage
        assert stay["p90"] == pytest.approx(expected["p90"], abs=0.011), stage
    assert sum(s["completed"] + s["open"] for s in data["days_in_stage"].values()) == sum(
        1 for _ in history_rows(workspace)
    )
    for stage, reach in data["days_to_reach"].items():
        assert reach["leads"] == report.reached[stage], stage
        if reach["leads"]:
            assert 0 <= reach["median"] <= reach["p90"]


def test_sources_count_the_decisions_sales_made(demo: tuple[Workspace, Sources]) -> None:
    workspace, sources = demo
    with workspace.unit_of_work(read_only=True) as uow:
        report = funnel(uow)
    for by in ("source", "channel", "campaign"):
        rows = sources_report(sources, by)
        assert sum(r["leads"] for r in rows) == report.total_leads
        assert sum(r["mql"]["count"] for r in rows) == report.reached["mql"]
        assert sum(r["decisions"] for r in rows) == report.acceptance["decided"] > 0
        assert sum(r["accepted"]["count"] for r in rows) == report.acceptance["accepted"]["count"]
        assert sum(r["customer"]["count"] for r in rows) == report.reached["customer"]
    rejected = report.reasons["mql->nurture"]
    tops = [r["top_rejection_reason"] for r in sources_report(sources, "source") if r["top_rejection_reason"]]
    assert tops and all(t["reason"] in rejected and t["count"] <= rejected[t["reason"]] for t in tops)


def test_campaign_cohorts_are_first_touch(demo: tuple[Workspace, Sources]) -> None:
    workspace, sources = demo
    rows = cohorts(sources, "campaign")
    check_against_funnel(workspace, rows)
    first: dict[int, str] = {}
    with workspace.unit_of_work(read_only=True) as uow:
        e = schema.events
        for lead_id, properties in uow.connection.execute(
            select(e.c.lead_id, e.c.properties).order_by(e.c.lead_id, e.c.occurred_at, e.c.id)
        ):
            if properties.get("campaign") is not None:
                first.setdefault(lead_id, properties["campaign"])
    counts = Counter(first.values())
    assert {r["cohort"]: r["leads"] for r in rows if r["cohort"] != "(none)"} == dict(counts)


def test_relative_risk_and_its_interval() -> None:
    risk = relative_risk(20, 100, 10, 200)
    assert risk["lift"] == 4.0
    assert risk["interval_95"] == [1.947, 8.219]
    assert relative_risk(0, 50, 10, 200) == {"lift": 0.0, "interval_95": None}
    assert relative_risk(5, 50, 0, 200) == {"lift": None, "interval_95": None}


def test_content_influence_counts_only_what_came_before_the_conversion(demo: tuple[Workspace, Sources]) -> None:
    workspace, sources = demo
    data = content_influence(sources, by="kind", target="sql", min_support=5)
    # The same counts, by hand from the store: a converter's events after it reached SQL do not count.
    reached: dict[int, datetime] = {}
    kinds: dict[str, set[int]] = defaultdict(set)
    with workspace.unit_of_work(read_only=True) as uow:
        h, e = schema.stage_history, schema.events
        for lead_id, at in uow.connection.execute(
            select(h.c.lead_id, h.c.at).where(h.c.to_stage == "sql").order_by(h.c.at)
        ):
            reached.setdefault(lead_id, at)
        for lead_id, kind, occurred_at in uow.connection.execute(select(e.c.lead_id, e.c.type, e.c.occurred_at)):
            if lead_id not in reached or occurred_at < reached[lead_id]:
                kinds[kind].add(lead_id)
        total = len(list(uow.connection.execute(select(schema.leads.c.id))))
    assert data["leads"] == total and data["converted"]["count"] == len(reached)
    by_item = {row["item"]: row for row in data["items"]}
    assert set(by_item) | {k for k, v in kinds.items() if len(v) < 5} == set(kinds)
    assert data["items_below_support"] == sum(1 for v in kinds.values() if len(v) < 5)
    for kind, engaged in kinds.items():
        if len(engaged) < 5:
            continue
        row = by_item[kind]
        converted = sum(1 for lead in engaged if lead in reached)
        assert row["engaged"] == len(engaged) and row["engaged_converted"]["count"] == converted, kind
        assert row["others_converted"]["count"] == len(reached) - converted
        assert row == by_item[kind] | relative_risk(
            converted, len(engaged), len(reached) - converted, total - len(engaged)
        )
    lifts = [r["lift"] for r in data["items"] if r["lift"] is not None]
    assert lifts == sorted(lifts, reverse=True)
    among_mql = content_influence(sources, by="kind", target="sql", among="mql", min_support=5)
    assert among_mql["leads"] == funnel_reached(workspace, "mql") and among_mql["converted"]["count"] == len(reached)


def test_paths_compare_converters_with_leads_who_dropped_off(demo: tuple[Workspace, Sources]) -> None:
    _, sources = demo
    data = paths(sources, target="opportunity", steps=3, top=50)
    groups = data["groups"]
    assert groups["converted"]["leads"] > 0 and groups["dropped_off"]["leads"] > 0
    assert sum(p["converted"] for p in data["paths"]) <= groups["converted"]["leads"]
    for path in data["paths"]:
        steps = path["path"].split(" → ")
        assert 1 <= len(steps) <= 3
        assert all(a != b for a, b in itertools.pairwise(steps)), "repeats in a row are merged"
        assert path["converted_share"] == round(path["converted"] / groups["converted"]["leads"], 4)


def test_lookalikes_are_open_leads_ranked_by_what_converters_engaged_with(demo: tuple[Workspace, Sources]) -> None:
    workspace, sources = demo
    data = lookalikes(sources, target="sql", min_support=10, limit=15)
    assert data["items_used"] > 0 and 0 < len(data["leads"]) <= 15
    scores = [row["score"] for row in data["leads"]]
    assert scores == sorted(scores, reverse=True)
    with workspace.unit_of_work(read_only=True) as uow:
        h = schema.stage_history
        converted = set(uow.connection.execute(select(h.c.lead_id).where(h.c.to_stage == "sql")).scalars())
    for row in data["leads"]:
        assert row["stage"] in ("lead", "mql", "nurture") and row["lead_id"] not in converted
        assert row["because"] and all(b["lift"] > 1 for b in row["because"])


@pytest.mark.slow
def test_the_reports_on_postgresql_equal_those_on_duckdb(postgres_demo: tuple[Workspace, str], tmp_path: Path) -> None:
    workspace, postgres_url = postgres_demo
    export_workspace(workspace, tmp_path / "export")
    pg, duck = postgres_sources(postgres_url), duckdb_sources(tmp_path / "export")
    for report in (
        velocity,
        lambda s: sources_report(s, "campaign"),
        lambda s: content_influence(s, by="content", min_support=3),
        lambda s: paths(s, target="sql"),
        lambda s: lookalikes(s, target="sql", min_support=3),
    ):
        assert report(pg) == report(duck)


@pytest.mark.slow
def test_the_reports_run_on_spark(demo: tuple[Workspace, Sources], tmp_path: Path) -> None:
    pytest.importorskip("pyspark", reason="Spark is an optional engine: pip install 'qualify[spark]'")
    from qualify.analytics.engines import spark_sources

    workspace, duck = demo
    export_workspace(workspace, tmp_path / "export")
    spark = spark_sources(tmp_path / "export")
    assert velocity(spark) == velocity(duck)
    assert content_influence(spark, by="content", min_support=5) == content_influence(duck, by="content", min_support=5)
    assert paths(spark, target="sql") == paths(duck, target="sql")


def history_rows(workspace: Workspace) -> list[object]:
    with workspace.unit_of_work(read_only=True) as uow:
        return list(uow.connection.execute(select(schema.stage_history.c.id)))


def funnel_reached(workspace: Workspace, stage: str) -> int:
    with workspace.unit_of_work(read_only=True) as uow:
        return funnel(uow).reached[stage]


@pytest.mark.parametrize("engine_name", ["sqlite", "postgres"])
def test_a_backtest_on_spark_equals_one_process(engine_name: str, request: pytest.FixtureRequest) -> None:
    """The backtest's parts replayed as Spark tasks (executors opening the workspace's database by
    its URL) give the report one process gives, part order and all."""
    pytest.importorskip("pyspark", reason="Spark is an optional engine: pip install 'qualify[spark]'")
    from qualify.domain.model_loader import load_model
    from qualify.service.analytics.backtest import backtest

    workspace = (
        request.getfixturevalue("small_demo")
        if engine_name == "sqlite"
        else request.getfixturevalue("postgres_demo")[0]
    )
    with workspace.unit_of_work(read_only=True) as uow:
        live = uow.active_model()
    stricter = load_model(
        default_model_text().replace("thresholds: {A: 25, B: 40, C: 70}", "thresholds: {A: 45, B: 65, C: 95}")
    )
    alone = backtest(workspace, stricter, live, end=NOW, chunk=60)
    on_spark = backtest(workspace, stricter, live, end=NOW, chunk=60, engine="spark")
    assert on_spark.as_dict() == alone.as_dict()
    assert alone.leads == 200 and alone.models["candidate"] != alone.models["against"]
