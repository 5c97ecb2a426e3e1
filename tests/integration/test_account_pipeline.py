"""Accounts kept by the ingestion pipeline, on each engine: their roll-up, scores and stage follow
their people's changes (equal to the account counted from its people, and to its scores on
demand), an account that becomes MQA is routed and announced, people accept or reject it (CLI,
API), and its people's opportunities and wins move it on."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from tests.conftest import key_for
from tests.integration.test_accounts import NOW, PEOPLE, T0
from typer.testing import CliRunner

from qualify.adapters import schema
from qualify.domain.accounts import Rollup
from qualify.domain.errors import IllegalTransition, InvalidInput, NotYourLead
from qualify.domain.model_loader import default_model_text
from qualify.domain.records import Account, Lead, make_event
from qualify.entrypoints.api import create_app
from qualify.entrypoints.cli import app
from qualify.service.integrations.webhooks import add_subscription
from qualify.service.lifecycle.accounts import act_on_account, recount_accounts
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.lead_admin import erase_lead, merge_leads
from qualify.service.lifecycle.leads import upsert_accounts, upsert_leads
from qualify.service.lifecycle.rescoring import rescore_all
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.reading.accounts import account_id_of, account_scores, account_view, list_accounts
from qualify.service.unit_of_work import UnitOfWork, Workspace


def stored(uow: UnitOfWork, domain: str = "acme.com") -> dict[str, Any]:
    return dict(
        uow.connection.execute(select(schema.accounts).where(schema.accounts.c.domain == domain)).one()._mapping
    )


def history(uow: UnitOfWork, domain: str = "acme.com") -> list[tuple[str | None, str, str]]:
    h, a = schema.account_stage_history, schema.accounts
    return [
        (r.from_stage, r.to_stage, r.actor)
        for r in uow.connection.execute(
            select(h).join(a, a.c.id == h.c.account_id).where(a.c.domain == domain).order_by(h.c.id)
        )
    ]


def events_of(who: str, kind: str, days_ago: list[float]) -> list[Any]:
    return [make_event(f"{who}-{kind}-{d}", kind, NOW - timedelta(days=d), email=f"{who}@acme.com") for d in days_ago]


def ingest(workspace: Workspace, events: list[Any]) -> None:
    for event in sorted(events, key=lambda e: e.occurred_at):  # one batch each: the roll-up kept event by event
        with workspace.unit_of_work() as uow:
            ingest_events(uow, [event], now=NOW)


# Enough for the default model's MQA: the practitioner downloads over and over (held at the cap),
# the champion twice, the economic buyer attends a webinar.
MQA_EVENTS = (
    events_of("fan", "content_download", [5.0, 4.9, 4.8, 4.7, 4.6, 4.5, 4.4, 4.3, 4.2, 4.1])
    + events_of("vp", "webinar_attended", [2.0])
    + events_of("ana", "content_download", [3.0, 2.9])
)


@pytest.fixture
def acme(workspace: Workspace) -> Workspace:
    """Acme (software, 800 people, US) and its four people of `test_accounts`, with a webhook
    for account moves; no events yet."""
    return furnish_acme(workspace)


def furnish_acme(workspace: Workspace) -> Workspace:
    """Give `workspace` what the `acme` fixture holds."""
    with workspace.unit_of_work() as uow:
        add_subscription(
            uow, "https://crm.example.com/hook", ["account.mqa", "account.stage.changed"], now=T0 - timedelta(days=1)
        )
        upsert_accounts(
            uow, [Account(domain="acme.com", name="Acme", industry="software", employees=800, country="US")], now=T0
        )
        upsert_leads(uow, PEOPLE, now=T0)
    return workspace


def test_an_account_is_scored_as_it_is_created_and_moves_as_its_people_engage(acme: Workspace) -> None:
    with acme.unit_of_work() as uow:
        row = stored(uow)
        # Scored from the start: its own fit, nobody engaged yet.
        assert row["stage"] == "target" and row["fit_score"] == 100 and row["fit_grade"] == "A"
        assert row["engagement_score"] == 0 and row["covered_roles"] == 0
    ingest(acme, events_of("fan", "content_download", [5.0]))
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["stage"] == "engaged" and row["covered_roles"] == 1  # the practitioner
        assert history(uow) == [("target", "engaged", "model")]
    # Many downloads by one person do not make an MQA: the cap holds them, and one role is not a group.
    ingest(acme, events_of("fan", "content_download", [4.9, 4.8, 4.7, 4.6, 4.5, 4.4, 4.3, 4.2, 4.1]))
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["stage"] == "engaged" and row["engagement_score"] <= 60 and row["covered_roles"] == 1
    ingest(acme, events_of("vp", "webinar_attended", [2.0]) + events_of("ana", "content_download", [3.0, 2.9]))
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["stage"] == "mqa" and row["covered_roles"] == 3 and row["engagement_score"] >= 60
        assert history(uow)[-1] == ("engaged", "mqa", "model")
        h = schema.account_stage_history
        reason = uow.connection.execute(select(h.c.reason).order_by(h.c.id.desc())).scalars().first()
        assert reason is not None and reason.startswith("fit 100.0 ≥ 45 and engagement")
        # Routed by the handoff's rules on the account's fields (US: north-america), its SLA clock started.
        assert row["owner"] == "sam.rivera" and row["sla_due_at"] is not None
        # MQA at the champion's first download: two roles (practitioner, champion) and the engagement.
        assert row["stage_entered_at"] == NOW - timedelta(days=3)
        # What the pipeline kept is the account counted from its people, and its scores on demand.
        at = row["scored_at"]
        kept = Rollup.from_json(row["rollup"])
        assert recount_accounts(uow, [row["id"]], now=at) == 1
        counted = stored(uow)
        again = Rollup.from_json(counted["rollup"])
        assert kept.engagement_at(at.timestamp()) == pytest.approx(again.engagement_at(at.timestamp()))
        assert counted["engagement_score"] == pytest.approx(row["engagement_score"])
        assert counted["covered_roles"] == row["covered_roles"] and counted["stage"] == "mqa"
        scores = account_scores(uow, row["id"], now=at)
        assert scores is not None and scores.engagement == pytest.approx(row["engagement_score"])
        assert len(scores.covered) == row["covered_roles"] and scores.fit == row["fit_score"]
        # Announced: each move as account.stage.changed, the MQA as account.mqa too.
        d = schema.webhook_deliveries
        kinds = [k for (k,) in uow.connection.execute(select(d.c.kind).order_by(d.c.id))]
        assert kinds == ["account.stage.changed", "account.stage.changed", "account.mqa"]
        payload = uow.connection.execute(select(d.c.payload).where(d.c.kind == "account.mqa")).scalar_one()
        assert (
            payload["account"]["domain"] == "acme.com" and payload["to"] == "mqa" and payload["owner"] == "sam.rivera"
        )
        assert payload["scores"]["covered_roles"] == 2  # as it was when it became MQA


def test_people_accept_or_reject_an_mqa_and_a_rejected_one_waits(acme: Workspace) -> None:
    ingest(
        acme,
        MQA_EVENTS,
    )
    with acme.unit_of_work() as uow:
        account_id = account_id_of(uow, "acme.com")
        with pytest.raises(InvalidInput, match="reject needs a reason code"):
            act_on_account(uow, account_id, "reject", by="sam.rivera", now=NOW)
        with pytest.raises(NotYourLead, match=r"owned by sam\.rivera, not alex\.chen"):
            act_on_account(uow, account_id, "reject", by="alex.chen", reason="no_budget", now=NOW, owned_by="alex.chen")
        change = act_on_account(uow, account_id, "reject", by="sam.rivera", reason="bad_timing", note="Q3", now=NOW)
        assert (change.from_stage.value, change.to_stage.value) == ("mqa", "engaged")
        row = stored(uow)
        assert row["stage"] == "engaged" and row["sla_due_at"] is None
        assert row["requalify_at"] == NOW + timedelta(days=30)
        # Announced as the model's moves are, as the person's.
        d = schema.webhook_deliveries
        last = uow.connection.execute(select(d.c.kind, d.c.payload).order_by(d.c.id.desc())).first()
        assert last is not None and last.kind == "account.stage.changed"
        assert {k: last.payload[k] for k in ("from", "to", "actor", "by", "reason", "note", "owner")} == {
            "from": "mqa", "to": "engaged", "actor": "user", "by": "sam.rivera", "reason": "bad_timing",
            "note": "Q3", "owner": "sam.rivera",
        }  # fmt: skip
    # More engagement within the 30 days does not make it MQA again.
    ingest(acme, events_of("vp", "pricing_page_view", [0.5]))
    with acme.unit_of_work() as uow:
        assert stored(uow)["stage"] == "engaged"
        assert history(uow)[-1] == ("mqa", "engaged", "user")
        with pytest.raises(IllegalTransition, match="accept applies to mqa"):
            act_on_account(uow, account_id, "accept", by="sam.rivera", now=NOW)
        view = account_view(uow, account_id, now=NOW)
        assert view.as_dict()["stage"]["history"][0]["reason"] == "bad_timing"
        assert view.as_dict()["stage"]["history"][0]["note"] == "Q3"


def test_its_peoples_opportunities_and_wins_move_the_account(acme: Workspace) -> None:
    ingest(acme, events_of("ana", "demo_request", [1.0]))
    with acme.unit_of_work() as uow:
        if _stage(uow) == "mql":  # a demo request may have made her SQL-ready at once
            apply_stage_action(uow, "ana@acme.com", "accept", by="sam.rivera", now=NOW)
        apply_stage_action(uow, "ana@acme.com", "open-opportunity", by="sam.rivera", now=NOW)
    with acme.unit_of_work() as uow:
        assert stored(uow)["stage"] == "opportunity"
        assert history(uow)[-1][1:] == ("opportunity", "system")
        apply_stage_action(uow, "ana@acme.com", "win", by="sam.rivera", now=NOW)
    with acme.unit_of_work() as uow:
        assert stored(uow)["stage"] == "customer"


def test_when_its_peoples_last_open_opportunity_is_lost_so_is_the_accounts(acme: Workspace) -> None:
    ingest(acme, events_of("ana", "demo_request", [1.0]) + events_of("vp", "demo_request", [1.0]))
    with acme.unit_of_work() as uow:
        for who in ("ana@acme.com", "vp@acme.com"):
            if _stage_of(uow, who) == "mql":
                apply_stage_action(uow, who, "accept", by="sam.rivera", now=NOW)
            apply_stage_action(uow, who, "open-opportunity", by="sam.rivera", now=NOW)
    with acme.unit_of_work() as uow:
        apply_stage_action(uow, "ana@acme.com", "lose", by="sam.rivera", reason="price", now=NOW)
    with acme.unit_of_work() as uow:
        assert stored(uow)["stage"] == "opportunity"  # the VP's deal is open still
        apply_stage_action(uow, "vp@acme.com", "lose", by="sam.rivera", reason="no_budget", now=NOW)
    with acme.unit_of_work() as uow:
        row = stored(uow)
        assert row["stage"] == "engaged" and row["requalify_at"] == NOW + timedelta(days=30)
        assert history(uow)[-1] == ("opportunity", "engaged", "system")


def _stage(uow: UnitOfWork) -> str:
    return str(
        uow.connection.execute(select(schema.leads.c.stage).where(schema.leads.c.email == "ana@acme.com")).scalar()
    )


def test_people_who_leave_leave_the_rollup(acme: Workspace) -> None:
    """An erased person and a merged duplicate stop counting: what is kept is the account counted again."""
    with acme.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="vp2@acme.com", seniority="vp", department="finance")], now=T0)
    ingest(
        acme,
        events_of("vp", "webinar_attended", [3.0])
        + events_of("vp2", "webinar_attended", [1.0])
        + events_of("fan", "content_download", [2.0]),
    )
    for step in ("erase", "merge"):
        with acme.unit_of_work() as uow:
            if step == "erase":
                erase_lead(uow, "vp2@acme.com", by="test", now=NOW)  # the economic buyer's holder leaves
            else:
                merge_leads(uow, "ana@acme.com", "fan@acme.com", by="test", now=NOW)
        with acme.unit_of_work() as uow:
            row = stored(uow)
            kept = (row["engagement_score"], row["covered_roles"])
            recount_accounts(uow, [row["id"]], now=row["scored_at"])
            again = stored(uow)
            assert kept == (pytest.approx(again["engagement_score"]), again["covered_roles"]), step
            scores = account_scores(uow, row["id"], now=row["scored_at"])
            assert scores is not None and scores.engagement == pytest.approx(row["engagement_score"]), step
    with acme.unit_of_work() as uow:
        scores = account_scores(uow, account_id_of(uow, "acme.com"), now=NOW)
        assert scores is not None and "vp2@acme.com" not in {c.rule for c in scores.engagement_contributions}


def test_a_new_model_counts_every_account_again(acme: Workspace) -> None:
    ingest(acme, events_of("fan", "content_download", [5.0, 4.0]) + events_of("vp", "webinar_attended", [2.0]))
    stricter = default_model_text().replace("per_person_cap: 60", "per_person_cap: 5")
    with acme.unit_of_work() as uow:
        before = stored(uow)
        activate_model(uow, stricter)
    rescore_all(acme, now=NOW)
    with acme.unit_of_work() as uow:
        after = stored(uow)
        assert after["model_version"] != before["model_version"]
        assert after["engagement_score"] <= 10 < before["engagement_score"]  # two people, each held at 5


def test_the_cli_and_the_api_act_on_accounts_and_list_them_by_stage(acme: Workspace, tmp_path: Any) -> None:
    ingest(
        acme,
        MQA_EVENTS,
    )
    db = acme.settings.database_url
    runner = CliRunner()
    done = runner.invoke(app, ["account-stage", "reject", "acme.com", "--by", "sam.rivera", "--db", db])
    assert done.exit_code == 2 and "reject needs a reason code" in done.output
    listed = runner.invoke(app, ["accounts", "--stage", "mqa", "--json", "--db", db])
    assert listed.exit_code == 0, listed.output
    body = json.loads(listed.output)
    assert [(a["domain"], a["stage"], a["owner"]) for a in body["items"]] == [("acme.com", "mqa", "sam.rivera")]
    shown = runner.invoke(app, ["account", "acme.com", "--db", db])
    assert shown.exit_code == 0 and "stage mqa since" in shown.output and "engaged → mqa by" in shown.output
    with acme.unit_of_work() as uow:
        rep = {"Authorization": f"Bearer {key_for(uow, 'sales', user='alex.chen')}"}
        owner = {"Authorization": f"Bearer {key_for(uow, 'sales', 'sam', user='sam.rivera')}"}
    with TestClient(create_app(workspace=acme)) as client:
        refused = client.post("/v1/accounts/acme.com/actions/accept", json={}, headers=rep)
        assert refused.status_code == 403, refused.text  # alex owns no part of it
        accepted = client.post("/v1/accounts/acme.com/actions/accept", json={}, headers=owner)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() | {"at": None} == {
            "account": "acme.com", "action": "accept", "from": "mqa", "to": "opportunity", "at": None,
            "by": "sam.rivera", "reason": None, "note": None,
        }  # fmt: skip
        again = client.post("/v1/accounts/acme.com/actions/accept", json={}, headers=owner)
        assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
        assert client.post("/v1/accounts/acme.com/actions/promote", json={}, headers=owner).status_code == 422
        page = client.get("/v1/accounts/acme.com", headers=owner).json()
        assert page["stage"]["stage"] == "opportunity" and page["stage"]["history"][0]["by"] == "sam.rivera"
        assert page["stage"]["last_scored"]["covered_roles"] == 3 and "rollup" not in page["account"]
        by_fit = client.get("/v1/accounts", params={"sort": "fit", "stage": "opportunity"}, headers=owner).json()
        assert [a["domain"] for a in by_fit["items"]] == ["acme.com"]
    cli = runner.invoke(app, ["account-stage", "win", "acme.com", "--by", "sam.rivera", "--json", "--db", db])
    assert cli.exit_code == 0 and json.loads(cli.output)["to"] == "customer"
    with acme.unit_of_work() as uow:
        rows, total = list_accounts(uow, stage="customer")
        assert total == 1 and rows[0].stage == "customer"
        with pytest.raises(InvalidInput, match="unknown account stage 'won'"):
            list_accounts(uow, stage="won")


ACCOUNT_AUTOMATION = """
segments:
  - name: buying-accounts
    when: [{field: account.stage, in: [mqa, opportunity]}]
  - name: broad-groups
    when: [{field: account.coverage, range: [2, 10]}]
workflows:
  - name: account-play
    trigger: {account_entered_stage: mqa}
    steps: [{add_tag: mqa-account}]
"""


def test_segments_test_the_account_and_its_move_to_mqa_enrols_all_its_people(acme: Workspace) -> None:
    from qualify.domain.automation import load_automation
    from qualify.service.automation.definitions import put_segments, put_workflows
    from qualify.service.automation.reading import segment_members

    document = load_automation(ACCOUNT_AUTOMATION, "accounts.yaml")
    with acme.unit_of_work() as uow:
        put_segments(uow, document.segments, by="test", now=T0)
        put_workflows(uow, document, by="test", now=T0)
    ingest(acme, MQA_EVENTS)
    everyone = {p.email for p in PEOPLE}
    with acme.unit_of_work() as uow:
        # Dev did nothing, yet is tested again when the account moves: the account is what changed.
        assert {m["lead"] for m in segment_members(uow, "buying-accounts")} == everyone
        assert {m["lead"] for m in segment_members(uow, "broad-groups")} >= {"fan@acme.com", "ana@acme.com"}
        e, leads = schema.workflow_enrolments, schema.leads
        enrolled = uow.connection.execute(
            select(leads.c.email, e.c.trigger)
            .join(leads, leads.c.id == e.c.lead_id)
            .where(e.c.workflow == "account-play")
        ).all()
        assert {email for email, _ in enrolled} == everyone
        assert {why for _, why in enrolled} == {"account entered stage mqa"}
        # A person's action moves the account too: its people are tested again.
        act_on_account(uow, account_id_of(uow, "acme.com"), "reject", by="sam.rivera", reason="bad_timing", now=NOW)
        assert segment_members(uow, "buying-accounts") == []
    with pytest.raises(Exception, match="unknown account stage 'won'"):
        load_automation(ACCOUNT_AUTOMATION.replace("account_entered_stage: mqa", "account_entered_stage: won"), "x")
    with pytest.raises(Exception, match="unknown account stage 'won'"):
        load_automation(ACCOUNT_AUTOMATION.replace("in: [mqa, opportunity]", "in: [won]"), "x")


def test_the_account_funnel_counts_stages_conversion_and_the_roles_of_won_and_lost(acme: Workspace) -> None:
    """Acme becomes MQA, is accepted and won 20 days later; Globex becomes an opportunity through
    its CTO's deal and is lost on price."""
    from qualify.service.reading.account_funnel import account_funnel

    with acme.unit_of_work() as uow:
        upsert_accounts(uow, [Account(domain="globex.io", industry="retail", employees=300, country="US")], now=T0)
        upsert_leads(uow, [Lead(email="cto@globex.io", seniority="c_level", department="engineering")], now=T0)
    cto = make_event("g-1", "demo_request", NOW - timedelta(days=4), email="cto@globex.io")
    ingest(acme, [*MQA_EVENTS, cto])
    with acme.unit_of_work() as uow:
        acme_id, globex = account_id_of(uow, "acme.com"), account_id_of(uow, "globex.io")
        act_on_account(uow, acme_id, "accept", by="sam.rivera", now=NOW)
        act_on_account(uow, acme_id, "win", by="sam.rivera", now=NOW + timedelta(days=20))
        if _stage_of(uow, "cto@globex.io") == "mql":  # a demo request may make the lead SQL-ready at once
            apply_stage_action(uow, "cto@globex.io", "accept", by="sam.rivera", now=NOW)
        apply_stage_action(uow, "cto@globex.io", "open-opportunity", by="sam.rivera", now=NOW)
    with acme.unit_of_work() as uow:
        assert stored(uow, "globex.io")["stage"] == "opportunity"
        act_on_account(uow, globex, "lose", by="sam.rivera", reason="price", now=NOW + timedelta(days=5))
    with acme.unit_of_work() as uow:
        report = account_funnel(uow)
    assert report.total_accounts == 2 and report.current == {
        "target": 0, "engaged": 1, "mqa": 0, "opportunity": 0, "customer": 1,
    }  # fmt: skip
    assert report.reached == {"target": 2, "engaged": 2, "mqa": 1, "opportunity": 2, "customer": 1}
    steps = {(s["from"], s["to"]): (s["from_count"], s["to_count"], s["rate"]) for s in report.conversion}
    assert steps[("mqa", "opportunity")] == (1, 1, 1.0) and steps[("opportunity", "customer")] == (2, 1, 0.5)
    assert report.days_in_stage["opportunity"] == {"count": 2, "median": 12.5, "p90": 18.5}
    assert report.reasons == {"opportunity->engaged": {"price": 1}}
    won, lost = report.coverage["won"], report.coverage["lost"]
    assert won["accounts"] == 1 and won["mean_roles"] == 3
    assert set(won["roles"]) == {"economic buyer", "champion", "practitioner"}
    assert lost["accounts"] == 1 and set(lost["roles"]) == {"economic buyer", "technical evaluator"}
    assert lost["roles"]["economic buyer"]["rate"] == 1.0


def _stage_of(uow: UnitOfWork, email: str) -> str:
    return str(uow.connection.execute(select(schema.leads.c.stage).where(schema.leads.c.email == email)).scalar())


def test_rescore_writes_every_accounts_batch_scores_equal_to_the_pipelines(acme: Workspace, tmp_path: Any) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    ingest(acme, MQA_EVENTS)
    db = acme.settings.database_url
    target = tmp_path / "accounts.parquet"
    done = CliRunner().invoke(
        app, ["rescore", "--db", db, "--as-of", NOW.isoformat(), "--accounts-out", str(target), "--json"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["accounts"] == 1
    [row] = pq.read_table(target).to_pylist()
    with acme.unit_of_work() as uow:
        kept = stored(uow)
    rollup = Rollup.from_json(kept["rollup"])
    assert row["domain"] == "acme.com" and (row["fit"], row["grade"]) == (kept["fit_score"], kept["fit_grade"])
    assert row["engagement"] == pytest.approx(rollup.engagement_at(NOW.timestamp()), rel=1e-9)
    assert row["roles"] == ["economic buyer", "champion", "practitioner"] and row["covered"] == 3
    as_csv = tmp_path / "accounts.csv"
    assert CliRunner().invoke(app, ["rescore", "--db", db, "--accounts-out", str(as_csv)]).exit_code == 0
    assert pacsv.read_csv(as_csv).to_pylist()[0]["roles"].startswith("economic buyer; champion")


def test_the_worker_records_and_announces_an_mqa_left_waiting_past_its_sla_once(acme: Workspace) -> None:
    from qualify.service.worker import record_account_sla_breaches

    with acme.unit_of_work() as uow:
        add_subscription(uow, "https://crm.example.com/late", ["account.sla.breached"], now=T0)
    ingest(acme, MQA_EVENTS)
    with acme.unit_of_work() as uow:
        due = stored(uow)["sla_due_at"]
    assert record_account_sla_breaches(acme, due - timedelta(minutes=1)) == 0  # not yet
    assert record_account_sla_breaches(acme, due + timedelta(hours=1)) == 1
    assert record_account_sla_breaches(acme, due + timedelta(hours=2)) == 0  # once per clock
    with acme.unit_of_work() as uow:
        assert stored(uow)["sla_breached_at"] == due + timedelta(hours=1)
        d = schema.webhook_deliveries
        payload = uow.connection.execute(select(d.c.payload).where(d.c.kind == "account.sla.breached")).scalar_one()
        assert payload["account"]["domain"] == "acme.com" and payload["owner"] == "sam.rivera"
        a = schema.audit_log
        assert (
            uow.connection.execute(select(a.c.target).where(a.c.action == "account.sla.breached")).scalar()
            == "acme.com"
        )
        # Rejected in time for the next clock: the breach is cleared with the clock.
        act_on_account(uow, account_id_of(uow, "acme.com"), "reject", by="sam.rivera", reason="bad_timing", now=NOW)
        assert (stored(uow)["sla_due_at"], stored(uow)["sla_breached_at"]) == (None, None)
