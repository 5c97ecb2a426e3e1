"""Several leads per person: a returning buyer's new inquiry is a lead of its own (a journey),
keyed by its CRM id; the newest journey holds the email, whatever order the rows came in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput
from qualify.domain.records import Lead, make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.lead_admin import erase_lead
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.reading.funnel import funnel
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
FIRST = Lead(email="ana@buyer.com", external_id="L-61", title="Analyst", created_at=NOW - timedelta(days=400))
SECOND = Lead(email="ana@buyer.com", external_id="L-67", title="Head of Data", created_at=NOW - timedelta(days=30))


def copy(lead: Lead) -> Lead:
    return Lead(email=lead.email, external_id=lead.external_id, title=lead.title, created_at=lead.created_at)


def journeys(workspace: Workspace) -> list[tuple[str | None, str | None, str | None, str | None]]:
    leads = schema.leads
    with workspace.unit_of_work() as uow:
        rows = uow.connection.execute(
            select(leads.c.external_id, leads.c.email, leads.c.person_email, leads.c.title).order_by(
                leads.c.external_id
            )
        )
        return [tuple(r) for r in rows]


@pytest.mark.parametrize("order", ["oldest first", "newest first", "one batch"])
def test_a_returning_buyer_is_a_second_lead_and_the_newest_holds_the_email(workspace: Workspace, order: str) -> None:
    with workspace.unit_of_work() as uow:
        if order == "one batch":
            outcome = upsert_leads(uow, [copy(SECOND), copy(FIRST)], now=NOW)
            assert outcome.statuses == ["created", "created"]
        else:
            for lead in [FIRST, SECOND] if order == "oldest first" else [SECOND, FIRST]:
                assert upsert_leads(uow, [copy(lead)], now=NOW).statuses == ["created"]
    assert journeys(workspace) == [
        ("L-61", None, "ana@buyer.com", "Analyst"),
        ("L-67", "ana@buyer.com", "ana@buyer.com", "Head of Data"),
    ]
    with workspace.unit_of_work() as uow:
        ingest_events(
            uow,
            [
                make_event("by-email", "demo_request", NOW - timedelta(days=1), email="ana@buyer.com"),
                make_event("by-id", "email_open", NOW - timedelta(days=350), external_id="L-61"),
            ],
            now=NOW,
        )
        # The same row again, and the past journey updated by its id with the person's email.
        again = upsert_leads(
            uow, [copy(SECOND), Lead(email="ana@buyer.com", external_id="L-61", country="PT")], now=NOW
        )
        assert again.statuses == ["unchanged", "updated"]
        profile = lead_profile(uow, "ana@buyer.com", now=NOW)
        old = lead_profile(uow, "L-61", now=NOW)
        assert funnel(uow, now=NOW).reached["lead"] == 2  # two buying journeys
    assert profile.lead["external_id"] == "L-67" and [e["event_id"] for e in profile.timeline] == ["by-email"]
    assert [(j["external_id"], j["current"]) for j in profile.journeys] == [("L-61", False)]
    assert [e["event_id"] for e in old.timeline] == ["by-id"] and old.lead["country"] == "PT"
    assert [(j["external_id"], j["current"]) for j in old.journeys] == [("L-67", True)]


def test_a_crm_id_keeps_its_email_a_different_one_under_it_is_refused(sqlite_workspace: Workspace) -> None:
    with sqlite_workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="bo@corp.com", external_id="C-1")], now=NOW)
        refused = upsert_leads(uow, [Lead(email="bo@other.com", external_id="C-1")], now=NOW)
    assert refused.statuses == ["rejected"]
    assert isinstance(refused.errors[0], InvalidInput) and refused.errors[0].field == "email"


def test_erasing_a_person_erases_every_journey(sqlite_workspace: Workspace) -> None:
    with sqlite_workspace.unit_of_work() as uow:
        upsert_leads(uow, [copy(FIRST), copy(SECOND)], now=NOW)
        erase_lead(uow, "ana@buyer.com", by="admin", now=NOW)
    leads = schema.leads
    with sqlite_workspace.unit_of_work() as uow:
        rows = uow.connection.execute(select(leads.c.email, leads.c.person_email, leads.c.erased_at)).all()
    assert len(rows) == 2 and all(r.email is None and r.person_email is None and r.erased_at for r in rows)
