"""Merging duplicates, exporting everything about a person, erasing a person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput, NotFound
from qualify.domain.records import Lead, make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.lead_admin import erase_lead, export_lead, merge_leads
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.reading.funnel import funnel
from qualify.service.reading.lead_list import LeadFilter, list_leads
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 3, 2, tzinfo=UTC)
NOW = T0 + timedelta(days=5)


def seed(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        upsert_leads(
            uow,
            [
                Lead(email="jane@acme.com", first_name="Jane", seniority="vp", created_at=T0),
                Lead(
                    email="j.doe@acme.com",
                    last_name="Doe",
                    title="VP Marketing",
                    attributes={"budget": 20000},
                    created_at=T0,
                ),
            ],
        )
        ingest_events(
            uow,
            [
                make_event(
                    "a1", "content_download", T0 + timedelta(days=1), email="jane@acme.com", properties={"title": "A"}
                ),
                make_event(
                    "b1", "webinar_attended", T0 + timedelta(days=2), email="j.doe@acme.com", properties={"title": "B"}
                ),
            ],
            now=NOW,
        )


def count(workspace: Workspace, table: object) -> int:
    with workspace.unit_of_work() as uow:
        return int(uow.connection.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_merging_keeps_every_event_fills_gaps_and_redirects_the_old_key(workspace: Workspace) -> None:
    seed(workspace)
    with workspace.unit_of_work() as uow:
        result = merge_leads(uow, "jane@acme.com", "j.doe@acme.com", by="ana", now=NOW)
    assert result.events_moved == 1
    with workspace.unit_of_work() as uow:
        profile = lead_profile(uow, "jane@acme.com", now=NOW)
    assert profile.events_total == 2
    assert (profile.lead["first_name"], profile.lead["last_name"], profile.lead["title"]) == (
        "Jane",
        "Doe",
        "VP Marketing",
    )
    assert profile.lead["attributes"] == {"budget": 20000}
    assert sum(c.points for c in profile.engagement_explanation) == pytest.approx(
        profile.scores["engagement"], abs=0.01
    )
    assert count(workspace, schema.leads) == 1
    with workspace.unit_of_work() as uow:
        later = ingest_events(uow, [make_event("b2", "email_open", NOW, email="j.doe@acme.com")], now=NOW)
        assert later[0].lead == "jane@acme.com"
        assert upsert_leads(uow, [Lead(email="j.doe@acme.com", department="marketing")]).statuses == ["updated"]
        assert lead_profile(uow, "j.doe@acme.com", now=NOW).lead["department"] == "marketing"
        entry = uow.connection.execute(select(schema.audit_log).where(schema.audit_log.c.action == "lead.merge")).one()
    assert entry.details["merged_lead_id"] == 2 and entry.actor == "ana"
    assert "j.doe@acme.com" not in str(entry.details)  # ids only: nothing personal outlives an erasure


def test_a_lead_cannot_be_merged_into_itself_or_into_nobody(workspace: Workspace) -> None:
    seed(workspace)
    with workspace.unit_of_work() as uow, pytest.raises(InvalidInput):
        merge_leads(uow, "jane@acme.com", "jane@acme.com", by="ana")
    with workspace.unit_of_work() as uow, pytest.raises(NotFound):
        merge_leads(uow, "jane@acme.com", "ghost@acme.com", by="ana")


def test_export_holds_everything_about_the_person(workspace: Workspace) -> None:
    seed(workspace)
    with workspace.unit_of_work() as uow:
        document = export_lead(uow, "jane@acme.com")
    assert document["lead"]["email"] == "jane@acme.com"
    assert [e["event_id"] for e in document["events"]] == ["a1"]
    assert document["stage_history"][0]["to_stage"] == "lead"
    assert document["account"]["domain"] == "acme.com"


def test_erasure_removes_personal_data_and_events_but_keeps_the_funnel(workspace: Workspace) -> None:
    seed(workspace)
    with workspace.unit_of_work() as uow:
        before = funnel(uow)
        lead_id = erase_lead(uow, "jane@acme.com", by="dpo", now=NOW)
    with workspace.unit_of_work() as uow:
        after = funnel(uow)
    with workspace.unit_of_work() as uow, pytest.raises(NotFound):
        lead_profile(uow, "jane@acme.com", now=NOW)
    assert (after.total_leads, after.reached, after.current) == (before.total_leads, before.reached, before.current)
    with workspace.unit_of_work() as uow:
        row = uow.connection.execute(select(schema.leads).where(schema.leads.c.id == lead_id)).one()
        assert (row.email, row.first_name, row.attributes, row.erased_at is not None) == (None, None, {}, True)
        assert (
            uow.connection.execute(
                select(func.count()).select_from(schema.events).where(schema.events.c.lead_id == lead_id)
            ).scalar()
            == 0
        )
        assert [r["email"] for r in list_leads(uow, LeadFilter())] == ["j.doe@acme.com"]
        targets = list(uow.connection.execute(select(schema.audit_log.c.target)).scalars())
    assert "jane@acme.com" not in targets and f"#{lead_id}" in targets


def test_a_merge_keeps_an_opt_out_given_under_either_address(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        upsert_leads(
            uow,
            [
                Lead(email="jane@acme.com", created_at=T0),
                Lead(email="jd@acme.com", do_not_email=True, do_not_call=True, created_at=T0),
            ],
        )
        merge_leads(uow, "jane@acme.com", "jd@acme.com", by="ana", now=NOW)
        document = export_lead(uow, "jane@acme.com")
    assert (document["lead"]["do_not_email"], document["lead"]["do_not_call"]) == (True, True)


def test_erasure_leaves_no_personal_data_in_the_audit_log_or_the_outbox(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        uow.connection.execute(
            schema.webhook_subscriptions.insert().values(
                url="http://127.0.0.1:9/h", secret="s", kinds=["stage.changed"], active=True, created_at=T0
            )
        )
    seed(workspace)
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [make_event("q1", "quote_request", T0 + timedelta(days=3), email="jane@acme.com")], now=NOW)
        merge_leads(uow, "jane@acme.com", "j.doe@acme.com", by="ana", now=NOW)
        erase_lead(uow, "jane@acme.com", by="dpo", now=NOW)
        audit = str(list(uow.connection.execute(select(schema.audit_log.c.target, schema.audit_log.c.details))))
        outbox = str(list(uow.connection.execute(select(schema.webhook_deliveries.c.payload))))
    for personal in ("jane@acme.com", "j.doe@acme.com", "Jane", "Doe"):
        assert personal not in audit and personal not in outbox
    assert "stage.changed" not in outbox or '"id"' in outbox or "'id'" in outbox
