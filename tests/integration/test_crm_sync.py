"""The CRM sync's round trip against each vendor's loopback contract server, through the vendor's
own client: pull companies, people and deals; score; push stage and scores; a sales rep's status
change in the CRM comes back as a dated stage action; a second sync changes nothing. Every request
the client sent must be one the vendor's API documents (`fake.problems` stays empty)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from tests.fake_hubspot import FakeHubSpot
from tests.fake_salesforce import FakeSalesforce

from qualify.adapters import schema
from qualify.adapters.crm import CrmError
from qualify.adapters.crm_hubspot import HubSpotClient
from qualify.adapters.crm_salesforce import SalesforceClient
from qualify.domain.errors import InvalidInput
from qualify.service.connectors import crm
from qualify.service.connectors.crm_mapping import SyncMappingError, parse_sync_mapping
from qualify.service.lifecycle.events import ingest_events
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # the CRM's history starts
T1 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # the first sync
T2 = T1 + timedelta(hours=5)  # a rep's decision in the CRM
T3 = T1 + timedelta(days=1)  # the second sync


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def lead(workspace: Workspace, email: str) -> Any:
    with workspace.unit_of_work(read_only=True) as uow:
        return uow.connection.execute(select(schema.leads).where(schema.leads.c.email == email)).one()


def moves(workspace: Workspace, lead_id: int) -> list[tuple[str, datetime, str | None]]:
    h = schema.stage_history
    with workspace.unit_of_work(read_only=True) as uow:
        rows = uow.connection.execute(
            select(h.c.to_stage, h.c.at, h.c.reason).where(h.c.lead_id == lead_id).order_by(h.c.at, h.c.id)
        )
        return [(r.to_stage, r.at, r.reason) for r in rows]


def writes(fake: Any) -> int:
    return sum(
        1
        for method, path, _ in fake.requests
        if method in ("PATCH", "POST") and ("batch/update" in path or "batch/upsert" in path or "composite" in path)
    )


def test_hubspot_round_trip(workspace: Workspace) -> None:
    clock = Clock(T0)
    with FakeHubSpot(clock=clock, page_limit=2) as hub:
        acme = hub.add(
            "companies", {"domain": "acme.com", "name": "Acme", "industry": "Software", "numberofemployees": "250"}
        )
        ann = hub.add(
            "contacts",
            {
                "email": "Ann@Acme.com",
                "firstname": "Ann",
                "jobtitle": "VP Marketing",
                "createdate": "2026-11-02T09:00:00.000Z",
            },
            associations={"companies": [acme]},
        )
        bob = hub.add(
            "contacts", {"email": "bob@acme.com", "firstname": "Bob", "jobtitle": "Engineer", "hs_lead_status": "NEW"}
        )
        hub.add(
            "contacts",
            {
                "email": "cy@acme.com",
                "jobtitle": "Director",
                "hs_lifecyclestage_marketingqualifiedlead_date": "2026-11-10T10:00:00.000Z",
            },
        )
        hub.add("contacts", {"email": "long@acme.com", "jobtitle": "Head of " * 60})  # longer than a title may be
        deal = hub.add(
            "deals",
            {
                "dealname": "Acme platform",
                "dealstage": "closedwon",
                "createdate": "2026-11-15T09:00:00.000Z",
                "closedate": "2026-11-28T16:00:00.000Z",
                "amount": "24000",
            },
            associations={"contacts": [ann], "companies": [acme]},
        )
        clients = lambda name, settings: HubSpotClient("pat-test-token", hub.url, sleep=lambda s: None)  # noqa: E731

        connected = crm.connect(workspace, "hubspot", clients=clients, now=T1)
        assert "qualify_score" in connected.created_fields and "qualify_score" in hub.properties["contacts"]

        clock.at = T1
        first = crm.sync(workspace, "hubspot", clients=clients, now=T1)
        contacts = first.pulled.objects["contacts"]
        assert (contacts["read"], contacts["created"], contacts["rejected"]) == (4, 3, 1)
        assert first.pulled.rejected[0]["field"] == "title"
        assert first.pulled.objects["companies"]["created"] == 1 and first.pulled.objects["deals"]["created"] == 1
        # The won deal took Ann to customer at its close date; Cy's lifecycle date made him an MQL then.
        ann_lead = lead(workspace, "ann@acme.com")
        assert ann_lead.stage == "customer" and [m[0] for m in moves(workspace, ann_lead.id)][-2:] == [
            "opportunity",
            "customer",
        ]
        cy_moves = [m[:2] for m in moves(workspace, lead(workspace, "cy@acme.com").id)]
        assert ("mql", datetime(2026, 11, 10, 10, tzinfo=UTC)) in cy_moves
        # Every pulled person got its scores written back on its contact.
        assert (first.pushed.pushed, first.pushed.accounts, first.pushed.dead) == (3, 1, 0)
        pushed = hub.objects["contacts"][ann]["properties"]
        assert pushed["qualify_stage"] == "customer" and float(pushed["qualify_fit_score"]) == pytest.approx(
            ann_lead.fit_score, abs=0.01
        )
        assert hub.objects["contacts"][bob]["properties"]["qualify_stage"] == "lead"
        company = hub.objects["companies"][acme]["properties"]
        assert (company["qualify_people"], company["qualify_mqls"], company["qualify_furthest_stage"]) == (
            "3",
            "2",
            "customer",
        )

        # A rep marks Bob unqualified in HubSpot: the next sync records it, dated, with its reason.
        clock.at = T2
        hub.update("contacts", bob, {"hs_lead_status": "UNQUALIFIED"})
        clock.at = T2 + timedelta(hours=2)  # edited again later: the status still changed at T2
        hub.update("contacts", bob, {"firstname": "Robert"})
        clock.at = T3
        planned = crm.sync(workspace, "hubspot", clients=clients, now=T3, dry_run=True)
        assert planned.pulled.actions == 1 and lead(workspace, "bob@acme.com").stage == "lead"
        second = crm.sync(workspace, "hubspot", clients=clients, now=T3)
        assert second.pulled.actions == 1 and second.pushed.pushed == 1
        bob_lead = lead(workspace, "bob@acme.com")
        assert bob_lead.stage == "disqualified" and moves(workspace, bob_lead.id)[-1] == ("disqualified", T2, "no_need")
        assert hub.objects["contacts"][bob]["properties"]["qualify_stage"] == "disqualified"

        # A third sync changes nothing: no record written in Qualify, none in HubSpot.
        before = writes(hub)
        third = crm.sync(workspace, "hubspot", clients=clients, now=T3 + timedelta(hours=1))
        assert third.pulled.changed == 0 and third.pushed.pushed == 0 and writes(hub) == before
        assert hub.problems == []
        assert deal in hub.objects["deals"]


def test_hubspot_push_follows_new_events_and_survives_rate_limits(workspace: Workspace) -> None:
    with FakeHubSpot(rate_limit=4, rate_window=0.5) as hub:
        ann = hub.add("contacts", {"email": "ann@acme.com", "jobtitle": "VP Marketing"})
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            time.sleep(seconds)

        def clients(name: str, settings: Any) -> HubSpotClient:
            return HubSpotClient("pat-test-token", hub.url, sleep=sleep)

        crm.connect(workspace, "hubspot", clients=clients, now=T1)
        crm.sync(workspace, "hubspot", clients=clients, now=T1)
        score = hub.objects["contacts"][ann]["properties"]["qualify_engagement"]
        with workspace.unit_of_work() as uow:  # the lead does something: a push is queued with it
            from qualify.domain.records import make_event

            ingest_events(
                uow,
                [make_event(None, "demo_request", T1 + timedelta(minutes=5), email="ann@acme.com")],
                now=T1 + timedelta(minutes=5),
            )
        assert crm.connections(workspace)[0].pending == 1
        pushed = crm.push_due(workspace, "hubspot", clients("hubspot", workspace.settings), T1 + timedelta(minutes=6))
        assert pushed.pushed == 1 and hub.objects["contacts"][ann]["properties"]["qualify_engagement"] != score
        assert slept, "the client waited out HubSpot's 429s instead of failing"
        assert hub.problems == []


def test_a_refused_token_spends_no_attempt_and_is_kept_on_the_connection(workspace: Workspace) -> None:
    with FakeHubSpot() as hub:
        hub.add("contacts", {"email": "ann@acme.com"})
        good = lambda name, settings: HubSpotClient("pat-test-token", hub.url)  # noqa: E731
        crm.connect(workspace, "hubspot", clients=good, now=T1)
        crm.sync(workspace, "hubspot", clients=good, now=T1)
        with workspace.unit_of_work() as uow:
            from qualify.domain.records import make_event

            ingest_events(uow, [make_event(None, "email_click", T1, email="ann@acme.com")], now=T1)
        bad = lambda name, settings: HubSpotClient("revoked", hub.url)  # noqa: E731
        with pytest.raises(CrmError, match="refused the token"):
            crm.sync(workspace, "hubspot", clients=bad, now=T1 + timedelta(minutes=1))
        status = crm.connections(workspace)[0]
        assert "refused the token" in (status.last_error or "") and status.pending == 1
        with workspace.unit_of_work(read_only=True) as uow:
            assert (
                uow.connection.execute(
                    select(schema.crm_pushes.c.attempts).where(schema.crm_pushes.c.status == "pending")
                ).scalar_one()
                == 0
            )


def test_salesforce_round_trip(workspace: Workspace) -> None:
    clock = Clock(T0)
    with FakeSalesforce(clock=clock, page_size=2) as sf:
        for name in ("Stage", "Stage_Reason", "MQL_Reason", "Fit_Grade", "Owner"):
            sf.add_field("Lead", f"Qualify_{name}__c", "string")
        for name in ("Fit_Score", "Engagement", "Score", "Probability"):
            sf.add_field("Lead", f"Qualify_{name}__c", "double")
        for name in ("People", "MQLs", "Best_Score"):
            sf.add_field("Account", f"Qualify_{name}__c", "double")
        for name in ("Best_Fit_Grade", "Furthest_Stage"):
            sf.add_field("Account", f"Qualify_{name}__c", "string")
        account = sf.add(
            "Account", Name="Acme", Website="https://www.acme.com", Industry="Software", NumberOfEmployees=250
        )
        ann = sf.add(
            "Lead",
            Email="ann@acme.com",
            FirstName="Ann",
            LastName="Lee",
            Company="Acme",
            Title="VP Marketing",
            Status="Open - Not Contacted",
        )
        bob = sf.add(
            "Lead",
            Email="bob@acme.com",
            LastName="Roe",
            Company="Acme",
            Title="Engineer",
            Status="Open - Not Contacted",
        )
        contact = sf.add("Contact", Email="ann@acme.com", LastName="Lee")
        sf.add(
            "Opportunity",
            Name="Acme platform",
            StageName="Closed Lost",
            CloseDate="2026-11-28",
            ContactId=contact,
            Amount=9000,
        )
        clients = lambda name, settings: SalesforceClient(sf.url, "00Dfake!token", session=sf.session())  # noqa: E731

        crm.connect(workspace, "salesforce", clients=clients, now=T1)
        clock.at = T1
        first = crm.sync(workspace, "salesforce", clients=clients, now=T1)
        assert first.pulled.objects["Lead"]["created"] == 2 and first.pulled.objects["Account"]["created"] == 1
        assert first.pulled.objects["Opportunity"]["created"] == 1, first.pulled.rejected
        ann_lead = lead(workspace, "ann@acme.com")
        assert ann_lead.external_id == ann and ann_lead.stage == "nurture"  # the lost opportunity sent her back
        assert (first.pushed.pushed, first.pushed.accounts) == (2, 1) and sf.records["Lead"][ann][
            "Qualify_Stage__c"
        ] == "nurture"
        assert sf.records["Account"][account]["Qualify_People__c"] == 2
        assert sf.records["Lead"][ann]["Qualify_Fit_Score__c"] == pytest.approx(ann_lead.fit_score, abs=0.01)

        clock.at = T2
        sf.update("Lead", bob, Status="Working - Contacted")
        clock.at = T3
        second = crm.sync(workspace, "salesforce", clients=clients, now=T3)
        assert second.pulled.actions == 1
        bob_lead = lead(workspace, "bob@acme.com")
        assert bob_lead.stage == "sql" and moves(workspace, bob_lead.id)[-1][:2] == ("sql", T2)
        assert sf.records["Lead"][bob]["Qualify_Stage__c"] == "sql"

        before = writes(sf)
        third = crm.sync(workspace, "salesforce", clients=clients, now=T3 + timedelta(hours=1))
        assert third.pulled.changed == 0 and third.pushed.pushed == 0 and writes(sf) == before
        assert sf.problems == []


def test_salesforce_fields_an_admin_has_not_created_are_named_at_connect(sqlite_workspace: Workspace) -> None:
    with FakeSalesforce() as sf:
        clients = lambda name, settings: SalesforceClient(sf.url, "00Dfake!token", session=sf.session())  # noqa: E731
        with pytest.raises(CrmError, match="Qualify_Score__c"):
            crm.connect(sqlite_workspace, "salesforce", clients=clients, now=T1)
        assert crm.connections(sqlite_workspace) == []


def test_sync_mapping_problems_name_line_and_key(tmp_path: Path) -> None:
    text = (crm.default_mapping("hubspot")).read_text()
    broken = text.replace("kind: accounts", "kind: account").replace("qualify_score: score", "qualify_score: scor")
    broken = broken.replace("UNQUALIFIED: {action: disqualify", "UNQUALIFIED: {action: disqualfy")
    with pytest.raises(SyncMappingError) as raised:
        parse_sync_mapping(broken, "mine.yaml")
    message = str(raised.value)
    assert (
        "pull.companies.kind" in message
        and "push.fields.qualify_score" in message
        and "did you mean" in message.lower()
    )
    assert "status.map.UNQUALIFIED" in message and "line " in message
    with pytest.raises(SyncMappingError, match=r"pull\.contacts\.fields\.emial"):
        parse_sync_mapping(text.replace("      email: email\n", "      emial: email\n", 1))
    with pytest.raises(InvalidInput, match="not a CRM"):
        parse_sync_mapping("crm: pipedrive\n")


def test_an_erased_person_is_not_pulled_back_nor_written_to(sqlite_workspace: Workspace) -> None:
    from qualify.service.lifecycle.lead_admin import erase_lead

    workspace = sqlite_workspace
    with FakeHubSpot() as hub:
        ann = hub.add("contacts", {"email": "ann@acme.com", "jobtitle": "VP Marketing"})
        hub.add("contacts", {"email": "bob@acme.com", "jobtitle": "Engineer"})
        clients = lambda name, settings: HubSpotClient("pat-test-token", hub.url)  # noqa: E731
        crm.connect(workspace, "hubspot", clients=clients, now=T1)
        crm.sync(workspace, "hubspot", clients=clients, now=T1)
        with workspace.unit_of_work() as uow:
            erase_lead(uow, "ann@acme.com", by="dpo", now=T2)
        again = crm.sync(workspace, "hubspot", clients=clients, now=T3, full=True)
        assert again.pulled.objects["contacts"]["rejected"] == 1 and "erased" in again.pulled.rejected[0]["reason"]
        with workspace.unit_of_work(read_only=True) as uow:
            emails = set(uow.connection.execute(select(schema.leads.c.email)).scalars())
            links = uow.connection.execute(
                select(schema.crm_records.c.lead_id, schema.crm_records.c.status).where(
                    schema.crm_records.c.record_id == ann
                )
            ).one()
        assert "ann@acme.com" not in emails and links == (None, crm.ERASED)


def test_the_worker_pulls_on_its_interval_and_pushes_in_every_pass(sqlite_workspace: Workspace) -> None:
    from qualify.service.worker import Worker

    workspace = sqlite_workspace
    with FakeHubSpot() as hub:
        ann = hub.add("contacts", {"email": "ann@acme.com", "jobtitle": "VP Marketing"})
        clients = lambda name, settings: HubSpotClient("pat-test-token", hub.url)  # noqa: E731
        crm.connect(workspace, "hubspot", clients=clients, now=T1)
        with Worker(workspace, crm_clients=clients) as worker:
            first = worker.run_once(T1)
            assert first.crm_records >= 2  # Ann pulled in, then her scores written back
            assert hub.objects["contacts"][ann]["properties"]["qualify_stage"] == "lead"
            hub.add("contacts", {"email": "bob@acme.com"})
            assert worker.run_once(T1 + timedelta(minutes=1)).crm_records == 0  # not yet time to pull
            later = T1 + timedelta(seconds=workspace.settings.crm_sync_interval + 1)
            assert worker.run_once(later).crm_records >= 2
        assert crm.connections(workspace)[0].linked == 2 and hub.problems == []


def test_a_change_while_a_push_is_on_its_way_is_pushed_after_it(sqlite_workspace: Workspace) -> None:
    from qualify.domain.records import make_event
    from qualify.service import delivery

    workspace = sqlite_workspace
    with FakeHubSpot() as hub:
        hub.add("contacts", {"email": "ann@acme.com", "jobtitle": "VP Marketing"})
        clients = lambda name, settings: HubSpotClient("pat-test-token", hub.url)  # noqa: E731
        crm.connect(workspace, "hubspot", clients=clients, now=T1)
        crm.sync(workspace, "hubspot", clients=clients, now=T1)
        with workspace.unit_of_work() as uow:
            ingest_events(uow, [make_event(None, "email_click", T1, email="ann@acme.com")], now=T1)
            claimed = delivery.claim(uow.connection, crm.QUEUE, T1, limit=10, lease=60)  # a worker sends it...
        with workspace.unit_of_work() as uow:  # ...while the lead changes again
            ingest_events(uow, [make_event(None, "demo_request", T1, email="ann@acme.com")], now=T1)
        with workspace.unit_of_work(read_only=True) as uow:
            rows = uow.connection.execute(
                select(schema.crm_pushes.c.id, schema.crm_pushes.c.status).order_by(schema.crm_pushes.c.id)
            ).all()
        assert [tuple(r) for r in rows][-2:] == [(claimed[0], crm.SENDING), (claimed[0] + 1, crm.PENDING)]


def test_a_refused_token_while_pushing_spends_no_attempt(sqlite_workspace: Workspace) -> None:
    from qualify.domain.records import make_event

    workspace = sqlite_workspace
    with FakeHubSpot() as hub:
        hub.add("contacts", {"email": "ann@acme.com"})
        good = lambda name, settings: HubSpotClient("pat-test-token", hub.url)  # noqa: E731
        crm.connect(workspace, "hubspot", clients=good, now=T1)
        crm.sync(workspace, "hubspot", clients=good, now=T1)
        with workspace.unit_of_work() as uow:
            ingest_events(uow, [make_event(None, "email_click", T1, email="ann@acme.com")], now=T1)
        with pytest.raises(CrmError, match="refused the token"):
            crm.push_due(workspace, "hubspot", HubSpotClient("revoked", hub.url), T1)
        p = schema.crm_pushes
        with workspace.unit_of_work(read_only=True) as uow:
            row = uow.connection.execute(
                select(p.c.status, p.c.attempts, p.c.next_attempt_at).where(p.c.status != "pushed")
            ).one()
        assert row.status == "pending" and row.attempts == 0 and row.next_attempt_at > T1
        assert crm.push_due(workspace, "hubspot", good("hubspot", None), T1 + timedelta(minutes=2)).pushed == 1


def test_one_pull_of_a_crm_at_a_time(sqlite_workspace: Workspace) -> None:
    workspace = sqlite_workspace
    with FakeHubSpot() as hub:
        hub.add("contacts", {"email": "ann@acme.com"})
        clients = lambda name, settings: HubSpotClient("pat-test-token", hub.url)  # noqa: E731
        crm.connect(workspace, "hubspot", clients=clients, now=T1)
        pages = HubSpotClient("pat-test-token", hub.url).pull("contacts", ["email"], None)
        with workspace.unit_of_work() as uow:  # a pull holds the lease...
            uow.connection.execute(
                schema.crm_connections.update().values(pulling_until=datetime.now(UTC) + timedelta(minutes=5))
            )
        with pytest.raises(CrmError, match="another pull of hubspot is running"):
            crm.sync(workspace, "hubspot", clients=clients, now=T1)
        assert next(iter(pages)).records  # ...and the CRM still answers; only Qualify's side waited
