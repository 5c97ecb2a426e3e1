"""Web tracking against a real store (SQLite and PostgreSQL): anonymous page views, identification
and stitching, through the public HTTP routes and the use cases under them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.records import Lead
from qualify.entrypoints.api.app import create_app
from qualify.service.lifecycle.lead_admin import erase_lead, merge_leads
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.unit_of_work import Workspace, retrying
from qualify.service.web_tracking import visitors as tracking

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
VISITOR = "3f2a9c0d4b1e8f7a6c5d4e3f2a1b0c9d"
SITE = "https://www.acme.com"


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    with TestClient(create_app(workspace=workspace)) as test_client:
        yield test_client


def beacon(client: TestClient, path: str, body: Any) -> Any:
    """Post as the snippet does: JSON in a text/plain body, no key."""
    text = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(f"/t/{path}", content=text, headers={"Content-Type": "text/plain;charset=UTF-8"})


def view(n: int, url: str, visitor: str = VISITOR, **extra: Any) -> dict[str, Any]:
    return {"visitor": visitor, "event_id": f"pv-{n:06d}", "url": SITE + url, "title": f"Page {n}", **extra}


def identify_body(email: str = "jane@acme.com", event: str = "submit-0001", **extra: Any) -> dict[str, Any]:
    return {"visitor": VISITOR, "event_id": event, "email": email, "url": SITE + "/contact", **extra}


def rows(workspace: Workspace, table: Any, *where: Any) -> list[Any]:
    with workspace.unit_of_work(read_only=True) as uow:
        return list(uow.connection.execute(select(table).where(*where).order_by(table.c.id)).all())


def lead_events(workspace: Workspace, email: str) -> list[Any]:
    with workspace.unit_of_work(read_only=True) as uow:
        record = repo.find_lead(uow.connection, email)
        assert record is not None, f"no lead {email}"
        events = schema.events
        query = select(events).where(events.c.lead_id == record.id).order_by(events.c.occurred_at, events.c.id)
        return list(uow.connection.execute(query).all())


def lead_row(workspace: Workspace, email: str) -> Any:
    [row] = rows(workspace, schema.leads, schema.leads.c.email == email)
    return row


def count(workspace: Workspace, table: Any) -> int:
    with workspace.unit_of_work(read_only=True) as uow:
        return int(uow.connection.execute(select(func.count()).select_from(table)).scalar_one())


def test_page_views_of_an_anonymous_visitor_are_kept_for_it(client: TestClient, workspace: Workspace) -> None:
    first = beacon(client, "events", view(1, "/pricing?utm_campaign=spring&utm_source=g2#plans"))
    second = beacon(
        client,
        "events",
        view(2, "/docs?ref=jane%40acme.com&page=2&First-Name=Jane", referrer="https://search.example/"),
    )
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "stored"
    [visitor] = rows(workspace, schema.visitors)
    assert (visitor.id, visitor.lead_id, visitor.identified_at) == (VISITOR, None, None)
    stored = rows(workspace, schema.visitor_events)
    assert [(r.event_id, r.type, r.stitched_at) for r in stored] == [
        ("pv-000001", "page_view", None),
        ("pv-000002", "page_view", None),
    ]
    # The fragment and a parameter carrying an email address are not kept; UTM tags become properties.
    assert stored[0].properties == {
        "url": SITE + "/pricing?utm_campaign=spring&utm_source=g2",
        "campaign": "spring",
        "utm_source": "g2",
        "title": "Page 1",
    }
    assert stored[1].properties["url"] == SITE + "/docs?page=2"
    assert stored[1].properties["referrer"] == "https://search.example/"
    assert stored[0].occurred_at <= stored[1].occurred_at <= datetime.now(UTC)
    assert count(workspace, schema.leads) == count(workspace, schema.events) == 0


def test_identify_stitches_the_history_onto_a_new_lead_with_its_original_times(
    client: TestClient, workspace: Workspace
) -> None:
    for n, url in enumerate(("/pricing", "/blog/scoring", "/pricing/enterprise")):
        assert beacon(client, "events", view(n, url)).json()["status"] == "stored"
    anonymous = rows(workspace, schema.visitor_events)
    answer = beacon(client, "identify", identify_body("Jane@Acme.com", first_name="Jane", last_name="Doe", form="demo"))
    assert answer.status_code == 200 and answer.json() == {"status": "identified", "stitched": 3}

    events = lead_events(workspace, "jane@acme.com")
    assert [(e.event_id, e.type) for e in events] == [
        ("web:pv-000000", "page_view"),
        ("web:pv-000001", "page_view"),
        ("web:pv-000002", "page_view"),
        ("web:submit-0001", "form_submit"),
    ]
    assert [e.occurred_at for e in events[:3]] == [r.occurred_at for r in anonymous]  # the original times
    assert events[3].occurred_at > events[2].occurred_at
    assert [e.awards for e in events] == [
        [["pricing page", 8.0]],
        [["page view", 1.0]],
        [["pricing page", 8.0]],
        [["form submitted", 8.0]],
    ]
    assert events[3].properties == {  # what the form said of the person, kept as it was sent
        "url": SITE + "/contact", "form": "demo", "submitted_first_name": "Jane", "submitted_last_name": "Doe",
    }  # fmt: skip

    lead = lead_row(workspace, "jane@acme.com")
    assert (lead.first_name, lead.last_name, lead.source) == ("Jane", "Doe", "website")
    assert lead.created_at == anonymous[0].occurred_at  # known since its first visit
    assert lead.engagement_score == pytest.approx(25.0, abs=0.01)  # seconds of decay at most
    [visitor] = rows(workspace, schema.visitors)
    assert visitor.lead_id == lead.id and visitor.identified_at is not None
    assert all(r.stitched_at is not None for r in rows(workspace, schema.visitor_events))


def test_stitched_page_views_are_scored_as_of_when_they_happened(workspace: Workspace) -> None:
    """With the clock in hand: decay runs from each page view's own time, not from the identification."""
    times = [T0, T0 + timedelta(hours=1)]
    for n, (url, at) in enumerate(zip(("/pricing", "/docs"), times, strict=True)):
        with workspace.unit_of_work() as uow:
            tracking.record_page_view(uow, tracking.page_view(VISITOR, f"pv-{n:06d}", SITE + url), now=at)
    when = T0 + timedelta(days=1)
    with workspace.unit_of_work() as uow:
        who = tracking.identification(VISITOR, "submit-0001", "jane@acme.com", url=SITE + "/contact")
        outcome = tracking.identify(uow, who, now=when)
    assert (outcome.status, outcome.stitched, outcome.relinked) == ("identified", 2, False)
    events = lead_events(workspace, "jane@acme.com")
    assert [e.occurred_at for e in events] == [*times, when]
    lead = lead_row(workspace, "jane@acme.com")
    # pricing page: 8 points, half-life 14 days; a page view: 1 point, half-life 7 days; a form: 8.
    expected = 8 * 2 ** (-1 / 14) + 1 * 2 ** (-(23 / 24) / 7) + 8
    assert lead.engagement_score == pytest.approx(expected, rel=1e-6)
    assert lead.created_at == T0 and lead.source == "website"
    [visitor] = rows(workspace, schema.visitors)
    assert (visitor.first_seen_at, visitor.last_seen_at, visitor.identified_at) == (T0, when, when)


def test_a_repeated_identify_or_a_replayed_event_changes_nothing(client: TestClient, workspace: Workspace) -> None:
    beacon(client, "events", view(1, "/pricing"))
    assert beacon(client, "identify", identify_body()).json() == {"status": "identified", "stitched": 1}
    before = (lead_events(workspace, "jane@acme.com"), lead_row(workspace, "jane@acme.com").engagement_score)

    assert beacon(client, "identify", identify_body()).json() == {"status": "identified", "stitched": 0}
    assert beacon(client, "events", view(1, "/pricing")).json()["status"] == "duplicate"  # stitched before
    after = (lead_events(workspace, "jane@acme.com"), lead_row(workspace, "jane@acme.com").engagement_score)
    assert after == before
    assert count(workspace, schema.visitor_events) == 1

    # A page view after identification, replayed: on the lead once.
    assert beacon(client, "events", view(2, "/docs")).json()["status"] == "ingested"
    assert beacon(client, "events", view(2, "/docs")).json()["status"] == "duplicate"
    assert [e.event_id for e in lead_events(workspace, "jane@acme.com")].count("web:pv-000002") == 1
    # A second, real submit (its own event id) is a second form submit, but stitches nothing again.
    assert beacon(client, "identify", identify_body(event="submit-0002")).json()["stitched"] == 0
    types = [e.type for e in lead_events(workspace, "jane@acme.com")]
    assert (types.count("page_view"), types.count("form_submit")) == (2, 2)


def test_concurrent_identifications_of_one_visitor_count_its_history_once(workspace: Workspace) -> None:
    """A double-clicked submit: the visitor's row is locked (PostgreSQL) or the writers take turns
    (SQLite), and the losers of a race are retried — each page view lands on the lead once."""
    for n in range(5):
        with workspace.unit_of_work() as uow:
            tracking.record_page_view(uow, tracking.page_view(VISITOR, f"pv-{n:06d}", f"{SITE}/p{n}"))
    who = tracking.identification(VISITOR, "submit-0001", "jane@acme.com")
    results: list[tracking.IdentifyOutcome] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            results.append(retrying(workspace, lambda uow: tracking.identify(uow, who)))
        except BaseException as error:  # reported below: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(r.stitched for r in results) == [0, 0, 0, 5]
    assert len(lead_events(workspace, "jane@acme.com")) == 6
    assert count(workspace, schema.leads) == 1


def test_page_views_after_identification_go_straight_to_the_lead(client: TestClient, workspace: Workspace) -> None:
    beacon(client, "events", view(1, "/pricing"))
    beacon(client, "identify", identify_body())
    answer = beacon(client, "events", view(2, "/careers", referrer=SITE + "/pricing"))
    assert answer.json() == {"status": "ingested", "reason": None}
    assert count(workspace, schema.visitor_events) == 1  # nothing new waits anonymously
    last = lead_events(workspace, "jane@acme.com")[-1]
    assert (last.event_id, last.type, last.awards) == ("web:pv-000002", "page_view", [["careers page", -5.0]])
    assert last.properties == {"url": SITE + "/careers", "title": "Page 2", "referrer": SITE + "/pricing"}


def test_a_visitor_identifying_with_another_email_moves_to_the_newest_lead(workspace: Workspace) -> None:
    def act(step: Any, minutes: int) -> Any:
        with workspace.unit_of_work() as uow:
            return step(uow, T0 + timedelta(minutes=minutes))

    act(lambda uow, at: tracking.record_page_view(uow, tracking.page_view(VISITOR, "pv-000001", SITE), now=at), 0)
    jane = tracking.identification(VISITOR, "submit-0001", "jane@acme.com")
    john = tracking.identification(VISITOR, "submit-0002", "john@acme.com")
    assert act(lambda uow, at: tracking.identify(uow, jane, now=at), 1).relinked is False
    moved = act(lambda uow, at: tracking.identify(uow, john, now=at), 2)
    assert (moved.status, moved.stitched, moved.relinked) == ("identified", 0, True)
    act(lambda uow, at: tracking.record_page_view(uow, tracking.page_view(VISITOR, "pv-000002", SITE), now=at), 3)

    assert [e.event_id for e in lead_events(workspace, "jane@acme.com")] == ["web:pv-000001", "web:submit-0001"]
    assert [e.event_id for e in lead_events(workspace, "john@acme.com")] == ["web:submit-0002", "web:pv-000002"]
    [visitor] = rows(workspace, schema.visitors)
    assert visitor.lead_id == lead_row(workspace, "john@acme.com").id
    assert visitor.identified_at == T0 + timedelta(minutes=2)


def test_a_known_lead_keeps_its_source_and_its_name_and_gets_only_the_names_it_lacked(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="jane@acme.com", first_name="J.", source="g2", created_at=T0)], now=T0)
    with workspace.unit_of_work() as uow:
        tracking.record_page_view(uow, tracking.page_view(VISITOR, "pv-000001", SITE + "/?utm_source=ads"))
    with workspace.unit_of_work() as uow:
        who = tracking.identification(VISITOR, "submit-0001", " JANE@acme.com ", first_name=" Jane\n", last_name="Doe")
        assert tracking.identify(uow, who).stitched == 1
    lead = lead_row(workspace, "jane@acme.com")
    # A public form fills what is empty and replaces nothing a trusted source set (docs/tracking.md).
    assert (lead.first_name, lead.last_name, lead.source, lead.created_at) == ("J.", "Doe", "g2", T0)
    assert count(workspace, schema.leads) == 1


def test_without_lead_creation_an_unknown_email_leaves_the_visitor_anonymous(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        tracking.record_page_view(uow, tracking.page_view(VISITOR, "pv-000001", SITE), create_unknown=False)
        who = tracking.identification(VISITOR, "submit-0001", "stranger@acme.com")
        outcome = tracking.identify(uow, who, create_unknown=False)
    assert (outcome.status, outcome.lead_id, outcome.stitched) == ("unknown_lead", None, 0)
    [visitor] = rows(workspace, schema.visitors)
    assert visitor.lead_id is None
    [waiting] = rows(workspace, schema.visitor_events)
    assert waiting.stitched_at is None
    assert count(workspace, schema.leads) == count(workspace, schema.events) == 0


def test_an_erased_lead_s_visitor_is_forgotten_and_names_nobody_afterwards(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        tracking.record_page_view(uow, tracking.page_view(VISITOR, "pv-000001", SITE))
        lead_id = tracking.identify(uow, tracking.identification(VISITOR, "submit-0001", "jane@acme.com")).lead_id
    assert lead_id is not None
    with workspace.unit_of_work() as uow:
        erase_lead(uow, "jane@acme.com", by="test")  # forgets the lead's visitors and what they recorded
    assert count(workspace, schema.visitors) == count(workspace, schema.visitor_events) == 0
    assert count(workspace, schema.events) == 0
    with workspace.unit_of_work() as uow:
        outcome = tracking.record_page_view(uow, tracking.page_view(VISITOR, "pv-000002", SITE))
    # The browser still sends its old id, which now names an anonymous visitor, not the erased lead.
    assert outcome.status == "stored"
    [visitor] = rows(workspace, schema.visitors)
    assert visitor.lead_id is None
    with workspace.unit_of_work() as uow:
        assert tracking.forget_visitors(uow, lead_id) == 0


def test_a_merged_lead_s_visitors_follow_it_to_the_lead_it_was_merged_into(workspace: Workspace) -> None:
    other = "0123456789abcdef0123456789abcdef"
    with workspace.unit_of_work() as uow:
        jane = tracking.identify(uow, tracking.identification(VISITOR, "submit-0001", "jane@acme.com")).lead_id
        kept = tracking.identify(uow, tracking.identification(other, "submit-0002", "j.doe@acme.com")).lead_id
    assert jane is not None and kept is not None
    with workspace.unit_of_work() as uow:
        assert tracking.move_visitors(uow, jane, kept) == 1
        merge_leads(uow, "j.doe@acme.com", "jane@acme.com", by="test")  # the old lead's row can go now
    with workspace.unit_of_work() as uow:
        outcome = tracking.record_page_view(uow, tracking.page_view(VISITOR, "pv-000001", SITE + "/pricing"))
    assert outcome.status == "ingested"
    assert [e.event_id for e in lead_events(workspace, "j.doe@acme.com")][-1] == "web:pv-000001"
    assert {v.lead_id for v in rows(workspace, schema.visitors)} == {kept}


def test_a_visitor_that_never_identifies_cannot_fill_the_store(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracking, "MAX_ANONYMOUS_EVENTS", 3)
    statuses = []
    for n in range(5):
        with workspace.unit_of_work() as uow:
            statuses.append(tracking.record_page_view(uow, tracking.page_view(VISITOR, f"pv-{n:06d}", SITE)).status)
    assert statuses == ["stored", "stored", "stored", "dropped", "dropped"]
    assert count(workspace, schema.visitor_events) == 3


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("events", "not json", 422, "body"),
        ("events", "[1, 2]", 422, "body"),
        ("events", {"event_id": "pv-000001", "url": SITE}, 422, "visitor"),
        ("events", view(1, "/", visitor="too-short"), 422, "visitor"),
        ("events", view(1, "/", visitor="x" * 65), 422, "visitor"),
        ("events", view(1, "/", visitor="ünïcode-visitor-id-1234"), 422, "visitor"),
        ("events", {**view(1, "/"), "event_id": "a b c d e f"}, 422, "event_id"),
        ("events", {**view(1, "/"), "url": "javascript:alert(1)"}, 422, "url"),
        ("events", {**view(1, "/"), "url": "/pricing"}, 422, "url"),
        ("events", {**view(1, "/"), "url": SITE + "/" + "a" * 2048}, 422, "url"),
        ("events", {**view(1, "/"), "title": "t" * 301}, 422, "title"),
        ("events", {**view(1, "/"), "referrer": "android-app://x"}, 422, "referrer"),
        ("identify", identify_body(email="not-an-address"), 422, "email"),
        ("identify", {"visitor": VISITOR, "event_id": "submit-0001"}, 422, "email"),
        ("identify", identify_body(first_name="n" * 101), 422, "first_name"),
        ("identify", identify_body(url="ftp://files.acme.com/"), 422, "url"),
        ("events", {**view(1, "/"), "title": "t" * 20_000}, 413, None),
    ],
)
def test_bad_input_answers_a_problem_naming_the_field(
    client: TestClient, workspace: Workspace, path: str, body: Any, status: int, field: str | None
) -> None:
    answer = beacon(client, path, body)
    assert answer.status_code == status, answer.text
    problem = answer.json()
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["access-control-allow-origin"] == "*"  # the site's script may read why
    named = problem.get("field") or (problem.get("errors") or [{}])[0].get("field")
    assert named == field, problem
    if field:
        assert problem["detail"].startswith(field) or field in problem["detail"]
    assert count(workspace, schema.visitors) == count(workspace, schema.leads) == 0


def test_cors_lets_any_site_post_and_the_snippet_is_cacheable(client: TestClient) -> None:
    preflight = client.options(
        "/t/identify",
        headers={"Origin": "https://www.acme.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "Content-Type, Authorization"
    posted = client.post("/t/events", json=view(1, "/"), headers={"Origin": "https://www.acme.com"})
    assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == "*"

    script = client.get("/t/qualify.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "public, max-age=3600"
    assert "sendBeacon" in script.text and "/t/" in script.text and len(script.content) < 8_000
    again = client.get("/t/qualify.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_routes_are_public_and_documented_as_such(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, method in (("/t/qualify.js", "get"), ("/t/events", "post"), ("/t/identify", "post")):
        operation = paths[path][method]
        assert operation["x-public"] is True and "x-permission" not in operation
    body = paths["/t/events"]["post"]["requestBody"]["content"]
    assert set(body) == {"text/plain", "application/json"}
    assert body["text/plain"]["schema"]["properties"]["visitor"]["pattern"] == tracking.VISITOR_PATTERN
    # The documented examples are accepted as they stand: a page view, then the identification.
    for path, status in (("/t/events", "stored"), ("/t/identify", "identified")):
        example = paths[path]["post"]["requestBody"]["content"]["text/plain"]["examples"]["snippet"]["value"]
        assert beacon(client, path.removeprefix("/t/"), example).json()["status"] == status
