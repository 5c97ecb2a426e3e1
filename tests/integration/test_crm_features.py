"""Features from what CRM histories hold: event properties (sums, means, frequent values), recency-
weighted counts, the lead's deals, and its account's other people — each equal online and in the
training set, on SQLite with DuckDB and on PostgreSQL, each named in words, none reading what
happened after its instant."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from tests.conftest import batch_equals_online, workspace_on
from typer.testing import CliRunner

from qualify.adapters import schema
from qualify.analytics.batch_evaluator import Sources
from qualify.analytics.engines import duckdb_sources, postgres_sources
from qualify.demo.crm import CrmShape, generate_crm_history, write_crm_history
from qualify.domain.errors import InvalidInput
from qualify.domain.model_loader import default_model_text
from qualify.entrypoints.cli import app
from qualify.predictive.features import TrainingSet, features_as_of, training_set
from qualify.predictive.online import Predictor, describe
from qualify.predictive.recipe import ACCOUNT_COLUMNS, DEAL_COLUMNS, decay
from qualify.predictive.training import train
from qualify.service.analytics.export import export_workspace
from qualify.service.imports.files import import_file
from qualify.service.pipeline import reacting
from qualify.service.predictions import serving as predictions
from qualify.service.unit_of_work import Workspace

SHAPE = CrmShape(companies=30, people=200)
SEED = 11
NOW = SHAPE.end
AS_OF = datetime(2025, 3, 1, tzinfo=UTC)  # an instant with deals open and activity after it


@dataclass
class Crm:
    workspace: Workspace
    sources: Sources
    rows: TrainingSet
    predictor: Predictor


def build(workspace: Workspace, folder: Path, engine_name: str) -> Crm:
    files = write_crm_history(folder / "crm", SHAPE, SEED)
    history = reacting(workspace, history_before=NOW)
    for kind, path in (("accounts", files.accounts), ("events", files.events)):
        assert import_file(history, kind, path, now=NOW).rejected == 0
    for kind, path in (("stages", files.stages), ("deals", files.deals)):
        assert import_file(workspace, kind, path, now=NOW).rejected == 0
    if engine_name == "sqlite":
        export_workspace(workspace, folder / "export")
        sources = duckdb_sources(folder / "export")
    else:
        sources = postgres_sources(workspace.engine.url.render_as_string(hide_password=False))
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
    rows = training_set(model, sources, target="customer", within_days=150, cutoff="created+45", end=NOW)
    trained = train(rows.frame, rows.labels, rows.times, rows.spec)
    document = predictions.artefact(trained, rows.recipe, {"training_set": rows.summary(), **trained.report})
    with workspace.unit_of_work() as uow:
        version, _ = predictions.store_model(uow, document)
        predictions.activate(uow, version)
        found = predictions.predictor(uow, version)
    return Crm(workspace, sources, rows, found)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def crm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crm]:
    folder = tmp_path_factory.mktemp(f"crm-{request.param}")
    with workspace_on(request.param, request, folder) as workspace:
        yield build(workspace, folder, request.param)


def assert_frames_equal(expected: pd.DataFrame, got: pd.DataFrame, columns: tuple[str, ...], numeric: set[str]) -> None:
    for column in columns:
        a, b = expected[column].to_numpy(), got[column].to_numpy()
        if column in numeric:
            assert np.allclose(a.astype(float), b.astype(float), equal_nan=True, atol=1e-6), column
        else:
            assert [None if x != x else x for x in a] == [None if y != y else y for y in b], column


def test_the_recipe_finds_properties_deals_and_accounts_in_a_crm_history(crm: Crm) -> None:
    recipe, frame = crm.rows.recipe, crm.rows.frame
    assert recipe.numbers == {
        "web_session_pages": ["web_session", "pages"],
        "web_session_pricing_pages": ["web_session", "pricing_pages"],
    }
    assert {tuple(v) for v in recipe.values.values()} >= {
        ("sales_activity", "outcome", "connected"),
        ("sales_activity", "outcome", "voicemail"),
        ("sales_activity", "channel", "call"),
        ("form_submit", "form", "signup"),
    }
    assert not any(name == "campaign" for _, name, _ in recipe.values.values())  # content: an item already
    assert recipe.weighted and recipe.deals and recipe.account
    for column in ("sum_web_session_pricing_pages", "weighted_web_session", "deals_open", "account_other_events"):
        assert column in crm.rows.spec.numeric and frame[column].sum() > 0, column
    assert frame["mean_web_session_pages"].isna().any() and frame["mean_web_session_pages"].notna().any()


def test_the_features_hold_what_the_files_say_as_of_each_cutoff(crm: Crm) -> None:
    """Computed here from the generated rows themselves, not by either implementation."""
    data = generate_crm_history(SHAPE, SEED)
    events = pd.DataFrame(data["events"][1:], columns=data["events"][0])
    events["occurred_at"] = pd.to_datetime(events["occurred_at"], utc=True)
    deals = pd.DataFrame(data["deals"][1:], columns=data["deals"][0])
    with crm.workspace.unit_of_work(read_only=True) as uow:
        emails = dict(uow.connection.execute(select(schema.leads.c.id, schema.leads.c.email)).all())
    frame = crm.rows.frame.set_index("lead_id")
    checked = 0
    for lead_id, row in frame.iterrows():
        email = emails[int(lead_id)]
        cutoff = row["cutoff"]
        mine = events[(events.email == email) & (events.occurred_at <= cutoff)]
        sessions = [json.loads(p) for p in mine[mine.type == "web_session"]["properties"]]
        assert row["sum_web_session_pricing_pages"] == sum(s["pricing_pages"] for s in sessions)
        if sessions:
            assert row["mean_web_session_pages"] == pytest.approx(np.mean([s["pages"] for s in sessions]))
        calls = [json.loads(p)["outcome"] for p in mine[mine.type == "sales_activity"]["properties"]]
        assert row["count_sales_activity_outcome_connected"] == calls.count("connected")
        ages = [(cutoff - t).total_seconds() / 86_400 for t in mine[mine.type == "web_session"]["occurred_at"]]
        assert row["weighted_web_session"] == pytest.approx(sum(decay(a) for a in ages), abs=1e-6)
        company = email.split("@")[1]
        others = events[events.email.str.endswith("@" + company) & (events.email != email)]
        assert row["account_other_events"] == int((others.occurred_at <= cutoff).sum())
        mine_deals = deals[deals.email == email]
        opened = pd.to_datetime(mine_deals["opened_at"], utc=True)
        closed = pd.to_datetime(mine_deals["closed_at"].replace("", None), utc=True)
        open_now = (opened <= cutoff) & (closed.isna() | (closed > cutoff))
        assert row["deals_open"] == int(open_now.sum())
        assert row["open_deal_amount"] == pytest.approx(float(mine_deals["amount"].astype(float)[open_now].sum()))
        checked += 1
    assert checked == len(frame) > 100
    assert (frame["deals_open"] > 0).sum() > 5  # deals open at their cutoff: the features are exercised


def test_online_features_equal_the_training_set_s_at_the_same_instant(crm: Crm) -> None:
    rows = crm.rows
    with crm.workspace.unit_of_work(read_only=True) as uow:
        at = {int(r.lead_id): r.cutoff.to_pydatetime() for r in rows.frame.itertuples()}
        people = {s.lead_id: s for s in predictions.subjects(uow, at.keys(), at, crm.predictor.recipe)}
    online = crm.predictor.frame([people[i] for i in rows.frame["lead_id"]])
    assert_frames_equal(rows.frame, online, rows.spec.columns, set(rows.spec.numeric))
    trained = crm.predictor.trained
    assert np.allclose(trained.probabilities(rows.frame), trained.probabilities(online), atol=1e-9)


def test_batch_features_as_of_an_instant_equal_the_online_ones(crm: Crm) -> None:
    with crm.workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
        batch = features_as_of(model, crm.sources, AS_OF, crm.predictor.recipe)
        ids = [int(i) for i in batch["lead_id"]]
        people = predictions.subjects(uow, ids, dict.fromkeys(ids, AS_OF), crm.predictor.recipe)
    online = crm.predictor.frame(people)
    spec = crm.predictor.trained.spec
    assert len(batch) > 50
    assert_frames_equal(batch, online, spec.columns, set(spec.numeric))


def test_nothing_after_the_instant_is_read(crm: Crm) -> None:
    """The leakage test: the features as of an instant are the same when everything that happened
    after it is taken out of the data — events, stage changes, leads, and deals (one closed after
    it was still open then)."""
    s, at = crm.sources, ibis.literal(AS_OF)
    assert s.history is not None and s.deals is not None
    deals = s.deals.filter(s.deals.opened_at <= at)
    later = deals.closed_at > at
    deals = deals.mutate(
        closed_at=later.ifelse(ibis.null(deals.closed_at.type()), deals.closed_at),
        outcome=later.ifelse("open", deals.outcome),
        amount=deals.amount,
    )
    truncated = Sources(
        leads=s.leads.filter(s.leads.created_at <= at),
        accounts=s.accounts,
        events=s.events.filter(s.events.occurred_at <= at),
        history=s.history.filter(s.history.at <= at),
        deals=deals,
    )
    with crm.workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
    recipe = crm.predictor.recipe
    full, cut = features_as_of(model, s, AS_OF, recipe), features_as_of(model, truncated, AS_OF, recipe)
    spec = crm.predictor.trained.spec
    assert list(full["lead_id"]) == list(cut["lead_id"])
    assert_frames_equal(full, cut, spec.columns, set(spec.numeric))
    # ... and there was something after it to leave out.
    assert int(s.events.filter(s.events.occurred_at > at).count().to_pyarrow().as_py()) > 100
    assert int(s.deals.filter(s.deals.closed_at > at).count().to_pyarrow().as_py()) > 0


def test_every_feature_is_explained_in_words(crm: Crm) -> None:
    recipe, frame = crm.predictor.recipe, crm.rows.frame
    for column in crm.predictor.trained.spec.columns:
        for value in (frame[column].iloc[0], frame[column].max() if column in crm.rows.spec.numeric else None):
            words = describe(column, value, recipe)
            assert " = " not in words and "_" not in words, (column, words)
    assert describe("sum_web_session_pricing_pages", 7.0, recipe) == "web session pricing pages: 7 in all"
    assert describe("mean_web_session_pages", math.nan, recipe) == "no web session with pages yet"
    assert describe("count_sales_activity_outcome_connected", 2, recipe) == "sales activity outcome connected 2×"
    assert describe("deals_open", 1.0, recipe) == "1 open deal"
    assert describe("open_deal_amount", 12_000.0, recipe) == "open deals worth 12,000"
    assert describe("account_other_qualified", 2.0, recipe) == "2 other people at the account qualified"
    assert set(DEAL_COLUMNS) | set(ACCOUNT_COLUMNS) <= set(crm.predictor.trained.spec.columns)
    lead_id = int(crm.rows.frame.loc[crm.rows.frame["deals_open"] > 0, "lead_id"].iloc[0])
    with crm.workspace.unit_of_work(read_only=True) as uow:
        [explanation] = crm.predictor.explain(
            predictions.subjects(uow, [lead_id], {lead_id: AS_OF + timedelta(days=400)}, crm.predictor.recipe)
        )
    named = {c.feature for c in explanation.contributions}
    assert named & {"deals_open", "open_deal_amount", "days_deal_open", "deals_lost"}


def test_the_batch_probability_as_of_an_instant_equals_the_online_one(crm: Crm) -> None:
    assert batch_equals_online(crm.workspace, crm.sources, AS_OF) > 50


def test_a_family_of_features_is_left_out_by_name(crm: Crm) -> None:
    with crm.workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
    rows = training_set(
        model, crm.sources, target="customer", within_days=150, cutoff="created+45", end=NOW,
        without=("deals", "account-roll-ups", "event-properties", "recency-weights"),
    )  # fmt: skip
    recipe = rows.recipe
    assert (recipe.numbers, recipe.values, recipe.weighted, recipe.deals, recipe.account) == (
        {},
        {},
        False,
        False,
        False,
    )
    assert not set(rows.spec.columns) & set(crm.rows.recipe.extra_columns())
    assert set(rows.spec.columns) < set(crm.rows.spec.columns)
    with pytest.raises(InvalidInput, match="families: event-properties, recency-weights, deals, account-roll-ups"):
        training_set(
            model, crm.sources, target="customer", within_days=150, cutoff="created+45", end=NOW, without=("deal",)
        )


def test_every_report_has_something_to_say_right_after_the_import(crm: Crm, tmp_path: Path) -> None:
    """The commands a user runs first, on the imported history alone (no live event yet)."""
    runner, db = CliRunner(), ["--db", crm.workspace.settings.database_url]

    def run(*args: str) -> Any:
        done = runner.invoke(app, [*args, *db, "--json"])
        assert done.exit_code == 0, (args, done.output)
        return json.loads(done.stdout)

    funnel = run("funnel")
    assert funnel["total_leads"] == SHAPE.people and funnel["reached"]["customer"] > 10
    cohorts = run("report", "cohorts")
    assert len(cohorts) > 6 and sum(c["leads"] for c in cohorts) == SHAPE.people
    assert sum(c["customer"]["count"] for c in cohorts) == funnel["reached"]["customer"]
    content = run("report", "content", "--target", "customer")
    assert content["items"] and content["converted"]
    model = tmp_path / "candidate.yaml"
    model.write_text(default_model_text(), encoding="utf-8")
    backtest = run("backtest", str(model), "--from", "2024-03-01T00:00:00Z", "--to", "2025-12-01T00:00:00Z")
    # History is received when it happened: a backtest over the past replays it.
    assert backtest["events"] > 1000 and len(backtest["weeks"]) > 50
    assert backtest["models"]["candidate"]["customers"] > 10
    advice = run("advise", "--capacity", "5", "--target", "customer", "--within", "150", "--cutoff", "created+45")
    assert advice["chosen"]["flagged"] > 0 and advice["converted"] > 0


def test_the_roll_ups_from_the_kept_counts_equal_the_counted_ones(crm: Crm) -> None:
    """A colleague's events by an instant as its kept count less those after the instant (online,
    `kept_as`) equal the events counted one by one, at each lead's newest activity and at instants
    with activity after them; and with some colleagues' rows missing (counted from their events)."""
    from sqlalchemy import delete, select

    from qualify.adapters import schema
    from qualify.service.predictions.context import rollups_of

    predictions.refresh_all(crm.workspace)  # every lead's behaviour kept under the active model
    leads = schema.leads
    with crm.workspace.unit_of_work() as uow:
        conn = uow.connection
        rows = conn.execute(
            select(leads.c.id, leads.c.created_at, leads.c.last_event_at).where(leads.c.erased_at.is_(None))
        )
        newest = {r.id: max(r.last_event_at or r.created_at, r.created_at) for r in rows}
        recent = crm.predictor.recipe.recent_days
        for cuts in (newest, dict.fromkeys(newest, AS_OF), dict.fromkeys(newest, NOW)):
            counted = rollups_of(conn, cuts, recent)
            assert any(r["account_other_events"] for r in counted.values())
            assert rollups_of(conn, cuts, recent, kept_as=crm.predictor.version) == counted
        conn.execute(delete(schema.lead_behaviour).where(schema.lead_behaviour.c.lead_id.in_(sorted(newest)[::3])))
        assert rollups_of(conn, newest, recent, kept_as=crm.predictor.version) == rollups_of(conn, newest, recent)
