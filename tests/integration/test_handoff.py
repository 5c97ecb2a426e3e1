"""Handoff against a real store: a new MQL gets an owner by the model's routing rules and an SLA clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from tests.unit.test_model_loader import TINY
from typer.testing import CliRunner

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.records import Account, Lead, make_event
from qualify.entrypoints.cli import app
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # 10:00 on a Monday
HOUR = timedelta(hours=1)
WEEK = timedelta(days=7)

CAPPED = (
    TINY
    + """\
handoff:
  teams:
    inbound:
      - {name: ann, capacity_per_week: 1}
      - {name: bob, capacity_per_week: 1}
    overflow: [zoe]
  rules:
    - name: germany
      when: {field: country, equals: DE}
      team: inbound
  default_team: overflow
"""
)


def use_model(workspace: Workspace, document: str) -> None:
    with workspace.unit_of_work() as uow:
        activate_model(uow, document, "test.yaml")


def qualify(workspace: Workspace, email: str, at: datetime, *, event: str = "demo_request", **lead: Any) -> None:
    """Create the lead (with `lead` fields) and send the event that makes it MQL at `at`."""
    accounts = [lead.pop("account")] if "account" in lead else None
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email=email, created_at=at - HOUR, **lead)], accounts=accounts, now=at - HOUR)
        ingest_events(uow, [make_event(f"{event}-{email}-{at.isoformat()}", event, at, email=email)], now=at)


def handoff_of(workspace: Workspace, email: str) -> dict[str, Any]:
    leads = schema.leads
    columns = (leads.c.stage, leads.c.owner, leads.c.owner_rule, leads.c.owner_assigned_at, leads.c.sla_due_at)
    with workspace.unit_of_work() as uow:
        return dict(uow.connection.execute(select(*columns).where(leads.c.email == email)).one()._mapping)


def assignments(workspace: Workspace) -> list[tuple[str, str | None, str]]:
    a = schema.assignments
    with workspace.unit_of_work() as uow:
        rows = uow.connection.execute(select(a.c.owner, a.c.team, a.c.rule).order_by(a.c.id))
        return [(r.owner, r.team, r.rule) for r in rows]


def positions(workspace: Workspace) -> dict[str, int]:
    with workspace.unit_of_work() as uow:
        return dict(uow.connection.execute(select(schema.routing_state.c.team, schema.routing_state.c.position)).all())


def account(domain: str, country: str, employees: int = 300) -> Account:
    return Account(domain=domain, name=domain, industry="software", employees=employees, country=country)


# --- the default model ---------------------------------------------------------------------------


def test_a_new_mql_goes_to_its_territory_team_with_a_24_business_hour_clock(workspace: Workspace) -> None:
    qualify(workspace, "jane@acme.de", MONDAY, account=account("acme.de", "DE"))
    assert handoff_of(workspace, "jane@acme.de") == {
        "stage": "mql",
        "owner": "tom.becker",
        "owner_rule": "EMEA by account country",
        "owner_assigned_at": MONDAY,
        # 7 h on Monday, 8 on Tuesday and Wednesday, the last hour on Thursday from 09:00 UTC.
        "sla_due_at": datetime(2026, 3, 5, 10, 0, tzinfo=UTC),
    }
    assert assignments(workspace) == [("tom.becker", "emea", "EMEA by account country")]
    assert positions(workspace) == {"emea": 1, "north-america": 0, "rest-of-world": 0}


def test_round_robin_within_a_team_and_the_account_owner_first(workspace: Workspace) -> None:
    for i, domain in enumerate(("one.de", "two.fr", "three.nl", "four.se")):
        qualify(workspace, f"lead@{domain}", MONDAY + i * HOUR, account=account(domain, domain[-2:].upper()))
    qualify(workspace, "colleague@two.fr", MONDAY + 5 * HOUR)
    owners = [owner for owner, _team, _rule in assignments(workspace)]
    assert owners == ["tom.becker", "chloe.martin", "lucas.jansen", "tom.becker", "chloe.martin"]
    assert handoff_of(workspace, "colleague@two.fr")["owner_rule"] == "account owner"
    assert positions(workspace)["emea"] == 1  # the account owner took the lead outside the rotation


def test_named_owners_the_default_team_and_leads_without_an_account(workspace: Workspace) -> None:
    qualify(workspace, "cio@bigcorp.com", MONDAY, account=account("bigcorp.com", "US", employees=20_000))
    qualify(workspace, "buyer@tokyo.jp", MONDAY, account=account("tokyo.jp", "JP"))
    qualify(workspace, "someone@gmail.com", MONDAY, country="CA")
    assert assignments(workspace) == [
        ("dana.kim", None, "enterprise accounts"),
        ("priya.patel", "rest-of-world", "default team"),
        ("sam.rivera", "north-america", "North America by lead country"),
    ]


def test_a_lead_fast_tracked_to_sql_gets_an_owner_but_no_clock(workspace: Workspace) -> None:
    qualify(workspace, "ready@acme.de", MONDAY, event="quote_request", account=account("acme.de", "DE"))
    row = handoff_of(workspace, "ready@acme.de")
    assert (row["stage"], row["owner"], row["sla_due_at"]) == ("sql", "tom.becker", None)


def test_a_returning_lead_stays_with_its_owner_with_a_new_clock(workspace: Workspace) -> None:
    qualify(workspace, "back@acme.de", MONDAY, account=account("acme.de", "DE"))
    qualify(workspace, "other@beta.de", MONDAY + HOUR, account=account("beta.de", "DE"))
    leads = schema.leads
    with workspace.unit_of_work() as uow:
        uow.connection.execute(update(leads).where(leads.c.email == "back@acme.de").values(sla_breached_at=MONDAY))
        apply_stage_action(uow, "back@acme.de", "reject", by="tom", reason="bad_timing", at=MONDAY + 2 * HOUR)
    later = MONDAY + 2 * WEEK
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [make_event("again", "demo_request", later, email="back@acme.de")], now=later)
    row = handoff_of(workspace, "back@acme.de")
    assert (row["stage"], row["owner"], row["owner_rule"]) == ("mql", "tom.becker", "previous owner")
    assert row["owner_assigned_at"] == later and row["sla_due_at"] == later + 3 * 24 * HOUR  # Monday 10:00 → Thursday
    with workspace.unit_of_work() as uow:
        assert (
            uow.connection.execute(select(leads.c.sla_breached_at).where(leads.c.email == "back@acme.de")).scalar()
            is None
        )
    assert [owner for owner, *_ in assignments(workspace)] == ["tom.becker", "chloe.martin", "tom.becker"]


def test_the_profile_and_the_cli_show_the_owner(sqlite_workspace: Workspace) -> None:
    qualify(sqlite_workspace, "jane@acme.de", MONDAY, account=account("acme.de", "DE"))
    with sqlite_workspace.unit_of_work() as uow:
        profile = lead_profile(uow, "jane@acme.de", now=MONDAY + HOUR)
    assert (profile.owner, profile.owner_rule) == ("tom.becker", "EMEA by account country")
    assert profile.as_dict()["sla_due_at"] == datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
    url = str(sqlite_workspace.engine.url)
    result = CliRunner().invoke(app, ["lead", "jane@acme.de", "--db", url])
    assert result.exit_code == 0, result.output
    assert (
        "owner tom.becker (EMEA by account country) since 2026-03-02 10:00 UTC, SLA due 2026-03-05 10:00 UTC"
        in " ".join(result.stdout.split())
    )


# --- capacity, overflow, and a model without handoff -----------------------------------------------


def test_capacity_per_week_skips_full_reps_and_overflows_to_the_default_team(workspace: Workspace) -> None:
    use_model(workspace, CAPPED)
    for i in range(3):
        qualify(workspace, f"de{i}@gmail.com", MONDAY + i * HOUR, country="DE")
    qualify(workspace, "next-week@gmail.com", MONDAY + WEEK - timedelta(hours=10), country="DE")  # Monday 00:00
    assert assignments(workspace) == [
        ("ann", "inbound", "germany"),
        ("bob", "inbound", "germany"),
        ("zoe", "overflow", "default team (inbound at capacity)"),
        ("ann", "inbound", "germany"),
    ]


def test_a_full_team_with_nowhere_to_overflow_leaves_the_lead_without_an_owner_and_says_why(
    workspace: Workspace,
) -> None:
    use_model(workspace, CAPPED.replace("  default_team: overflow\n", ""))
    for i in range(3):
        qualify(workspace, f"de{i}@gmail.com", MONDAY + i * HOUR, country="DE")
    qualify(workspace, "fr@gmail.com", MONDAY, country="FR")
    assert handoff_of(workspace, "de2@gmail.com")["owner"] is None
    assert (
        handoff_of(workspace, "de2@gmail.com")["owner_rule"]
        == "no owner: every rep of inbound is at capacity this week"
    )
    assert (
        handoff_of(workspace, "fr@gmail.com")["owner_rule"] == "no owner: no routing rule matched and no default team"
    )
    assert handoff_of(workspace, "fr@gmail.com")["sla_due_at"] is None  # no sla in this model
    assert len(assignments(workspace)) == 2


def test_a_model_without_handoff_routes_nobody(workspace: Workspace) -> None:
    use_model(workspace, TINY)
    qualify(workspace, "jane@acme.de", MONDAY, account=account("acme.de", "DE"))
    row = handoff_of(workspace, "jane@acme.de")
    assert (row["stage"], row["owner"], row["owner_rule"], row["sla_due_at"]) == ("mql", None, None, None)
    assert assignments(workspace) == [] and positions(workspace) == {}


# --- concurrency ---------------------------------------------------------------------------------

ROUND_ROBIN = TINY + "handoff:\n  teams:\n    inbound: [a, b, c]\n  default_team: inbound\n"


@pytest.fixture
def postgres_workspace(postgres_schema_url: str) -> Iterator[Workspace]:
    workspace = open_workspace(Settings(database_url=postgres_schema_url), create=True)
    use_model(workspace, ROUND_ROBIN)
    try:
        yield workspace
    finally:
        workspace.close()


def test_concurrent_units_of_work_hand_out_every_rotation_position_once(postgres_workspace: Workspace) -> None:
    threads, per_thread = 8, 4
    emails = [[f"t{t}-{i}@gmail.com" for i in range(per_thread)] for t in range(threads)]
    with postgres_workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email=e, created_at=MONDAY) for batch in emails for e in batch], now=MONDAY)
    start, failures = threading.Barrier(threads), []

    def qualify_all(batch: list[str]) -> None:
        try:
            start.wait()
            for email in batch:  # one unit of work each: many short transactions racing for the rotation
                with postgres_workspace.unit_of_work() as uow:
                    ingest_events(uow, [make_event(f"d-{email}", "demo_request", MONDAY, email=email)], now=MONDAY)
        except Exception as error:  # pragma: no cover - reported below
            failures.append(error)

    workers = [threading.Thread(target=qualify_all, args=(batch,)) for batch in emails]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    owners = [owner for owner, *_ in assignments(postgres_workspace)]
    assert owners == ["a", "b", "c"] * (threads * per_thread // 3) + ["a", "b", "c"][: threads * per_thread % 3]
    assert positions(postgres_workspace) == {"inbound": threads * per_thread % 3}
