"""The dashboard over HTTP: sign-in, sessions, CSRF, roles, the funnel and the sales queue."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.dashboard_world import PASSWORD, world
from tests.e2e.test_security import Clock

from qualify.adapters import schema
from qualify.domain.errors import Conflict, InvalidInput
from qualify.domain.records import Event
from qualify.entrypoints.api.app import create_app
from qualify.entrypoints.ratelimit import TokenBucket
from qualify.entrypoints.web import SIGN_IN_FAILURES, SIGN_IN_REFILL_SECONDS
from qualify.entrypoints.web import session as sessions
from qualify.service.admin.users import add_user, authenticate, hash_password, verify_password
from qualify.service.lifecycle.events import ingest_events
from qualify.service.reading.funnel import funnel
from qualify.service.unit_of_work import Workspace


def token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> object:
    form = client.get("/app/login")
    return client.post(
        "/app/login", data={"name": name, "password": password, "csrf": token(form.text)}, follow_redirects=False
    )


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    world(workspace)
    with TestClient(create_app(workspace=workspace)) as test_client:
        yield test_client


def test_pages_need_a_signed_in_user_and_a_right_password(client: TestClient) -> None:
    answer = client.get("/app/queue", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/app/login?next=/app/queue"
    wrong = sign_in(client, "ana", "not the password")
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text  # type: ignore[attr-defined]
    unknown = sign_in(client, "nobody")
    assert unknown.status_code == 401  # type: ignore[attr-defined]
    right = sign_in(client, "ana")
    assert right.status_code == 303 and right.headers["location"] == "/app/funnel"  # type: ignore[attr-defined]
    cookie = right.headers["set-cookie"].lower()  # type: ignore[attr-defined]
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert client.get("/app/queue").status_code == 200


def test_failed_sign_ins_are_throttled_per_name_and_address(client: TestClient) -> None:
    clock = Clock()
    client.app.state.sign_in_guard = TokenBucket(  # type: ignore[attr-defined]
        1 / SIGN_IN_REFILL_SECONDS, SIGN_IN_FAILURES, clock=clock
    )
    for _ in range(SIGN_IN_FAILURES):
        assert sign_in(client, "ana", "guess").status_code == 401  # type: ignore[attr-defined]
    # Locked: even the right password is not tried, and the page says for how long.
    locked = sign_in(client, "ANA ")
    assert locked.status_code == 429 and locked.headers["retry-after"] == "90"  # type: ignore[attr-defined]
    assert "Too many failed sign-ins" in locked.text  # type: ignore[attr-defined]
    assert sign_in(client, "sam.rivera").status_code == 303  # type: ignore[attr-defined]  # another name: not locked
    clock.now += SIGN_IN_REFILL_SECONDS  # one more attempt after the wait
    assert sign_in(client, "ana", "guess again").status_code == 401  # type: ignore[attr-defined]
    assert sign_in(client, "ana").status_code == 429  # type: ignore[attr-defined]
    clock.now += SIGN_IN_REFILL_SECONDS
    assert sign_in(client, "ana").status_code == 303  # type: ignore[attr-defined]


def test_a_login_form_without_its_token_and_a_redirect_elsewhere_are_refused(client: TestClient) -> None:
    client.get("/app/login")
    forged = client.post(
        "/app/login", data={"name": "ana", "password": PASSWORD, "csrf": "forged"}, follow_redirects=False
    )
    assert forged.status_code == 200 and "Sign in" in forged.text  # the form again, not a session
    away = client.post(
        "/app/login",
        data={
            "name": "ana",
            "password": PASSWORD,
            "csrf": token(client.get("/app/login").text),
            "next": "//evil.example/",
        },
        follow_redirects=False,
    )
    assert away.headers["location"] == "/app/funnel"


def test_a_tampered_or_expired_session_is_no_session() -> None:
    key = b"k" * 32
    session = sessions.new_session(7)
    signed = sessions.sign(session, key)
    assert sessions.verify(signed, key) == session
    _, mac = signed.rsplit(".", 1)
    other = sessions.sign(sessions.Session(1, session.csrf, session.expires), key).rsplit(".", 1)[0]
    assert sessions.verify(f"{other}.{mac}", key) is None  # another user's id under this signature
    assert sessions.verify(signed, b"another key" * 3) is None
    assert sessions.verify(signed, key, now=session.expires + 1) is None


def test_passwords_are_hashed_with_scrypt_and_checked_in_constant_time(workspace: Workspace) -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$16384$8$1$") and PASSWORD not in stored
    assert verify_password(PASSWORD, stored) and not verify_password(PASSWORD + "!", stored)
    assert not verify_password(PASSWORD, "garbage")
    with workspace.unit_of_work() as uow:
        add_user(uow, "ines", "marketing", PASSWORD)
        with pytest.raises(Conflict):
            add_user(uow, "ines", "sales", PASSWORD)
        with pytest.raises(InvalidInput, match="at least 10"):
            add_user(uow, "short", "sales", "tiny")
        with pytest.raises(InvalidInput, match="unknown role"):
            add_user(uow, "boss", "owner", PASSWORD)
        assert authenticate(uow, "ines", PASSWORD) is not None
        assert authenticate(uow, "ines", "wrong password!") is None


def test_the_funnel_page_shows_the_funnel_s_counts(client: TestClient, workspace: Workspace) -> None:
    sign_in(client, "ana")
    page = client.get("/app/funnel")
    with workspace.unit_of_work(read_only=True) as uow:
        report = funnel(uow)
    for stage in ("lead", "mql", "sql"):
        assert f'data-stage="{stage}">{report.reached[stage]}<' in page.text
    assert 'role="img"' in page.text and "SLA compliance" in page.text


def test_accepting_and_rejecting_in_the_queue_move_the_lead_and_need_the_form_s_token(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, "ana")
    queue = client.get("/app/queue")
    ids = re.findall(r'action="/app/queue/(\d+)/accept"', queue.text)
    assert len(ids) == 8
    csrf = token(queue.text)
    inplace = {"X-Requested-With": "fetch"}
    refused = client.post(f"/app/queue/{ids[0]}/accept", data={"csrf": "forged"}, headers=inplace)
    assert refused.status_code == 403
    accepted = client.post(f"/app/queue/{ids[0]}/accept", data={"csrf": csrf}, headers=inplace)
    assert accepted.status_code == 200 and accepted.text.startswith("<tr") and "Accepted: now sql" in accepted.text
    no_reason = client.post(f"/app/queue/{ids[1]}/reject", data={"csrf": csrf}, headers=inplace)
    assert no_reason.status_code == 422 and "needs a reason code" in no_reason.text
    rejected = client.post(
        f"/app/queue/{ids[1]}/reject", data={"csrf": csrf, "reason": "bad_timing", "note": "Q3"}, headers=inplace
    )
    assert "Rejected: now nurture" in rejected.text
    plain = client.post(
        f"/app/queue/{ids[2]}/disqualify", data={"csrf": csrf, "reason": "competitor"}, follow_redirects=False
    )
    assert plain.status_code == 303 and plain.headers["location"] == "/app/queue"
    with workspace.unit_of_work(read_only=True) as uow:
        h = schema.stage_history
        moves = uow.connection.execute(
            select(h.c.lead_id, h.c.to_stage, h.c.by, h.c.reason, h.c.note).where(h.c.actor == "user")
        ).all()
    assert {(str(m.lead_id), m.to_stage, m.by, m.reason, m.note) for m in moves} == {
        (ids[0], "sql", "ana", None, None),
        (ids[1], "nurture", "ana", "bad_timing", "Q3"),
        (ids[2], "disqualified", "ana", "competitor", None),
    }
    assert len(re.findall(r'action="/app/queue/(\d+)/accept"', client.get("/app/queue").text)) == 5


def test_a_sales_rep_sees_their_own_mqls_and_cannot_open_the_model(client: TestClient, workspace: Workspace) -> None:
    sign_in(client, "sam.rivera")
    with workspace.unit_of_work(read_only=True) as uow:
        own = {
            str(i)
            for i in uow.connection.execute(
                select(schema.leads.c.id).where(schema.leads.c.owner == "sam.rivera", schema.leads.c.stage == "mql")
            ).scalars()
        }
        others = uow.connection.execute(
            select(schema.leads.c.id).where(schema.leads.c.owner != "sam.rivera", schema.leads.c.stage == "mql")
        ).scalars().first()  # fmt: skip
    queue = client.get("/app/queue")
    assert own and set(re.findall(r'action="/app/queue/(\d+)/accept"', queue.text)) == own
    model = client.get("/app/model")
    assert model.status_code == 403 and "Not allowed" in model.text and 'href="/app/model"' not in queue.text
    assert others is not None
    theirs = client.post(
        f"/app/queue/{others}/accept", data={"csrf": token(queue.text)}, headers={"X-Requested-With": "fetch"}
    )
    assert theirs.status_code == 403


def test_signing_out_ends_the_session_even_for_a_copy_of_the_cookie(client: TestClient) -> None:
    sign_in(client, "ana")
    copied = client.cookies.get(sessions.COOKIE)
    page = client.get("/app/funnel")
    out = client.post("/app/logout", data={"csrf": token(page.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/app/login"
    assert client.get("/app/funnel", follow_redirects=False).status_code == 303
    client.cookies.set(sessions.COOKIE, copied, path="/app")
    assert client.get("/app/funnel", follow_redirects=False).status_code == 303  # replayed: no session
    client.cookies.clear()
    sign_in(client, "ana")
    assert client.get("/app/funnel", follow_redirects=False).status_code == 200


def test_odd_input_gets_an_answer_not_a_crash(client: TestClient) -> None:
    sign_in(client, "ana")
    csrf = token(client.get("/app/queue").text)
    inplace = {"X-Requested-With": "fetch"}
    assert client.post("/app/queue/999999/accept", data={"csrf": csrf}, headers=inplace).status_code == 404
    assert client.post(f"/app/queue/{10**19}/accept", data={"csrf": csrf}, headers=inplace).status_code == 422
    assert client.get(f"/app/leads/{10**19}").status_code == 422
    assert client.get("/app/leads/1", params={"page": 10**19}).status_code == 422
    for end in ("9999-12-31", "garbage", "2024-13-45"):
        assert client.get("/app/funnel", params={"end": end}).status_code == 200
    assert client.get("/app/funnel", params={"start": "2024-01-01T00:00+05:00"}).status_code == 200


def test_users_are_added_and_listed_on_the_command_line(tmp_path: object) -> None:
    from typer.testing import CliRunner

    from qualify.entrypoints.cli import app

    runner, db = CliRunner(), ["--db", f"sqlite:///{tmp_path}/users.db"]
    assert runner.invoke(app, ["init", *db]).exit_code == 0
    added = runner.invoke(
        app, ["users", "add", "ana.ruiz", "--role", "marketing", "--password-stdin", *db], input=PASSWORD + "\n"
    )
    assert added.exit_code == 0 and "Added marketing user ana.ruiz" in added.output
    again = runner.invoke(
        app, ["users", "add", "ana.ruiz", "--role", "sales", "--password-stdin", *db], input=PASSWORD + "\n"
    )
    assert again.exit_code != 0 and "exists already" in again.output
    short = runner.invoke(app, ["users", "add", "bo", "--role", "sales", "--password-stdin", *db], input="short\n")
    assert short.exit_code != 0 and "at least 10" in short.output
    listed = runner.invoke(app, ["users", "list", "--json", *db])
    assert [(u["name"], u["role"]) for u in json.loads(listed.output)] == [("ana.ruiz", "marketing")]
    assert PASSWORD not in listed.output


def test_the_lead_page_explains_the_scores_and_draws_them_over_time(client: TestClient, workspace: Workspace) -> None:
    from qualify.service.reading.queries import engagement_over_time, lead_profile

    sign_in(client, "ana")
    queue = client.get("/app/queue")
    lead_id = int(re.findall(r'href="/app/leads/(\d+)"', queue.text)[0])
    page = client.get(f"/app/leads/{lead_id}")
    assert page.status_code == 200
    with workspace.unit_of_work(read_only=True) as uow:
        profile = lead_profile(uow, f"#{lead_id}")
        series = engagement_over_time(uow, lead_id, now=profile.scores["as_of"])
    assert abs(series[-1][1] - profile.scores["engagement"]) < 0.01  # the chart ends at today's score
    assert series[0][1] <= series[-1][1] and len(series) == 60
    for contribution in (*profile.fit_explanation, *profile.engagement_explanation):
        assert contribution.render().replace("'", "&#39;") in page.text
    assert "fast-track: demo_request" in page.text and "<polyline points=" in page.text
    assert "page 1 of 1" in page.text and f"Events ({profile.events_total})" in page.text
    assert client.get("/app/leads/999999").status_code == 404


def test_the_funnel_filters_by_owner_source_channel_and_persona(client: TestClient, workspace: Workspace) -> None:
    sign_in(client, "ana")
    with workspace.unit_of_work(read_only=True) as uow:
        owners = dict(
            uow.connection.execute(select(schema.leads.c.owner, func.count()).group_by(schema.leads.c.owner)).all()
        )
        mine = funnel(uow, where={"owner": "sam.rivera"})
        with pytest.raises(InvalidInput, match="cannot filter leads by 'title'"):
            funnel(uow, where={"title": "VP"})
    assert mine.total_leads == owners["sam.rivera"] < sum(owners.values())
    page = client.get("/app/funnel", params={"owner": "sam.rivera"})
    assert f'data-stage="mql">{mine.reached["mql"]}<' in page.text
    assert '<option value="sam.rivera" selected>' in page.text
    nobody = client.get("/app/funnel", params={"source": "no such source"})
    assert 'data-stage="lead">0<' in nobody.text


def test_insights_show_sources_and_rejection_reasons_and_are_closed_to_sales(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, "ana")
    queue = client.get("/app/queue")
    lead_id = re.findall(r'action="/app/queue/(\d+)/accept"', queue.text)[0]
    client.post(f"/app/queue/{lead_id}/reject", data={"csrf": token(queue.text), "reason": "no_budget"})
    page = client.get("/app/insights")
    assert page.status_code == 200
    assert 'data-reason="no_budget"' in page.text and "Sources: MQLs" in page.text
    assert "No item has enough MQLs yet" in page.text  # 8 MQLs, under the support of 20
    client.post("/app/logout", data={"csrf": token(page.text)})
    sign_in(client, "sam.rivera")
    assert client.get("/app/insights").status_code == 403


def test_the_model_editor_validates_a_candidate_and_backtests_it(client: TestClient, workspace: Workspace) -> None:
    from qualify.domain.model_loader import default_model_text

    sign_in(client, "ana")
    page = client.get("/app/model")
    csrf = token(page.text)
    assert "Candidate YAML" in page.text and "thresholds: {A: 25, B: 40, C: 70}" in page.text
    good = default_model_text().replace("thresholds: {A: 25, B: 40, C: 70}", "thresholds: {A: 60, B: 80, C: 95}")
    valid = client.post("/app/model/validate", data={"csrf": csrf, "document": good})
    assert valid.status_code == 200 and "Valid: default" in valid.text
    bad = good.replace("thresholds: {A: 60", "thresholds: {A: lots")
    invalid = client.post("/app/model/validate", data={"csrf": csrf, "document": bad})
    assert invalid.status_code == 422 and "policy.mql.thresholds.A" in invalid.text and "line 147" in invalid.text
    assert client.post("/app/model/validate", data={"csrf": "forged", "document": good}).status_code == 403
    compared = client.post("/app/model/backtest", data={"csrf": csrf, "document": good})
    assert compared.status_code == 200
    mqls = dict(re.findall(r'data-backtest="(\w+)-mqls">(\d+)<', compared.text))
    assert int(mqls["against"]) == 8 and int(mqls["candidate"]) == 8  # demo requests fast-track whatever the thresholds
    client.post("/app/logout", data={"csrf": csrf})
    sign_in(client, "sam.rivera")
    assert client.post("/app/model/validate", data={"csrf": "x", "document": good}).status_code == 403


def test_the_demo_makes_dashboard_users_who_can_sign_in(tmp_path: object) -> None:
    from typer.testing import CliRunner

    from qualify.bootstrap import open_workspace
    from qualify.entrypoints.cli import app
    from qualify.settings import Settings

    db = f"sqlite:///{tmp_path}/demo.db"
    built = CliRunner().invoke(app, ["demo", "--db", db, "--leads", "40", "--days", "20", "--json"])
    assert built.exit_code == 0, built.output
    dashboard = json.loads(built.output)["dashboard"]
    assert dashboard["url"] == "http://127.0.0.1:8000/app/" and "sam.rivera" in dashboard["sales"]
    workspace = open_workspace(Settings(database_url=db))
    try:
        with TestClient(create_app(workspace=workspace)) as client:
            assert sign_in(client, "demo", dashboard["password"]).status_code == 303  # type: ignore[attr-defined]
            assert client.get("/app/model").status_code == 200
    finally:
        workspace.close()


def test_the_funnel_filters_by_first_touch_campaign(client: TestClient, workspace: Workspace) -> None:
    from tests.dashboard_world import NOW, address

    touches = [(0, "spring", 50), (0, "summer", 40), (1, "summer", 30), (2, "summer", 20), (2, "spring", 10)]
    with workspace.unit_of_work() as uow:
        ingest_events(
            uow,
            [
                Event(
                    event_id=f"t{n}", type="email_open", occurred_at=NOW - timedelta(days=days), email=address(lead),
                    properties={"campaign": campaign},
                )
                for n, (lead, campaign, days) in enumerate(touches)
            ],
            now=NOW,
        )  # fmt: skip
        spring, summer = (funnel(uow, where={"campaign": name}).total_leads for name in ("spring", "summer"))
    assert (spring, summer) == (1, 2)  # vp0's first touch was spring; vp2's summer
    sign_in(client, "ana")
    page = client.get("/app/funnel", params={"campaign": "summer"})
    assert '<option value="summer" selected>' in page.text and 'data-stage="lead">2<' in page.text


def test_insights_show_the_last_figures_with_their_age_while_newer_are_computed(
    client: TestClient, workspace: Workspace
) -> None:
    from tests.dashboard_world import NOW, address

    sign_in(client, "ana")
    first = client.get("/app/insights")
    assert first.status_code == 200 and "Sources: MQLs" in first.text and "being recomputed" not in first.text
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [Event(event_id="new", type="page_view", occurred_at=NOW, email=address(0))], now=NOW)
    stale = client.get("/app/insights")
    assert stale.status_code == 200 and "Sources: MQLs" in stale.text
    assert "The data has changed since: newer figures are being recomputed" in stale.text
    assert client.app.state.insights.wait(120)  # type: ignore[attr-defined]
    assert "being recomputed" not in client.get("/app/insights").text


def test_a_missing_lead_gets_a_page_that_says_so(client: TestClient) -> None:
    sign_in(client, "ana")
    missing = client.get("/app/leads/999999")
    assert missing.status_code == 404 and "There is no lead #999999" in missing.text
    assert "p90" in client.get("/app/funnel").text


def test_the_funnel_page_shows_a_rejection_from_the_queue_in_the_nurture_loop(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, "ana")
    assert "No lead in the report entered nurture." in client.get("/app/funnel").text
    queue = client.get("/app/queue")
    lead_id = re.findall(r'action="/app/queue/(\d+)/accept"', queue.text)[0]
    client.post(f"/app/queue/{lead_id}/reject", data={"csrf": token(queue.text), "reason": "no_need"})
    page = client.get("/app/funnel").text
    loop = re.search(r'<section class="card" aria-labelledby="nurture-title">(.*?)</section>', page, re.S)
    assert loop and "Nurture loop" in loop.group(1)
    cells = dict(re.findall(r'data-nurture="([^"]+)">([^<]*)<', loop.group(1)))
    assert (cells["entries"], cells["recycled"], cells["rate"]) == ("1", "0", "0.0 % (0.0–79.3)")
    assert (cells["rejected_mql-entries"], cells["decayed_out-entries"], cells["reason-no_need"]) == (
        "1",
        "0",
        "0.0 % (0.0–79.3)",
    )
    with workspace.unit_of_work(read_only=True) as uow:
        assert cells["first_time-mqls"] == str(funnel(uow).reached["mql"]) == "8"
    assert cells["recycled-mqls"] == "0" and cells["recycled-sql"] == "—"


def test_the_segments_page_and_the_lead_page_show_automation(client: TestClient, workspace: Workspace) -> None:
    from qualify.domain.automation import load_automation
    from qualify.service.automation.definitions import put_segments, put_workflows
    from qualify.service.automation.reading import segment_members
    from qualify.service.automation.segments import refresh_segments

    document = load_automation(
        """
segments:
  - name: demo-askers
    description: asked for a demo
    when: [{event: demo_request}]
workflows:
  - name: greet
    trigger: {entered_segment: demo-askers}
    steps: [{add_tag: greeted}]
"""
    )
    with workspace.unit_of_work() as uow:
        put_segments(uow, document.segments, by="test")
        put_workflows(uow, document, by="test")
    moved = refresh_segments(workspace)
    assert moved["entered"] > 0
    sign_in(client, "ana")
    page = client.get("/app/automation")
    assert page.status_code == 200 and "demo-askers" in page.text and "asked for a demo" in page.text
    assert f"<td>{moved['entered']}</td>" in page.text and "add tag &#39;greeted&#39;" in page.text
    with workspace.unit_of_work(read_only=True) as uow:
        member = segment_members(uow, "demo-askers", limit=1)[0]["id"]
    lead = client.get(f"/app/leads/{member}")
    assert '<span class="tag">demo-askers</span>' in lead.text and "enrolled" in lead.text
    client.post("/app/logout", data={"csrf": token(lead.text)})
    sign_in(client, "sam.rivera")
    assert client.get("/app/automation").status_code == 403
