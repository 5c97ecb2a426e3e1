"""The nurture loop in the funnel report: leads sent to nurture, how many came back to MQL and how
soon, and what the recycled MQLs became, on a small history whose answers are known by hand."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from qualify.adapters import schema
from qualify.domain.records import Account, Lead, make_event
from qualify.domain.statistics import wilson_interval
from qualify.entrypoints.api.app import create_app
from qualify.entrypoints.cli import app as cli
from qualify.service.admin.users import add_user
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.reading.funnel import FunnelReport, funnel
from qualify.service.unit_of_work import Workspace
from qualify.service.worker import sweep_decay

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=200)
BIGCO = Account(domain="bigco.com", name="BigCo", industry="software", employees=900, country="US")
PASSWORD = "correct horse battery"


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


class History:
    """Writes a hand-made history through the service's use cases, as of NOW."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.serial = 0

    def events(self, email: str, *specs: tuple[str, datetime]) -> None:
        batch = []
        for kind, at in specs:
            self.serial += 1
            batch.append(make_event(f"n{self.serial}", kind, at, email=email))
        with self.workspace.unit_of_work() as uow:
            ingest_events(uow, batch, now=NOW)

    def act(self, email: str, action: str, at: datetime, reason: str | None = None) -> None:
        with self.workspace.unit_of_work() as uow:
            apply_stage_action(uow, email, action, by="sam.rivera", reason=reason, at=at, now=NOW)


def nurture_world(workspace: Workspace) -> None:
    """Six grade-A VPs at one account:

    - a (webinar): MQL, rejected (bad_timing) a day later, back to MQL 5 days after that, accepted;
    - b (webinar): MQL on two meetings, decayed out ~120 days later, back to MQL 9 days after that;
    - c (ads): MQL, accepted, opportunity, lost (lost_to_competitor): still in nurture;
    - d (ads): MQL, accepted, opportunity, won: customer;
    - f (ads): MQL, accepted, lost as SQL (no_budget), then disqualified (spam) from nurture;
    - e (ads): never did anything: a lead.
    a and b were created two days before T0, the others one day before. Demo requests fast-track a
    lead (a nurtured one too) to MQL; two meetings (40 points, half-life 60 days) make a grade-A
    lead MQL, and decay below the floor of 10 after 120 days.
    """
    history = History(workspace)
    with workspace.unit_of_work() as uow:
        upsert_leads(
            uow,
            [
                Lead(
                    email=f"{name}@bigco.com",
                    title="VP Marketing",
                    seniority="vp",
                    country="US",
                    source="webinar" if name in "ab" else "ads",
                    created_at=day(-2 if name in "ab" else -1),
                )
                for name in "abcdfe"
            ],
            accounts=[BIGCO],
            now=NOW,
        )
    history.events("a@bigco.com", ("demo_request", day(0)))
    history.act("a@bigco.com", "reject", day(1), "bad_timing")
    history.events("a@bigco.com", ("demo_request", day(6)))
    history.act("a@bigco.com", "accept", day(7))

    history.events("b@bigco.com", ("meeting", day(0)), ("meeting", day(0)))

    history.events("c@bigco.com", ("demo_request", day(0)))
    history.act("c@bigco.com", "accept", day(1))
    history.act("c@bigco.com", "open-opportunity", day(2))
    history.act("c@bigco.com", "lose", day(3), "lost_to_competitor")

    history.events("d@bigco.com", ("demo_request", day(0)))
    history.act("d@bigco.com", "accept", day(1))
    history.act("d@bigco.com", "open-opportunity", day(2))
    history.act("d@bigco.com", "win", day(10))

    history.events("f@bigco.com", ("demo_request", day(0)))
    history.act("f@bigco.com", "accept", day(1))
    history.act("f@bigco.com", "lose", day(2), "no_budget")
    history.act("f@bigco.com", "disqualify", day(4), "spam")

    assert sweep_decay(workspace, day(150)) == 1  # only b is an MQL then
    decayed = decayed_out_at(workspace, "b@bigco.com")
    assert day(119.9) < decayed < day(120.1)
    history.events("b@bigco.com", ("demo_request", decayed + timedelta(days=9)))


def decayed_out_at(workspace: Workspace, email: str) -> datetime:
    h, leads = schema.stage_history, schema.leads
    with workspace.unit_of_work(read_only=True) as uow:
        at = uow.connection.execute(
            select(h.c.at)
            .join(leads, leads.c.id == h.c.lead_id)
            .where(leads.c.email == email, h.c.to_stage == "nurture", h.c.actor == "system")
        ).scalar_one()
    assert isinstance(at, datetime)
    return at


def report(workspace: Workspace, **filters: Any) -> FunnelReport:
    with workspace.unit_of_work(read_only=True) as uow:
        return funnel(uow, now=NOW, **filters)


def rate(count: int, total: int) -> dict[str, Any]:
    return {
        "count": count,
        "rate": round(count / total, 4) if total else None,
        "interval_95": wilson_interval(count, total),
    }


def test_the_nurture_loop_counts_entries_by_origin_returns_to_mql_and_the_days_it_took(
    workspace: Workspace,
) -> None:
    nurture_world(workspace)
    full = report(workspace)
    loop = full.nurture_loop
    assert (loop["entries"], loop["leads"], loop["disqualified"], loop["open"]) == (4, 4, 1, 1)
    assert loop["recycled"] == {"count": 2, "rate": 0.5, "interval_95": wilson_interval(2, 4)}
    assert loop["recycled"]["interval_95"] == [0.15, 0.85]
    assert loop["days_to_mql"] == {"count": 2, "median": 7.0, "p90": 8.6}  # 5 and 9 days
    origins = loop["by_origin"]
    assert list(origins) == ["rejected_mql", "decayed_out", "lost_sql", "lost_opportunity"]
    assert {name: (o["entries"], o["recycled"]["count"]) for name, o in origins.items()} == {
        "rejected_mql": (1, 1),
        "decayed_out": (1, 1),
        "lost_sql": (1, 0),
        "lost_opportunity": (1, 0),
    }
    assert origins["rejected_mql"]["days_to_mql"] == {"count": 1, "median": 5.0, "p90": 5.0}
    assert origins["decayed_out"]["days_to_mql"] == {"count": 1, "median": 9.0, "p90": 9.0}
    assert origins["lost_sql"]["recycled"] == {"count": 0, "rate": 0.0, "interval_95": wilson_interval(0, 1)}
    assert origins["lost_opportunity"]["days_to_mql"] == {"count": 0, "median": None, "p90": None}
    assert loop["by_reason"] == {
        "bad_timing": {"entries": 1, "recycled": rate(1, 1)},
        "lost_to_competitor": {"entries": 1, "recycled": rate(0, 1)},
        "no_budget": {"entries": 1, "recycled": rate(0, 1)},
    }
    # What the MQLs became: a, b, c, d, f were first-time MQLs (c, d, f accepted; d won);
    # a and b came back (a accepted, b still waiting for sales).
    assert loop["after_mql"] == {
        "first_time": {"mqls": 5, "open": 0, "sql": rate(3, 5), "customer": rate(1, 5)},
        "recycled": {"mqls": 2, "open": 1, "sql": rate(1, 2), "customer": rate(0, 2)},
    }
    # The older keys say the same.
    assert full.recycled == {"nurtured": 4, "requalified": 2, "decayed_out": 1}
    assert full.reached["nurture"] == 4 and full.current["nurture"] == 1


def test_the_nurture_loop_keeps_to_the_funnel_s_filters(workspace: Workspace) -> None:
    nurture_world(workspace)
    webinar = report(workspace, where={"source": "webinar"}).nurture_loop
    assert (webinar["entries"], webinar["recycled"]["count"], webinar["recycled"]["rate"]) == (2, 2, 1.0)
    assert webinar["days_to_mql"] == {"count": 2, "median": 7.0, "p90": 8.6}
    assert webinar["by_origin"]["lost_sql"]["entries"] == 0 and webinar["by_reason"] == {
        "bad_timing": {"entries": 1, "recycled": rate(1, 1)}
    }
    assert webinar["after_mql"]["first_time"]["sql"] == rate(0, 2)
    ads = report(workspace, where={"source": "ads"}).nurture_loop
    assert (ads["entries"], ads["recycled"]["count"], ads["disqualified"], ads["open"]) == (2, 0, 1, 1)
    assert ads["days_to_mql"] == {"count": 0, "median": None, "p90": None}
    assert ads["after_mql"]["recycled"] == {"mqls": 0, "open": 0, "sql": rate(0, 0), "customer": rate(0, 0)}
    assert ads["after_mql"]["first_time"]["customer"] == rate(1, 3)
    # The period the leads were created in: a and b were created before day -1.
    early = report(workspace, created_to=day(-1)).nurture_loop
    assert early == webinar
    late = report(workspace, created_from=day(-1)).nurture_loop
    assert late == ads
    nobody = report(workspace, where={"channel": "no such channel"}).nurture_loop
    assert nobody["entries"] == 0 and nobody["recycled"] == rate(0, 0)
    assert all(o["entries"] == 0 for o in nobody["by_origin"].values())


def test_the_funnel_command_prints_the_nurture_loop_and_its_json(workspace: Workspace) -> None:
    nurture_world(workspace)
    url = workspace.engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    answer = runner.invoke(cli, ["funnel", "--json", "--db", url])
    assert answer.exit_code == 0, answer.stderr
    assert json.loads(answer.stdout)["nurture_loop"] == json.loads(json.dumps(report(workspace).nurture_loop))
    text = runner.invoke(cli, ["funnel", "--db", url], env={"COLUMNS": "160"})
    assert text.exit_code == 0, text.stderr
    out = " ".join(text.stdout.split())
    assert "Nurture loop: 4 entries (4 leads), 2 back to MQL: 50.0% (15%–85%)" in out
    assert "median 7.0 days, p90 8.6" in out
    assert re.search(r"rejected MQL\W+1\W+1\W+100\.0%", out), out
    assert (
        "first-time MQLs 5: 60.0% to SQL, 20.0% to customer; recycled MQLs 2 (1 still MQL): 50.0% to SQL, 0.0% to customer"
        in out
    )


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    nurture_world(workspace)
    with workspace.unit_of_work() as uow:
        add_user(uow, "ana", "admin", PASSWORD)
    with TestClient(create_app(workspace=workspace)) as test_client:
        form = test_client.get("/app/login")
        found = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert found
        signed = test_client.post(
            "/app/login",
            data={"name": "ana", "password": PASSWORD, "csrf": found.group(1)},
            follow_redirects=False,
        )
        assert signed.status_code == 303
        yield test_client


def cell(html: str, name: str) -> str:
    found = re.search(rf'data-nurture="{name}">([^<]*)<', html)
    assert found, name
    return found.group(1).strip()


def test_the_funnel_page_shows_the_nurture_loop_and_filters_it(client: TestClient) -> None:
    page = client.get("/app/funnel").text
    assert "Nurture loop" in page and 'aria-label="Recycle rate by origin"' in page
    assert cell(page, "entries") == "4" and cell(page, "recycled") == "2"
    assert cell(page, "rate") == "50.0 % (15.0–85.0)"
    assert (cell(page, "median"), cell(page, "p90")) == ("7.0", "8.6")
    assert cell(page, "rejected_mql-entries") == "1" and cell(page, "rejected_mql-recycled") == "1"
    assert cell(page, "decayed_out-median") == "9.0" and cell(page, "lost_opportunity-rate") == "0.0 % (0.0–79.3)"
    assert cell(page, "first_time-sql") == "60.0 % (23.1–88.2)" and cell(page, "recycled-sql") == "50.0 % (9.4–90.5)"
    ads = client.get("/app/funnel", params={"source": "ads"}).text
    assert cell(ads, "entries") == "2" and cell(ads, "recycled") == "0" and cell(ads, "median") == "—"
    assert cell(ads, "recycled-sql") == "—"
    nobody = client.get("/app/funnel", params={"source": "no such source"}).text
    assert "No lead in the report entered nurture." in nobody
