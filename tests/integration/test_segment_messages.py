"""Segment-spec messages read and applied in process: the time rule, names as types, every
refusal with its field, and what `alias` does to visitors and to leads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput
from qualify.domain.records import Lead
from qualify.service.connectors.segment import apply_messages, read_message, snake_case, traits_mapping, visitor_of
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.unit_of_work import Workspace

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def read(item: dict[str, Any], **kwargs: Any) -> Any:
    return read_message(item, 0, received_at=NOW, **kwargs)


def test_a_message_s_time_is_the_device_s_corrected_by_its_skew() -> None:
    base = {"type": "track", "event": "Signed Up", "userId": "u1"}
    # A clock two hours slow: the event happened 10 s before it was sent, whatever the clock said.
    slow = read({**base, "timestamp": "2026-11-20T09:59:50Z", "sentAt": "2026-11-20T10:00:00Z"})
    assert slow.occurred_at == NOW - timedelta(seconds=10)
    # The browser's originalTimestamp wins over timestamp; a batch's sentAt serves its messages.
    browser = read({**base, "originalTimestamp": "2026-11-20T11:00:00+01:00"}, sent_at="2026-11-20T10:00:30Z")
    assert browser.occurred_at == NOW - timedelta(seconds=30)
    assert read({**base, "timestamp": "2026-01-05T08:00:00"}).occurred_at == datetime(2026, 1, 5, 8, tzinfo=UTC)
    assert read(base).occurred_at == NOW  # no time at all: received now


def test_names_become_types_and_the_lead_is_found_in_traits_user_id_or_email() -> None:
    assert snake_case("Demo Requested") == "demo_requested" and snake_case("pricingPageViewed") == "pricing_page_viewed"
    assert snake_case("2FA Enabled!") == "e_2fa_enabled"
    assert read({"type": "track", "event": "Demo Requested", "userId": "u1"}).type == "demo_request"  # built in
    mapped = read({"type": "track", "event": "Trial Started", "userId": "u1"}, event_types={"Trial Started": "trial"})
    assert mapped.type == "trial" and mapped.lead_key == (None, "u1")
    by_email = read({"type": "page", "userId": "Ann@Acme.com", "context": {"page": {"url": "https://a.example/x"}}})
    assert by_email.lead_key == ("ann@acme.com", None) and by_email.properties["url"] == "https://a.example/x"
    both = read({"type": "track", "event": "x", "userId": "u9", "context": {"traits": {"email": "bo@acme.com"}}})
    assert both.lead_key == ("bo@acme.com", "u9")
    campaign = read({"type": "page", "anonymousId": "a1", "context": {"campaign": {"name": "spring"}}})
    assert campaign.lead_key == (None, None) and campaign.properties["campaign"] == "spring"


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"type": "track", "userId": "u1"}, "event"),
        ({"type": "track", "event": "!!!", "userId": "u1"}, "event"),
        ({"type": "launch", "userId": "u1"}, "type"),
        ({"type": "track", "event": "x"}, "userId"),
        ({"type": "group", "userId": "u1"}, "groupId"),
        ({"type": "alias", "userId": "u1"}, "previousId"),
        ({"type": "track", "event": "x", "userId": {"id": 1}}, "userId"),
        ({"type": "track", "event": "x", "userId": "u1", "timestamp": "yesterday"}, "timestamp"),
        ({"type": "track", "event": "x", "userId": "u1", "properties": []}, "properties"),
        ({"type": "identify", "userId": "u1", "traits": {"email": "not an email"}}, "traits.email"),
        ({"type": "track", "event": "x", "userId": "u1", "messageId": "auto-1"}, "event_id"),
        ({"type": "track", "event": "x", "userId": "u1", "properties": {"big": "a" * 33_000}}, ""),
    ],
)
def test_a_bad_message_is_refused_naming_its_field(item: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        read(item)
    assert refused.value.field == field


def test_alias_stitches_a_visitor_and_merges_a_lead_known_by_the_previous_id(workspace: Workspace) -> None:
    messages = [
        {"type": "page", "anonymousId": "anon-42", "messageId": "p1", "properties": {"url": "https://a.example/"}},
        {"type": "track", "anonymousId": "anon-42", "messageId": "t1", "event": "Pricing Viewed"},
        {"type": "alias", "previousId": "anon-42", "userId": "kim@acme.com", "messageId": "a1"},
        {"type": "track", "userId": "crm-7", "messageId": "t2", "event": "Webinar Attended"},
        {"type": "alias", "previousId": "crm-7", "userId": "kim@acme.com", "messageId": "a2"},
        {"type": "page", "anonymousId": "anon-42", "messageId": "p2", "properties": {"url": "https://a.example/b"}},
    ]
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="kim@acme.com")])
        read_ = [read_message(m, i, received_at=NOW) for i, m in enumerate(messages)]
        # A key that may only ingest (a web page's public one) may not merge people.
        refused = apply_messages(uow, read_[3:5], now=NOW)
    assert [(o.status, o.field) for o in refused] == [("accepted", None), ("rejected", "previousId")]
    with workspace.unit_of_work() as uow:
        outcomes = apply_messages(uow, read_, now=NOW, may_merge=True)
    assert [o.status for o in outcomes] == ["stored", "stored", "accepted", "duplicate", "accepted", "accepted"]
    with workspace.unit_of_work(read_only=True) as uow:
        conn = uow.connection
        leads = conn.execute(select(schema.leads.c.id, schema.leads.c.email, schema.leads.c.external_id)).all()
        events = conn.execute(select(schema.events.c.event_id, schema.events.c.lead_id)).all()
        visitor = conn.execute(select(schema.visitors).where(schema.visitors.c.id == visitor_of("anon-42"))).one()
    # The lead known as crm-7 was merged in: one lead, which took its external id.
    assert [(lead.email, lead.external_id) for lead in leads] == [("kim@acme.com", "crm-7")]
    assert {e.event_id for e in events} == {"p1", "t1", "t2", "p2"} and {e.lead_id for e in events} == {leads[0].id}
    assert visitor.lead_id == leads[0].id
    # Applying the same messages again changes nothing.
    with workspace.unit_of_work() as uow:
        again = apply_messages(
            uow, [read_message(m, i, received_at=NOW) for i, m in enumerate(messages)], now=NOW, may_merge=True
        )
    assert [o.status for o in again][:2] == ["duplicate", "duplicate"] and again[3].status == "duplicate"


TRAITS = """kind: leads
unmapped: ignore
fields:
  first_name: givenName
  title: jobTitle
  seniority:
    column: level
    map: {VP: vp, Director: director}
  country:
    column: address.country
    map: {United States: US, Germany: DE}
attributes:
  company.plan: {name: plan}
  seats: {name: seats, type: int}
"""


def test_identify_traits_go_through_a_leads_mapping_when_one_is_given(workspace: Workspace, tmp_path: Any) -> None:
    path = tmp_path / "traits.yaml"
    path.write_text(TRAITS, encoding="utf-8")
    mapping = traits_mapping(path)
    identify = {
        "type": "identify", "userId": "u-5", "messageId": "i1",
        "traits": {
            "email": "max@globex.com", "givenName": "Max", "jobTitle": "VP Sales", "level": "VP",
            "address": {"country": "Germany"}, "company": {"plan": "team"}, "seats": "12", "ignored": "x",
        },
    }  # fmt: skip
    with workspace.unit_of_work() as uow:
        [outcome] = apply_messages(uow, [read_message(identify, 0, received_at=NOW)], now=NOW, traits=mapping)
    assert outcome.status == "accepted"
    with workspace.unit_of_work(read_only=True) as uow:
        lead = uow.connection.execute(select(schema.leads).where(schema.leads.c.email == "max@globex.com")).one()
    assert (lead.first_name, lead.title, lead.seniority, lead.country, lead.external_id) == (
        "Max", "VP Sales", "vp", "DE", "u-5",
    )  # fmt: skip
    assert lead.attributes == {"plan": "team", "seats": 12}
    assert traits_mapping(path) is mapping  # read once while the file is unchanged
    path.write_text(TRAITS.replace("fields:", "fieldz:"), encoding="utf-8")
    with pytest.raises(InvalidInput) as refused:
        traits_mapping(path)
    assert "line" in str(refused.value) or refused.value.field


def test_ids_are_taken_literally_and_a_bad_message_is_rejected_alone(workspace: Workspace) -> None:
    """`#1` is an external id, never lead number 1; traits that do not fit, numbers out of range
    and impossible times are rejected with their field, and the rest of the batch is applied."""
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="ceo@customer.com", external_id="crm-1", title="CEO")])
    messages = [
        {"type": "identify", "userId": "#1", "anonymousId": "attacker", "traits": {"title": "intern"}},
        {"type": "alias", "previousId": "#1", "userId": "x@evil.example"},
        {"type": "identify", "userId": "u-2", "traits": {"email": "b@acme.com", "title": "x" * 400}},
        {"type": "group", "groupId": "g", "userId": "a@acme.com", "traits": {"website": "acme.com", "employees": 1e308 * 10}},
        {"type": "track", "event": "x", "userId": "a@acme.com", "timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T00:00:00Z"},
        {"type": "track", "event": "Signed Up", "userId": "a@acme.com", "messageId": "ok-1"},
    ]  # fmt: skip
    with workspace.unit_of_work() as uow:
        read_, outcomes = [], []
        for i, item in enumerate(messages):
            try:
                read_.append(read_message(item, i, received_at=NOW))
            except InvalidInput as error:
                outcomes.append((i, "rejected", error.field))
        outcomes += [(o.index, o.status, o.field) for o in apply_messages(uow, read_, now=NOW, may_merge=True)]
    assert sorted(outcomes) == [
        (0, "accepted", None),
        (1, "accepted", None),
        (2, "rejected", "traits.title"),
        (3, "rejected", "traits.employees"),
        (4, "rejected", "sentAt"),
        (5, "accepted", None),
    ]
    with workspace.unit_of_work(read_only=True) as uow:
        ceo = uow.connection.execute(select(schema.leads).where(schema.leads.c.email == "ceo@customer.com")).one()
        hash_one = uow.connection.execute(select(schema.leads).where(schema.leads.c.external_id == "#1")).one()
    assert (ceo.title, ceo.external_id) == ("CEO", "crm-1")  # lead 1 untouched, not merged away
    # "#1" named a lead of its own (created by the identify), merged into x@evil.example by the alias.
    assert (hash_one.email, hash_one.title) == ("x@evil.example", "intern") and hash_one.id != ceo.id
