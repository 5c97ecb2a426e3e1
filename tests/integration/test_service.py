"""Use cases against a real store (SQLite and PostgreSQL): what a user of the service sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.domain.errors import IllegalTransition, InvalidInput, NotFound
from qualify.domain.records import Account, Lead, make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.rescoring import rescore_all
from qualify.service.lifecycle.scoring_models import activate_model, model_history
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.reading.funnel import funnel
from qualify.service.reading.lead_list import LeadFilter, list_leads
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ACME = Account(domain="acme.com", name="Acme", industry="software", employees=800, country="US")


def add_jane(workspace: Workspace, **changes: object) -> None:
    fields: dict[str, object] = {
        "email": "Jane@Acme.com",
        "first_name": "Jane",
        "title": "VP Marketing",
        "seniority": "vp",
        "department": "marketing",
        "created_at": T0,
    }
    fields.update(changes)
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(**fields)], accounts=[ACME])  # type: ignore[arg-type]


def events(*specs: tuple[str, float, dict[str, object]], email: str = "jane@acme.com", prefix: str = "e") -> list:  # type: ignore[type-arg]
    return [
        make_event(f"{prefix}{i}", kind, T0 + timedelta(days=day), email=email, properties=props)
        for i, (kind, day, props) in enumerate(specs)
    ]


def ingest(workspace: Workspace, batch: list, **kwargs: object) -> list:  # type: ignore[type-arg]
    with workspace.unit_of_work() as uow:
        return ingest_events(uow, batch, **kwargs)  # type: ignore[arg-type]


def profile(workspace: Workspace, key: str = "jane@acme.com", now: datetime | None = None):  # type: ignore[no-untyped-def]
    with workspace.unit_of_work() as uow:
        return lead_profile(uow, key, now=now or T0 + timedelta(days=10))


def count(workspace: Workspace, table: object) -> int:
    with workspace.unit_of_work() as uow:
        return int(uow.connection.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_a_lead_is_linked_to_its_account_and_scored_for_fit(workspace: Workspace) -> None:
    add_jane(workspace)
    p = profile(workspace)
    assert p.account is not None and p.account["name"] == "Acme"
    assert p.scores["persona"] == "economic buyer"
    assert p.scores["grade"] == "A"
    assert sum(c.points for c in p.fit_explanation) == pytest.approx(p.scores["fit"])
    assert p.history[0]["to"] == "lead" and p.history[0]["from"] is None


def test_free_mail_leads_get_no_account(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="someone@gmail.com", created_at=T0)])
    assert profile(workspace, "someone@gmail.com").account is None
    assert count(workspace, schema.accounts) == 0


def test_upsert_merges_and_a_repeat_changes_nothing(workspace: Workspace) -> None:
    add_jane(workspace)
    with workspace.unit_of_work() as uow:
        outcome = upsert_leads(uow, [Lead(email="jane@acme.com", country="US", attributes={"budget": 50000})])
    assert outcome.statuses == ["updated"]
    with workspace.unit_of_work() as uow:
        again = upsert_leads(uow, [Lead(email="jane@acme.com", country="US", attributes={"budget": 50000})])
    assert again.statuses == ["unchanged"]
    p = profile(workspace)
    assert p.lead["title"] == "VP Marketing"  # an empty field keeps the stored value
    assert p.lead["attributes"] == {"budget": 50000}
    assert any(c.rule == "budget confirmed" for c in p.fit_explanation)


def test_conflicting_keys_are_rejected_and_the_rest_kept(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="a@acme.com", external_id="X1"), Lead(email="b@acme.com", external_id="X2")])
    with workspace.unit_of_work() as uow:
        outcome = upsert_leads(uow, [Lead(email="a@acme.com", external_id="X2"), Lead(email="c@acme.com")])
    assert outcome.statuses == ["rejected", "created"]
    assert outcome.errors[0].field == "external_id"


def test_events_are_idempotent_by_event_id(workspace: Workspace) -> None:
    add_jane(workspace)
    batch = events(("page_view", 0, {"url": "/pricing"}), ("content_download", 1, {"title": "Pricing guide"}))
    first = ingest(workspace, batch)
    assert [o.status for o in first] == ["accepted", "accepted"]
    before = profile(workspace).scores["engagement"]
    again = ingest(workspace, batch + batch[:1])
    assert [o.status for o in again] == ["duplicate"] * 3
    assert profile(workspace).scores["engagement"] == before
    assert count(workspace, schema.events) == 2


def test_a_duplicate_inside_one_batch_counts_once(workspace: Workspace) -> None:
    add_jane(workspace)
    batch = events(("content_download", 0, {"title": "A"}))
    assert [o.status for o in ingest(workspace, batch + batch)] == ["accepted", "duplicate"]


def test_an_event_for_an_unknown_lead_creates_it_unless_told_not_to(workspace: Workspace) -> None:
    batch = events(("email_open", 0, {}), email="new@globex.com")
    assert ingest(workspace, batch)[0].status == "accepted"
    assert profile(workspace, "new@globex.com").account["domain"] == "globex.com"  # type: ignore[index]
    refused = ingest(
        workspace, events(("email_open", 0, {}), email="other@globex.com", prefix="x"), create_unknown=False
    )
    assert refused[0].status == "rejected" and "other@globex.com" in (refused[0].reason or "")


def test_engagement_explanation_adds_up_and_says_why(workspace: Workspace) -> None:
    add_jane(workspace)
    ingest(
        workspace, events(("content_download", 0, {"title": "Pricing guide"}), ("page_view", 1, {"url": "/pricing"}))
    )
    p = profile(workspace, now=T0 + timedelta(days=9))
    assert sum(c.points for c in p.engagement_explanation) == pytest.approx(p.scores["engagement"], abs=0.01)
    texts = [c.render() for c in p.engagement_explanation]
    assert any("downloaded 'Pricing guide' 9 days ago (10, half-life 30 d)" in t for t in texts)


def test_a_lead_becomes_mql_at_the_event_that_crosses_its_threshold(workspace: Workspace) -> None:
    add_jane(workspace)
    ingest(
        workspace,
        events(
            ("content_download", 0, {"title": "A"}),
            ("content_download", 2, {"title": "B"}),
            ("webinar_attended", 3, {"title": "C"}),
        ),
    )
    p = profile(workspace)
    assert p.stage == "mql"
    mql = p.history[-1]
    assert mql["to"] == "mql" and mql["actor"] == "model" and mql["at"] == T0 + timedelta(days=3)
    assert mql["grade"] == "A" and mql["engagement"] >= 25


def test_quote_request_fast_tracks_to_sql_through_mql(workspace: Workspace) -> None:
    add_jane(workspace)
    ingest(workspace, events(("quote_request", 0, {})))
    p = profile(workspace)
    assert [(h["from"], h["to"]) for h in p.history] == [(None, "lead"), ("lead", "mql"), ("mql", "sql")]
    assert "fast-track" in p.history[-1]["reason"]


def test_disqualify_rules_apply_when_the_profile_matches(workspace: Workspace) -> None:
    add_jane(workspace, title="Marketing Intern")
    p = profile(workspace)
    assert p.stage == "disqualified"
    assert "students and interns" in p.history[-1]["reason"]


def test_stage_actions_follow_the_lifecycle_and_record_who_and_why(workspace: Workspace) -> None:
    add_jane(workspace)
    ingest(workspace, events(("demo_request", 0, {})))
    with workspace.unit_of_work() as uow, pytest.raises(IllegalTransition, match="cannot win a lead in stage mql"):
        apply_stage_action(uow, "jane@acme.com", "win", by="sam", at=T0 + timedelta(hours=1))
    with workspace.unit_of_work() as uow, pytest.raises(InvalidInput, match="reason code"):
        apply_stage_action(uow, "jane@acme.com", "reject", by="sam", at=T0 + timedelta(hours=1))
    with workspace.unit_of_work() as uow:
        apply_stage_action(
            uow, "jane@acme.com", "reject", by="sam", reason="bad_timing", note="call in Q3", at=T0 + timedelta(days=1)
        )
    p = profile(workspace)
    assert p.stage == "nurture"
    last = p.history[-1]
    assert (last["by"], last["reason"], last["note"], last["actor"]) == ("sam", "bad_timing", "call in Q3", "user")
    with workspace.unit_of_work() as uow, pytest.raises(NotFound):
        apply_stage_action(uow, "nobody@acme.com", "accept", by="sam")


def test_an_action_after_a_decay_out_sees_the_lead_in_nurture(workspace: Workspace) -> None:
    add_jane(workspace)
    ingest(workspace, events(("demo_request", 0, {})))
    with workspace.unit_of_work() as uow, pytest.raises(IllegalTransition, match="stage nurture"):
        apply_stage_action(uow, "jane@acme.com", "accept", by="sam", at=T0 + timedelta(days=120))
    assert [h["to"] for h in profile(workspace).history] == ["lead", "mql"]  # the refused action wrote nothing


def test_a_full_journey_reaches_evangelist(workspace: Workspace) -> None:
    add_jane(workspace)
    ingest(workspace, events(("demo_request", 0, {})))
    for day, action in enumerate(("accept", "open-opportunity", "win", "advocate"), start=1):
        with workspace.unit_of_work() as uow:
            apply_stage_action(uow, "jane@acme.com", action, by="sam", at=T0 + timedelta(days=day))
    assert [h["to"] for h in profile(workspace).history] == [
        "lead",
        "mql",
        "sql",
        "opportunity",
        "customer",
        "evangelist",
    ]


def test_an_idle_mql_decays_out_to_nurture_at_the_moment_it_fell_below_the_floor(workspace: Workspace) -> None:
    add_jane(workspace)
    ingest(workspace, events(("demo_request", 0, {})))  # 30 points, half-life 60 d; floor 10 → ~95 days
    rescore_all(workspace, now=T0 + timedelta(days=200))
    p = profile(workspace, now=T0 + timedelta(days=200))
    assert p.stage == "nurture"
    out = p.history[-1]
    assert out["actor"] == "system" and "decay-out" in out["reason"]
    assert abs((out["at"] - (T0 + timedelta(days=95.1))).total_seconds()) < 86_400
    assert out["engagement"] == pytest.approx(10, abs=0.01)


def test_activating_a_model_versions_it_and_rescoring_applies_it(workspace: Workspace) -> None:
    from qualify.domain.model_loader import default_model_text

    add_jane(workspace)
    ingest(workspace, events(("content_download", 0, {"title": "A"})))
    stricter = default_model_text().replace(
        "      event: content_download\n      points: 10", "      event: content_download\n      points: 4"
    )
    with workspace.unit_of_work() as uow:
        model, changed = activate_model(uow, stricter, "stricter.yaml")
        assert changed and len(model_history(uow)) == 2
    summary = rescore_all(workspace, now=T0 + timedelta(days=1))
    assert summary.leads == 1 and summary.model_version == model.version
    p = profile(workspace, now=T0)
    assert p.scores["engagement"] == pytest.approx(4)
    assert p.engagement_explanation[0].points == pytest.approx(4)


def test_leads_list_filters_and_sorts(workspace: Workspace) -> None:
    add_jane(workspace)
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="joe@acme.com", seniority="individual", created_at=T0)])
    ingest(workspace, events(("demo_request", 0, {})))
    with workspace.unit_of_work() as uow:
        assert [r["email"] for r in list_leads(uow, LeadFilter(stage="mql"))] == ["jane@acme.com"]
        ranked = list_leads(uow, LeadFilter(sort="fit"))
        assert ranked[0]["email"] == "jane@acme.com" and len(ranked) == 2
        with pytest.raises(InvalidInput, match="unknown stage"):
            list_leads(uow, LeadFilter(stage="hot"))


def test_funnel_counts_conversions_and_days_from_history(workspace: Workspace) -> None:
    for i in range(4):
        with workspace.unit_of_work() as uow:
            upsert_leads(uow, [Lead(email=f"p{i}@acme.com", seniority="vp", created_at=T0)], accounts=[ACME])
    for i in range(2):
        ingest(workspace, events(("demo_request", 1, {}), email=f"p{i}@acme.com", prefix=f"p{i}-"))
    with workspace.unit_of_work() as uow:
        apply_stage_action(uow, "p0@acme.com", "accept", by="sam", at=T0 + timedelta(days=3))
        report = funnel(uow)
    assert report.total_leads == 4
    assert report.current["lead"] == 2 and report.current["mql"] == 1 and report.current["sql"] == 1
    first = report.conversion[0]
    assert (first["from"], first["to"], first["from_count"], first["to_count"], first["rate"]) == (
        "lead",
        "mql",
        4,
        2,
        0.5,
    )
    assert report.conversion[1]["rate"] == 0.5
    assert report.days_in_stage["lead"]["median"] == 1.0
    assert report.days_in_stage["mql"]["median"] == 2.0
