"""The dashboard's lead list: search, filters, sort, cursor pages with a true total, CSV export,
saved views and bulk actions, and what a sales rep may see and do. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from tests.dashboard_world import PASSWORD, world
from tests.integration.test_dashboard import sign_in, token

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput
from qualify.domain.records import Lead
from qualify.entrypoints.api.app import create_app
from qualify.service.admin.users import add_user
from qualify.service.lifecycle.lead_ops import BULK_MAX, bulk_action
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.reading.lead_list import SORTS, LeadFilter, count_leads, list_page
from qualify.service.unit_of_work import Workspace


@pytest.fixture
def client(workspace: Workspace) -> Iterator[TestClient]:
    world(workspace, leads=12)
    with workspace.unit_of_work() as uow:
        upsert_leads(
            uow,
            [
                Lead(email="odd_one@bigco.com", first_name="Percy", last_name="100%", external_id="CRM-77"),
                Lead(email="=cmd@evil.example", title="=HYPERLINK(1)"),
            ],
            now=datetime.now(UTC),
        )
        add_user(uow, "mia", "marketing", PASSWORD)
    with TestClient(create_app(workspace=workspace)) as test_client:
        yield test_client


def ids_of(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr data-lead="(\d+)"', html)]


def total_of(html: str) -> int:
    found = re.search(r'data-total="(\d+)"', html)
    assert found, html[:300]
    return int(found.group(1))


def test_search_finds_by_name_email_company_and_id_and_takes_wildcards_literally(client: TestClient) -> None:
    sign_in(client, "ana")
    for words, expected in (
        ("percy", 1),
        ("CRM-77", 1),
        ("odd_one", 1),
        ("100%", 1),  # the % is a character, not "anything"
        ("vera1", 3),  # Vera1, Vera10, Vera11
        ("othercorp", 6),  # the company's domain and name
        ("vera othercorp", 6),  # every word somewhere
        ("o_d", 0),  # the _ is a character, not "any one"
    ):
        page = client.get("/app/leads", params={"q": words})
        assert page.status_code == 200
        assert total_of(page.text) == len(ids_of(page.text)) == expected, words


def test_pages_by_cursor_reach_every_lead_once_in_either_order(client: TestClient, workspace: Workspace) -> None:
    sign_in(client, "ana")
    for order in ("desc", "asc"):
        for sort in ("score", "probability", "activity", "created"):
            seen: list[int] = []
            url, params = "/app/leads", {"sort": sort, "order": order}
            while True:
                page = client.get(url, params=params)
                assert page.status_code == 200, page.text[:300]
                assert total_of(page.text) == 14
                seen += ids_of(page.text)
                following = re.search(r'<a href="\?([^"]+)" rel="next"', page.text)
                if not following:
                    break
                params = {k: v[0] for k, v in parse_qs(following.group(1).replace("&amp;", "&")).items()}
            assert sorted(seen) == sorted(set(seen)) and len(seen) == 14, (sort, order)
    with workspace.unit_of_work(read_only=True) as uow:
        for sort in SORTS:  # every sort, both ways, three at a time: each lead once, in order
            for ascending in (False, True):
                wanted, got = LeadFilter(sort=sort, ascending=ascending, limit=3), []
                while True:
                    rows, wanted.cursor = list_page(uow, wanted)
                    got += [int(r["id"]) for r in rows]
                    if wanted.cursor is None:
                        break
                assert sorted(got) == sorted(set(got)) and len(got) == 14, (sort, ascending)
        first, cursor = list_page(uow, LeadFilter(sort="score", limit=5))
        rest, _ = list_page(uow, LeadFilter(sort="score", limit=50, cursor=cursor))
        scores = [r["score"] for r in first + rest]
        ascending = [r["score"] for r in list_page(uow, LeadFilter(sort="score", ascending=True, limit=50))[0]]
    assert scores == sorted(scores, reverse=True) and ascending == sorted(ascending)
    with workspace.unit_of_work(read_only=True) as uow, pytest.raises(InvalidInput, match="cursor"):
        list_page(uow, LeadFilter(sort="score", ascending=True, cursor=cursor))  # a cursor of the other order


def test_filters_combine_and_bad_values_are_said_not_crashed_on(client: TestClient, workspace: Workspace) -> None:
    sign_in(client, "ana")
    mqls = client.get("/app/leads", params={"stage": "mql", "owner": "sam.rivera"})
    with workspace.unit_of_work(read_only=True) as uow:
        expected = count_leads(uow, LeadFilter(stage="mql", owner="sam.rivera"))
    assert expected > 0 and total_of(mqls.text) == expected
    odd = client.get("/app/leads", params={"min_score": "lots", "created_from": "2026-99-01"})
    assert odd.status_code == 200
    assert "Ignored: min score &#39;lots&#39; is not a number." in odd.text
    assert "Ignored: created from &#39;2026-99-01&#39; is not a date." in odd.text
    bad = client.get("/app/leads", params={"stage": "pwned"})
    assert bad.status_code == 422 and "unknown stage &#39;pwned&#39;" in bad.text
    high = client.get("/app/leads", params={"min_probability": "101"})
    assert high.status_code == 200 and total_of(high.text) == 0


def test_a_sales_rep_lists_only_their_own_leads_and_cannot_act_in_bulk(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, "sam.rivera")
    page = client.get("/app/leads", params={"owner": "ana"})  # asking for another's leads changes nothing
    with workspace.unit_of_work(read_only=True) as uow:
        own = set(
            uow.connection.execute(select(schema.leads.c.id).where(schema.leads.c.owner == "sam.rivera")).scalars()
        )
    assert own and set(ids_of(page.text)) == own and total_of(page.text) == len(own)
    assert 'action="/app/leads/bulk"' in page.text and 'name="action"' not in page.text
    refused = client.post("/app/leads/bulk", data={"csrf": token(page.text), "action": "tag", "value": "x", "lead": 1})
    assert refused.status_code == 403
    exported = list(csv.DictReader(io.StringIO(client.get("/app/leads.csv").text)))
    assert {int(r["id"]) for r in exported} == own


def test_bulk_actions_change_the_ticked_leads_and_are_audited(client: TestClient, workspace: Workspace) -> None:
    sign_in(client, "mia")
    page = client.get("/app/leads", params={"q": "vera"})
    picked = ids_of(page.text)[:3]
    done = client.post(
        "/app/leads/bulk",
        data={"csrf": token(page.text), "action": "assign", "value": "dana.kim", "lead": picked, "back": "q=vera"},
    )
    assert done.status_code == 200 and "assign owner: 3 lead(s) changed" in done.text
    assert total_of(done.text) == 12  # the list comes back as it was, with what was done
    tagged = client.post(
        "/app/leads/bulk", data={"csrf": token(done.text), "action": "tag", "value": "VIP", "lead": picked[:2]}
    )
    assert "add tag: 2 lead(s) changed" in tagged.text
    again = client.post(
        "/app/leads/bulk", data={"csrf": token(done.text), "action": "tag", "value": "vip", "lead": picked[:2]}
    )
    assert "add tag: 0 lead(s) changed, 2 left as they were" in again.text  # tags match whatever their case
    forged = client.post("/app/leads/bulk", data={"csrf": "forged", "action": "tag", "value": "x", "lead": picked})
    assert forged.status_code == 403
    with workspace.unit_of_work(read_only=True) as uow:
        leads, tags, audit = schema.leads, schema.lead_tags, schema.audit_log
        owners = uow.connection.execute(select(leads.c.owner, leads.c.owner_rule).where(leads.c.id.in_(picked))).all()
        tagged_ids = set(uow.connection.execute(select(tags.c.lead_id).where(tags.c.tag == "VIP")).scalars())
        entries = uow.connection.execute(
            select(audit.c.action, audit.c.actor, audit.c.details).where(audit.c.action.like("lead.bulk.%"))
        ).all()
        assigned = uow.connection.execute(
            select(func.count()).select_from(schema.assignments).where(schema.assignments.c.owner == "dana.kim")
        ).scalar()
    assert owners == [("dana.kim", "assigned by mia")] * 3 and assigned == 3
    assert tagged_ids == set(picked[:2])
    assert [(a, who) for a, who, _ in entries] == [
        ("lead.bulk.assign", "mia"),
        ("lead.bulk.tag", "mia"),
        ("lead.bulk.tag", "mia"),
    ]
    assert sorted(entries[0][2]["changed"]) == sorted(picked)
    with workspace.unit_of_work() as uow:
        with pytest.raises(InvalidInput, match=f"at most {BULK_MAX:,}"):
            bulk_action(uow, list(range(1, BULK_MAX + 2)), "tag", "x", by="mia")
        with pytest.raises(InvalidInput, match="say the owner"):
            bulk_action(uow, picked, "assign", " ", by="mia")
        moved = bulk_action(uow, picked, "nurture", "not now", by="mia")
    assert len(moved.changed) == 3  # MQLs may be parked in nurture


def test_the_ticked_leads_go_into_a_static_segment_and_the_api_takes_them_out(
    client: TestClient, workspace: Workspace
) -> None:
    from tests.conftest import key_for

    from qualify.domain.automation import load_automation
    from qualify.service.automation.definitions import put_segments

    sign_in(client, "mia")
    page = client.get("/app/leads", params={"q": "vera"})
    assert "add to a static segment" not in page.text  # no static segment yet: nothing to offer
    document = load_automation("segments:\n  - {name: call-list, static: true}\n  - {name: vips, when: [{tag: vip}]}\n")
    with workspace.unit_of_work() as uow:
        put_segments(uow, document.segments, by="mia")
        marketing = key_for(uow, "marketing", "mkt")
        sales = key_for(uow, "sales", "rep")
    page = client.get("/app/leads", params={"q": "vera"})
    assert '<option value="segment">add to a static segment</option>' in page.text
    assert '<select id="bulk-segment" name="segment"><option>call-list</option></select>' in page.text  # not vips
    picked = ids_of(page.text)[:3]
    done = client.post(
        "/app/leads/bulk",
        data={"csrf": token(page.text), "action": "segment", "segment": "call-list", "lead": picked},
    )
    assert "add to a static segment: 3 lead(s) changed" in done.text
    dynamic = client.post(
        "/app/leads/bulk", data={"csrf": token(done.text), "action": "segment", "segment": "vips", "lead": picked}
    )
    assert "Nothing was changed: segment: &#39;vips&#39; is dynamic" in dynamic.text
    listed = client.get("/app/leads", params={"segment": "call-list"})
    assert sorted(ids_of(listed.text)) == sorted(picked)  # the list filters by it as by any segment
    headers = {"Authorization": f"Bearer {marketing}"}
    out = client.post("/v1/segments/call-list/members", json={"remove": picked[:1], "add": [999_999]}, headers=headers)
    assert out.status_code == 200, out.text
    assert out.json() == {"added": [], "removed": picked[:1], "skipped": {"999999": "no such lead"}}
    members = client.get("/v1/segments/call-list/members", headers=headers).json()
    assert sorted(m["id"] for m in members) == sorted(picked[1:])
    for body, status in (({}, 422), ({"add": ["x"]}, 422), ({"add": [1], "extra": 1}, 422)):
        assert client.post("/v1/segments/call-list/members", json=body, headers=headers).status_code == status
    assert client.post("/v1/segments/vips/members", json={"add": picked}, headers=headers).status_code == 422
    assert client.post("/v1/segments/nope/members", json={"add": picked}, headers=headers).status_code == 404
    refused = client.post(
        "/v1/segments/call-list/members", json={"add": picked}, headers={"Authorization": f"Bearer {sales}"}
    )
    assert refused.status_code == 403


def test_saved_views_belong_to_their_user(client: TestClient) -> None:
    sign_in(client, "ana")
    page = client.get("/app/leads")
    saved = client.post(
        "/app/leads/views",
        data={"csrf": token(page.text), "name": "Big co VPs", "query": "q=bigco&sort=fit&order=asc&cursor=abc"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    target = urlparse(saved.headers["location"])
    assert parse_qs(target.query) == {"q": ["bigco"], "sort": ["fit"], "order": ["asc"]}  # no page is kept
    listed = client.get("/app/leads").text
    assert "Big co VPs" in listed
    view_id = re.search(r'action="/app/leads/views/(\d+)/delete"', listed)
    assert view_id
    client.cookies.clear()
    sign_in(client, "mia")
    theirs = client.get("/app/leads").text
    assert "Big co VPs" not in theirs
    client.post(f"/app/leads/views/{view_id.group(1)}/delete", data={"csrf": token(theirs)})
    client.cookies.clear()
    sign_in(client, "ana")
    assert "Big co VPs" in client.get("/app/leads").text  # another user cannot delete it


def test_the_csv_export_holds_every_page_and_no_formula(client: TestClient) -> None:
    sign_in(client, "ana")
    exported = client.get("/app/leads.csv", params={"sort": "created"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == 14 and {"fit_score", "engagement_score", "score", "probability"} <= rows[0].keys()
    evil = next(r for r in rows if "evil.example" in r["email"])
    assert evil["email"].startswith("'=") and evil["title"] == "'=HYPERLINK(1)"


def test_a_lead_is_worked_from_its_page_within_the_role_s_rights(client: TestClient, workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        leads = schema.leads
        mine = uow.connection.execute(
            select(leads.c.id).where(leads.c.owner == "sam.rivera", leads.c.stage == "mql").order_by(leads.c.id)
        ).scalar()
        theirs = uow.connection.execute(
            select(leads.c.id).where(leads.c.owner != "sam.rivera", leads.c.stage == "mql").order_by(leads.c.id)
        ).scalar()
        upsert_leads(
            uow,
            [Lead(email="vp0@bigco.com", do_not_email=True, attributes={"Lead Quality": "High in Relevance"})],
            now=datetime.now(UTC),
        )
    assert mine and theirs
    sign_in(client, "sam.rivera")
    other = client.get(f"/app/leads/{theirs}").text
    assert "Act on this lead" not in other and 'action="/app/leads/' not in other.split("Notes")[0].split("Owner")[1]
    refused = client.post(f"/app/leads/{theirs}/actions/accept", data={"csrf": token(other)})
    assert refused.status_code == 403
    assert (
        client.post(f"/app/leads/{theirs}/owner", data={"csrf": token(other), "owner": "sam.rivera"}).status_code == 403
    )
    page = client.get(f"/app/leads/{mine}").text
    assert "← Leads" in page and "Act on this lead" in page and "no budget" in page  # reason codes in words
    unreasoned = client.post(f"/app/leads/{mine}/actions/reject", data={"csrf": token(page)})
    assert unreasoned.status_code == 422 and "needs a reason code" in unreasoned.text
    rejected = client.post(
        f"/app/leads/{mine}/actions/reject",
        data={"csrf": token(page), "reason": "no_budget", "note": "next quarter"},
        follow_redirects=False,
    )
    assert rejected.status_code == 303 and rejected.headers["location"] == f"/app/leads/{mine}"
    noted = client.post(f"/app/leads/{mine}/notes", data={"csrf": token(page), "note": "Called: <b>call back</b>"})
    assert noted.status_code == 200 and "Called: &lt;b&gt;call back&lt;/b&gt;" in noted.text
    tagged = client.post(f"/app/leads/{mine}/tags", data={"csrf": token(page), "tag": "hot"})
    assert '<span class="tag">hot</span>' in tagged.text
    untagged = client.post(f"/app/leads/{mine}/tags", data={"csrf": token(page), "tag": "hot", "remove": "true"})
    assert '<span class="tag">hot</span>' not in untagged.text
    after = client.get(f"/app/leads/{mine}").text
    assert 'data-stage="nurture"' in after and "no budget — next quarter" in after
    with workspace.unit_of_work(read_only=True) as uow:
        by = uow.connection.execute(
            select(schema.stage_history.c.by)
            .where(schema.stage_history.c.lead_id == mine)
            .order_by(schema.stage_history.c.id.desc())
        ).scalar()
    assert by == "sam.rivera"
    client.cookies.clear()
    sign_in(client, "ana")
    jane = client.get("/app/leads/1").text
    assert "Unsubscribed: no email is sent to this lead." in jane and "Lead Quality" in jane
    moved = client.post(f"/app/leads/{theirs}/owner", data={"csrf": token(jane), "owner": "dana.kim"})
    assert moved.status_code == 200 and "dana.kim" in moved.text and "assigned by ana" in moved.text
    parked = client.post(f"/app/leads/{theirs}/nurture", data={"csrf": token(jane), "reason": "not yet"})
    assert 'data-stage="nurture"' in parked.text
    again = client.post(f"/app/leads/{theirs}/nurture", data={"csrf": token(jane), "reason": "not yet"})
    assert again.status_code == 422 and "only lead, mql go to nurture" in again.text


def test_notes_are_exported_moved_by_a_merge_and_erased_with_the_lead(workspace: Workspace) -> None:
    from qualify.service.lifecycle.lead_admin import erase_lead, export_lead, merge_leads
    from qualify.service.lifecycle.lead_ops import add_note, notes_of

    world(workspace, leads=2)
    with workspace.unit_of_work() as uow:
        first, second = (repo_id(uow, f"vp{i}@{d}") for i, d in ((0, "bigco.com"), (1, "othercorp.com")))
        add_note(uow, second, "met at the fair", by="ana")
        with pytest.raises(InvalidInput, match="write something"):
            add_note(uow, second, "   ", by="ana")
        merge_leads(uow, "vp0@bigco.com", "vp1@othercorp.com", by="ana")
        assert [n["text"] for n in notes_of(uow, first)] == ["met at the fair"]
        assert [n["text"] for n in export_lead(uow, "vp0@bigco.com")["notes"]] == ["met at the fair"]
        erase_lead(uow, "vp0@bigco.com", by="ana")
        assert notes_of(uow, first) == []


def repo_id(uow: object, email: str) -> int:
    from qualify.adapters import repository as repo

    found = repo.find_lead(uow.connection, email)  # type: ignore[attr-defined]
    assert found is not None and found.id is not None
    return found.id


def test_the_queue_pages_with_a_true_total_sorts_filters_and_flags_overdue_mqls(
    workspace: Workspace,
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    world(workspace, leads=57)
    with workspace.unit_of_work() as uow:
        leads = schema.leads
        late = uow.connection.execute(select(leads.c.id).where(leads.c.stage == "mql").order_by(leads.c.id)).scalar()
        uow.connection.execute(
            update(leads).where(leads.c.id == late).values(sla_due_at=datetime.now(UTC) - timedelta(hours=5))
        )
        mqls = uow.connection.execute(select(func.count()).where(leads.c.stage == "mql")).scalar()
        sams = uow.connection.execute(
            select(func.count()).where(leads.c.stage == "mql", leads.c.owner == "sam.rivera")
        ).scalar()
    assert mqls == 57
    with TestClient(create_app(workspace=workspace)) as client:
        sign_in(client, "ana")
        first = client.get("/app/queue").text
        assert total_of(first) == 57 and first.count("<tr data-row") == 50 and "page 1 of 2" in first
        second = client.get("/app/queue", params={"page": 2}).text
        assert second.count("<tr data-row") == 7
        ids = re.findall(r'id="lead-(\d+)"', first) + re.findall(r'id="lead-(\d+)"', second)
        assert len(set(ids)) == 57  # every MQL once over the pages
        by_due = client.get("/app/queue", params={"sort": "due"}).text
        assert re.findall(r'id="lead-(\d+)"', by_due)[0] == str(late)
        assert '<tr data-row id="lead-' + str(late) + '" class="overdue">' in by_due and "overdue by 5 h" in by_due
        assert "MQL for " in by_due and '<th scope="col">owner</th>' in by_due
        theirs = client.get("/app/queue", params={"owner": "sam.rivera"}).text
        assert total_of(theirs) == sams
        odd = client.get("/app/queue", params={"sort": "nonsense", "grade": "Z"})
        assert odd.status_code == 200 and total_of(odd.text) == 57
        client.cookies.clear()
        sign_in(client, "sam.rivera")
        own = client.get("/app/queue", params={"owner": "ana"}).text
        assert total_of(own) == sams and '<th scope="col">owner</th>' not in own


def test_an_admin_manages_users_and_a_user_changes_their_own_password(workspace: Workspace) -> None:
    from tests.conftest import key_for

    world(workspace, leads=2)
    with workspace.unit_of_work() as uow:
        sams_key = key_for(uow, "sales", "sam-sync", user="sam.rivera")
    with TestClient(create_app(workspace=workspace)) as admin, TestClient(create_app(workspace=workspace)) as sam:
        sign_in(admin, "ana")
        sign_in(sam, "sam.rivera")
        page = admin.get("/app/users").text
        ids = dict(re.findall(r'action="/app/users/(\d+)/role".*?Role of ([\w.]+)', page, re.S))
        ids = {name: int(i) for i, name in ids.items()}
        csrf = token(page)
        added = admin.post("/app/users", data={"csrf": csrf, "name": "mia", "role": "marketing", "password": "p" * 12})
        assert "Added marketing user mia." in added.text and 'data-user="mia"' in added.text
        short = admin.post("/app/users", data={"csrf": csrf, "name": "tim", "role": "sales", "password": "short"})
        assert short.status_code == 422 and "at least 10 characters" in short.text
        last = admin.post(f"/app/users/{ids['ana']}/role", data={"csrf": csrf, "role": "sales"})
        assert last.status_code == 422 and "ana is the last admin" in last.text
        # Disabled: the rep's open session ends at once, and so does their API key.
        assert sam.get("/app/queue").status_code == 200
        bearer = {"Authorization": f"Bearer {sams_key}"}
        assert sam.get("/v1/leads", headers=bearer).status_code == 200
        admin.post(f"/app/users/{ids['sam.rivera']}/disable", data={"csrf": csrf})
        assert sam.get("/app/queue", follow_redirects=False).status_code == 303
        assert sam.get("/v1/leads", headers=bearer).status_code == 401
        assert sign_in(sam, "sam.rivera").status_code == 401  # type: ignore[attr-defined]
        admin.post(f"/app/users/{ids['sam.rivera']}/enable", data={"csrf": csrf})
        reset = admin.post(f"/app/users/{ids['sam.rivera']}/password", data={"csrf": csrf, "password": "n" * 12})
        assert "every session of that user has ended" in reset.text
        assert sign_in(sam, "sam.rivera").status_code == 401  # type: ignore[attr-defined]
        assert sign_in(sam, "sam.rivera", "n" * 12).status_code == 303  # type: ignore[attr-defined]
        promoted = admin.post(f"/app/users/{ids['sam.rivera']}/role", data={"csrf": csrf, "role": "marketing"})
        assert "The role is now marketing." in promoted.text
        assert sam.get("/app/insights").status_code == 200  # the new role holds on the next request
        # Their own password: the current one is asked for; other sessions end, this one goes on.
        mine = sam.get("/app/me").text
        wrong = sam.post(
            "/app/me/password", data={"csrf": token(mine), "current": "bad", "password": "z" * 12, "again": "z" * 12}
        )
        assert wrong.status_code == 422 and "the current password is not right" in wrong.text
        with TestClient(create_app(workspace=workspace)) as elsewhere:
            sign_in(elsewhere, "sam.rivera", "n" * 12)
            changed = sam.post(
                "/app/me/password",
                data={"csrf": token(mine), "current": "n" * 12, "password": "z" * 12, "again": "z" * 12},
            )
            assert "Password changed" in changed.text
            assert sam.get("/app/queue").status_code == 200
            assert elsewhere.get("/app/queue", follow_redirects=False).status_code == 303
    with workspace.unit_of_work(read_only=True) as uow:
        actions = list(
            uow.connection.execute(
                select(schema.audit_log.c.action).where(schema.audit_log.c.action.like("user.%"))
            ).scalars()
        )
    assert {"user.add", "user.disable", "user.enable", "user.password", "user.role"} <= set(actions)


def test_accounts_list_their_people_and_pipeline_and_an_account_page_shows_its_leads(
    client: TestClient, workspace: Workspace
) -> None:
    from datetime import timedelta

    from qualify.service.lifecycle.stage_facts import Deal, upsert_deals

    now = datetime.now(UTC)
    with workspace.unit_of_work() as uow:
        upsert_deals(
            uow,
            [Deal(email="vp1@othercorp.com", external_id=None, deal_id="D-1", opened_at=now - timedelta(days=1),
                  outcome="open", amount=12000.0)],
            now=now,
        )  # fmt: skip
    sign_in(client, "ana")
    listed = client.get("/app/accounts").text
    assert total_of(listed) == 3  # the fixture's evil.example too
    rows = dict(re.findall(r'<tr data-account="(\d+)">\s*<td><a href="/app/accounts/\d+">([\w.]+)</a>', listed))
    assert set(rows.values()) == {"bigco.com", "othercorp.com", "evil.example"}
    # Each account's fit and how many roles of its buying group are engaged (the default model's four).
    assert len(re.findall(r"<td data-account-fit>\d+ [ABCD]</td>", listed)) == 3
    assert len(re.findall(r'<td data-coverage title="\d of 4 roles[^"]*">\d of 4</td>', listed)) == 3
    assert total_of(client.get("/app/accounts", params={"q": "OTHER"}).text) == 1
    assert client.get("/app/accounts", params={"sort": "bogus"}).status_code == 200
    other = next(i for i, name in rows.items() if name == "othercorp.com")
    page = client.get(f"/app/accounts/{other}").text
    assert "Leads (6)" in page and "D-1" in page and "12,000" in page
    assert "← Accounts" in page and 'data-stage-count="mql"' in page
    # The default model scores accounts: fit, its people's engagement and its buying group, explained.
    assert re.search(r"data-account-fit>Fit \d+ \(grade [ABCD]\)", page)
    assert re.search(r"data-coverage>buying group \d of 4 roles", page) and 'data-role="economic buyer"' in page
    assert re.search(r"week of \d{4}-\d\d-\d\d: [1-9][\d.]* points", page)  # this week's demo requests
    # The account's own stage, kept by the pipeline, with its history; a person's action on it.
    assert len(re.findall(r"<td data-account-stage>(target|engaged|mqa|opportunity|customer)", listed)) == 3
    stage = re.search(r"data-account-stage>(\w+)<", page)
    assert stage is not None
    refused = client.post(f"/app/accounts/{other}/actions/win", data={"csrf": token(page)})
    assert refused.status_code == 422 and f"cannot win an account in stage {stage.group(1)}" in refused.text
    lead = client.get("/app/leads/2").text  # vp1@othercorp.com
    assert f'href="/app/accounts/{other}"' in lead
    assert client.get("/app/accounts/999999").status_code == 404
    # An account whose people changed through the API says the worker has yet to keep it.
    from qualify.adapters.repository import mark_accounts_pending

    assert "data-account-pending" not in page
    with workspace.unit_of_work() as uow:
        mark_accounts_pending(uow.connection, [int(other)], now)
    pending = client.get(f"/app/accounts/{other}").text
    assert re.search(r"data-account-pending>Its people changed since [\d-]+ [\d:]+ UTC: the worker", pending)
    client.cookies.clear()
    sign_in(client, "sam.rivera")
    with workspace.unit_of_work(read_only=True) as uow:
        theirs = set(
            uow.connection.execute(
                select(schema.leads.c.account_id).where(schema.leads.c.owner == "sam.rivera")
            ).scalars()
        )
    assert total_of(client.get("/app/accounts").text) == len(theirs - {None})


def test_charts_say_their_values_and_a_sales_rep_s_funnel_is_theirs(client: TestClient, workspace: Workspace) -> None:
    from qualify.service.lifecycle.stages import apply_stage_action

    with workspace.unit_of_work() as uow:
        apply_stage_action(uow, "vp3@othercorp.com", "reject", by="ana", reason="no_authority")
    sign_in(client, "ana")
    funnel = client.get("/app/funnel").text
    assert re.search(r'class="tick value" text-anchor="middle">\d+</text>', funnel)  # weekly bars carry values
    lead = client.get("/app/leads/1").text
    assert 'class="threshold"' in lead and "MQL 25" in lead  # grade A becomes MQL at 25
    insights = client.get("/app/insights").text
    assert 'data-reason="no_authority">no authority to buy</text>' in insights
    client.cookies.clear()
    sign_in(client, "sam.rivera")
    own = client.get("/app/funnel").text
    with workspace.unit_of_work(read_only=True) as uow:
        mine = uow.connection.execute(select(func.count()).where(schema.leads.c.owner == "sam.rivera")).scalar()
    assert f"({mine} leads of yours)" in own and 'id="filter-owner"' not in own


def test_the_api_lists_leads_with_the_same_search_filters_and_order(client: TestClient, workspace: Workspace) -> None:
    from tests.conftest import key_for

    with workspace.unit_of_work() as uow:
        bearer = {"Authorization": f"Bearer {key_for(uow, 'admin')}"}
    found = client.get("/v1/leads", params={"q": "othercorp vera"}, headers=bearer).json()["items"]
    assert len(found) == 6 and all("othercorp" in lead["email"] for lead in found)
    up = client.get("/v1/leads", params={"sort": "created", "order": "asc", "limit": 5}, headers=bearer).json()
    rest = client.get(
        "/v1/leads",
        params={"sort": "created", "order": "asc", "limit": 50, "cursor": up["next_cursor"]},
        headers=bearer,
    ).json()["items"]
    times = [lead["created_at"] for lead in up["items"] + rest]
    assert len(times) == 14 and times == sorted(times)
    wrong = client.get("/v1/leads", params={"sort": "created", "cursor": up["next_cursor"]}, headers=bearer)
    assert wrong.status_code == 422 and wrong.json()["field"] == "cursor"  # made for the other order
    assert client.get("/v1/leads", params={"min_probability": 2}, headers=bearer).status_code == 422


def test_an_admin_activates_a_candidate_only_after_backtesting_that_very_version(
    client: TestClient, workspace: Workspace
) -> None:
    from qualify.domain.model_loader import default_model_text

    original = default_model_text()
    candidate = original.replace("thresholds: {A: 25, B: 40, C: 70}", "thresholds: {A: 60, B: 80, C: 95}")
    other = original.replace("thresholds: {A: 25, B: 40, C: 70}", "thresholds: {A: 61, B: 80, C: 95}")
    sign_in(client, "mia")
    page = client.get("/app/model").text
    tested = client.post("/app/model/backtest", data={"csrf": token(page), "document": candidate})
    assert tested.status_code == 200 and 'action="/app/model/activate"' not in tested.text  # marketing may not
    client.cookies.clear()
    sign_in(client, "ana")
    page = client.get("/app/model").text
    tested = client.post("/app/model/backtest", data={"csrf": token(page), "document": candidate}).text
    proof = re.search(r'name="proof" value="([^"]+)"', tested)
    assert proof and "I have read this backtest: MQLs go from" in tested
    good = {"csrf": token(page), "document": candidate, "proof": proof.group(1), "confirm": "yes"}

    def activate(**changes: str) -> Any:
        return client.post("/app/model/activate", data={**good, **changes})

    assert "confirm the change: MQLs in the backtest go from" in activate(confirm="").text
    forged = good["proof"].rsplit("|", 1)[0] + "|" + "0" * 64
    assert "backtest the candidate first" in activate(proof=forged).text
    assert "not the version that was backtested" in activate(document=other).text
    with workspace.unit_of_work(read_only=True) as uow:
        before = uow.active_model().version
    done = activate()
    assert done.status_code == 200 and "Activated " in done.text
    with workspace.unit_of_work(read_only=True) as uow:
        after = uow.active_model().version
        actor = uow.connection.execute(
            select(schema.audit_log.c.actor)
            .where(schema.audit_log.c.action.like("model.%"))
            .order_by(schema.audit_log.c.id.desc())
        ).scalar()
    assert after != before and actor == "ana"
    again = activate(document=original)  # the proof was for another version, against another active model
    assert again.status_code == 422 and "Not activated" in again.text


def test_segments_and_workflows_are_edited_tried_and_applied_in_the_page(
    client: TestClient, workspace: Workspace
) -> None:
    sign_in(client, "mia")
    page = client.get("/app/automation/editor").text
    assert "segments: []" in page and "workflows: []" in page  # an empty workspace's document
    csrf = token(page)
    bad = client.post(
        "/app/automation/validate", data={"csrf": csrf, "document": "segments:\n  - name: x\n    when: 5\n"}
    )
    assert bad.status_code == 422 and "line 3" in bad.text
    document = """segments:
  - name: demo-askers
    when: [{event: demo_request}]
workflows:
  - name: tag-demo-askers
    trigger: {entered_segment: demo-askers}
    steps: [{add_tag: demo}]
"""
    valid = client.post("/app/automation/validate", data={"csrf": csrf, "document": document})
    assert valid.status_code == 200 and "Valid: 1 segment, 1 workflow" in valid.text
    tried = client.post("/app/automation/preview", data={"csrf": csrf, "document": document}).text
    assert re.search(r"<span data-members>12</span> members; 12 would enter, 0 would leave", tried)
    assert "Workflow <strong>tag-demo-askers</strong> would enrol the 12 who enter" in tried
    with workspace.unit_of_work(read_only=True) as uow:
        assert uow.connection.execute(select(func.count()).select_from(schema.segments)).scalar() == 0  # a dry run
    applied = client.post("/app/automation/apply", data={"csrf": csrf, "document": document})
    assert applied.status_code == 200 and "Segments: 1 created" in applied.text and "12 leads entered" in applied.text
    members = client.get("/app/automation/segments/demo-askers").text
    assert members.count("<tr data-member=") == 12
    again = client.post("/app/automation/apply", data={"csrf": csrf, "document": "segments: [{name: 5"})
    assert again.status_code == 422 and "Not applied" in again.text
    client.cookies.clear()
    sign_in(client, "sam.rivera")
    assert client.get("/app/automation/editor").status_code == 403


def test_the_list_filters_by_first_touch_campaign(client: TestClient, workspace: Workspace) -> None:
    from datetime import timedelta

    from qualify.domain.records import Event
    from qualify.service.lifecycle.events import ingest_events

    now = datetime.now(UTC)
    with workspace.unit_of_work() as uow:
        ingest_events(
            uow,
            [
                Event(
                    "c1",
                    "page_view",
                    now - timedelta(days=3),
                    email="vp1@othercorp.com",
                    properties={"campaign": "spring"},
                ),
                Event(
                    "c2",
                    "page_view",
                    now - timedelta(days=2),
                    email="vp1@othercorp.com",
                    properties={"campaign": "autumn"},
                ),
                Event(
                    "c3", "page_view", now - timedelta(days=1), email="vp2@bigco.com", properties={"campaign": "autumn"}
                ),
            ],
            now=now,
        )
    sign_in(client, "ana")
    spring = client.get("/app/leads", params={"campaign": "spring"}).text
    autumn = client.get("/app/leads", params={"campaign": "autumn"}).text
    assert total_of(spring) == 1 and total_of(autumn) == 1  # vp1's first touch was spring
