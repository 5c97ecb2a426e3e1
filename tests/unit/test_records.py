"""Accounts, leads and events: what Qualify accepts as input, and what it refuses with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from qualify.domain.errors import InvalidInput
from qualify.domain.records import (
    Lead,
    account_domain_for,
    as_utc,
    make_event,
    normalise_domain,
    normalise_email,
)

NOON = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Jane.Doe@ACME.com ", "jane.doe@acme.com"),
        ("j.doe+news@Sub.Acme.CO.UK", "j.doe+news@sub.acme.co.uk"),
        ("\tops@acme-corp.io\n", "ops@acme-corp.io"),
    ],
)
def test_email_is_trimmed_and_lower_cased(raw: str, expected: str) -> None:
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "jane",
        "jane@",
        "@acme.com",
        "jane@acme",  # no top-level domain
        "jane doe@acme.com",
        "jane@@acme.com",
        "jane@acme..com",
        "jane@-acme.com",
        "<jane@acme.com>",
        "jane@acme.com, joe@acme.com",
        "a" * 250 + "@acme.com",  # longer than 254 characters
    ],
)
def test_non_emails_are_refused_naming_the_email_field(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalise_email(raw)
    assert caught.value.field == "email"
    assert "not an email address" in str(caught.value)


def test_lead_email_is_normalised_and_is_its_key() -> None:
    lead = Lead(email=" Jane@Acme.COM ")
    assert lead.email == "jane@acme.com"
    assert lead.key == "jane@acme.com"
    assert lead.account_domain == "acme.com"


def test_lead_without_email_is_keyed_by_external_id() -> None:
    lead = Lead(external_id="  crm-42 ")
    assert lead.external_id == "crm-42"
    assert lead.key == "ext:crm-42"
    assert lead.account_domain is None


@pytest.mark.parametrize("external_id", [None, "", "   "])
def test_lead_needs_an_email_or_an_external_id(external_id: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        Lead(external_id=external_id)
    assert caught.value.field == "email"


def test_lead_with_bad_email_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not an email address"):
        Lead(email="not-an-email", external_id="crm-1")


@pytest.mark.parametrize(
    "email",
    ["jane@gmail.com", "JANE@GMAIL.COM", "joe@yahoo.co.uk", "kim@outlook.com", "li@163.com", "x@proton.me"],
)
def test_free_mail_leads_have_no_account_domain(email: str) -> None:
    assert Lead(email=email).account_domain is None


def test_company_mail_leads_belong_to_their_domain_account() -> None:
    assert account_domain_for("jane@eu.acme.com") == "eu.acme.com"
    assert account_domain_for(None) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Acme.com", "acme.com"),
        ("https://www.acme.com/pricing", "acme.com"),
        ("http://Shop.Acme.co.uk", "shop.acme.co.uk"),
        ("  www.acme.io ", "acme.io"),
    ],
)
def test_domains_are_normalised(raw: str, expected: str) -> None:
    assert normalise_domain(raw) == expected


@pytest.mark.parametrize("raw", ["acme", "", "acme .com", "-acme.com", "jane@acme.com"])
def test_non_domains_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        normalise_domain(raw)
    assert caught.value.field == "domain"


def test_domain_labels_may_not_start_with_a_hyphen() -> None:
    with pytest.raises(InvalidInput):
        normalise_domain("acme.-com")


def test_naive_times_are_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        as_utc(datetime(2024, 3, 1, 12, 0))
    assert caught.value.field == "occurred_at"
    assert "no time zone" in str(caught.value)


def test_aware_times_are_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    moment = as_utc(datetime(2024, 3, 1, 13, 0, tzinfo=paris))
    assert moment == NOON
    assert moment.utcoffset() == timedelta(0)


def test_make_event_builds_a_normalised_event() -> None:
    properties = {"url": "/pricing"}
    event = make_event(" ev-1 ", "page_view", NOON, email=" Jane@Acme.com ", properties=properties)
    assert event.event_id == "ev-1"
    assert event.type == "page_view"
    assert event.email == "jane@acme.com"
    assert event.occurred_at == NOON
    assert event.properties == {"url": "/pricing"}
    properties["url"] = "/changed"
    assert event.properties == {"url": "/pricing"}, "the event keeps its own copy of the properties"


def test_make_event_accepts_an_external_id_alone() -> None:
    event = make_event("ev-2", "meeting", NOON, external_id=" crm-7 ")
    assert event.external_id == "crm-7"
    assert event.email is None
    assert event.properties == {}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "   "}, "event_id"),
        ({"event_id": "x" * 201}, "event_id"),
        ({"type": "Page View"}, "type"),
        ({"type": "page-view"}, "type"),
        ({"type": "1st_visit"}, "type"),
        ({"type": ""}, "type"),
        ({"type": "a" * 65}, "type"),
        ({"email": None, "external_id": None}, "email"),
        ({"email": None, "external_id": "  "}, "email"),
        ({"email": "jane.at.acme.com"}, "email"),
        ({"occurred_at": datetime(1800, 3, 1, 12, 0)}, "occurred_at"),
        ({"occurred_at": None}, "occurred_at"),  # and nothing received it: no time to give it
    ],
)
def test_make_event_names_the_bad_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {
        "event_id": "ev-1",
        "type": "page_view",
        "occurred_at": NOON,
        "email": "jane@acme.com",
        "external_id": None,
    }
    args.update(kwargs)
    with pytest.raises(InvalidInput) as caught:
        make_event(**args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_an_event_without_a_zone_id_or_time_follows_one_rule() -> None:
    naive = make_event("ev-1", "page_view", datetime(2024, 3, 1, 12, 0), email="jane@acme.com")
    assert naive.occurred_at == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)  # without a zone: UTC
    received = make_event(None, "page_view", None, email="Jane@Acme.com", properties={"url": "/a"}, received_at=NOON)
    again = make_event(None, "page_view", None, email="jane@acme.com", properties={"url": "/a"}, received_at=NOON)
    assert received.occurred_at == NOON and received.event_id == again.event_id  # a retry is a duplicate
    assert received.event_id.startswith("auto-") and len(received.event_id) <= 200
    timed = make_event(None, "page_view", NOON, email="jane@acme.com", properties={"url": "/a"})
    other = make_event(None, "page_view", NOON, email="jane@acme.com", properties={"url": "/b"})
    assert len({received.event_id, timed.event_id, other.event_id}) == 3
    # A sender's retry carries a new sentAt: kept as a property, the same event all the same.
    retried = [
        make_event(None, "page_view", NOON, email="jane@acme.com", properties={"url": "/a", "sentAt": sent})
        for sent in ("2024-03-01T12:00:01Z", "2024-03-01T12:05:00Z")
    ]
    assert retried[0].event_id == retried[1].event_id == timed.event_id
    assert retried[1].properties["sentAt"] == "2024-03-01T12:05:00Z"


def test_make_event_refuses_a_type_with_a_trailing_newline() -> None:
    with pytest.raises(InvalidInput) as caught:
        make_event("ev-1", "page_view\n", NOON, email="jane@acme.com")
    assert caught.value.field == "type"


def test_a_lead_read_back_from_the_store_keeps_every_field() -> None:
    import dataclasses

    names = [f.name for f in dataclasses.fields(Lead)]
    lead = Lead.stored(**{name: f"value of {name}" for name in names})
    assert {name: getattr(lead, name) for name in names} == {name: f"value of {name}" for name in names}
    assert Lead.stored(email="a@acme.com").attributes == {}
