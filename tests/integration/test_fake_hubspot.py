"""The fake HubSpot (tests/fake_hubspot.py) driven by HubSpot's own Python client, as the CRM sync adapter drives it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hubspot import HubSpot  # type: ignore[import-untyped]
from hubspot.crm import objects, properties  # type: ignore[import-untyped]
from hubspot.crm.associations import v4  # type: ignore[import-untyped]
from tests.fake_hubspot import FakeHubSpot

T0 = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)


class Clock:
    """The fake's time, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeHubSpot]:
    with FakeHubSpot(page_limit=2, clock=clock) as server:
        yield server


def client(fake: FakeHubSpot, token: str | None = None) -> HubSpot:
    return HubSpot(access_token=token or fake.token, host=fake.url)


def test_search_pages_through_changed_contacts(fake: FakeHubSpot, clock: Clock) -> None:
    old = fake.add("contacts", {"email": "old@example.com"}, at=T0 - timedelta(days=3))
    fresh = [fake.add("contacts", {"email": f"c{i}@example.com", "firstname": f"C{i}"}) for i in range(5)]
    since = str(int((T0 - timedelta(days=1)).timestamp() * 1000))  # epoch milliseconds, as HubSpot documents
    search = {
        "filter_groups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": since}]}],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["email", "firstname"],
        "limit": 100,
    }
    seen: list[str] = []
    after: str | None = None
    api = client(fake).crm.objects.search_api
    while True:
        page = api.do_search("contacts", objects.PublicObjectSearchRequest(**search, after=after))
        assert page.total == 5
        seen += [record.id for record in page.results]
        if page.paging is None:
            break
        after = page.paging.next.after
    assert seen == fresh and old not in seen
    record = fake.objects["contacts"][fresh[0]]
    assert record["properties"]["lastmodifieddate"] == "2026-12-06T21:00:00.000Z" == record["updatedAt"]
    assert fake.count("POST", "/crm/v3/objects/contacts/search") == 3  # pages of 2, 2 and 1
    assert fake.problems == []


def test_batch_upsert_creates_and_updates_by_email(fake: FakeHubSpot, clock: Clock) -> None:
    known = fake.add("contacts", {"email": "ann@example.com", "firstname": "Ann"})
    clock.now = T0 + timedelta(hours=1)
    inputs = [
        objects.SimplePublicObjectBatchInputUpsert(
            id_property="email", id="ANN@example.com", properties={"jobtitle": "CTO"}
        ),
        objects.SimplePublicObjectBatchInputUpsert(
            id_property="email", id="bob@example.com", properties={"firstname": "Bob"}
        ),
    ]
    answer = client(fake).crm.objects.batch_api.upsert(
        "contacts", objects.BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs)
    )
    assert answer.status == "COMPLETE"
    by_email = {result.properties["email"]: result for result in answer.results}
    assert by_email["ann@example.com"].id == known and by_email["ann@example.com"].new is False
    assert by_email["bob@example.com"].new is True and by_email["bob@example.com"].properties["firstname"] == "Bob"
    ann = fake.objects["contacts"][known]["properties"]
    assert ann["jobtitle"] == "CTO" and ann["lastmodifieddate"] == "2026-12-06T22:00:00.000Z"
    assert fake.problems == []


def test_batch_read_answers_207_for_missing_ids(fake: FakeHubSpot) -> None:
    company = fake.add("companies", {"name": "Acme", "domain": "acme.example", "numberofemployees": 120})
    request = objects.BatchReadInputSimplePublicObjectId(
        inputs=[objects.SimplePublicObjectId(id=company), objects.SimplePublicObjectId(id="999")],
        properties=["name", "numberofemployees"],
        properties_with_history=[],
    )
    answer = client(fake).crm.objects.batch_api.read("companies", request)
    assert [result.properties["numberofemployees"] for result in answer.results] == ["120"]  # values come as strings
    assert answer.errors[0].category == "OBJECT_NOT_FOUND" and answer.errors[0].context == {"ids": ["999"]}
    assert fake.requests[-1] == ("POST", "/crm/v3/objects/companies/batch/read", 207)
    assert fake.problems == []


def fetch(*ids: str) -> v4.BatchInputPublicFetchAssociationsBatchRequest:
    return v4.BatchInputPublicFetchAssociationsBatchRequest(
        inputs=[v4.PublicFetchAssociationsBatchRequest(id=i) for i in ids]
    )


def test_associations_v4_batch_read(fake: FakeHubSpot) -> None:
    company = fake.add("companies", {"name": "Acme"})
    contact = fake.add("contacts", {"email": "ann@example.com"}, associations={"companies": [company]})
    deal = fake.add("deals", {"dealname": "Acme pilot", "dealstage": "closedwon"}, associations={"contacts": [contact]})
    lone = fake.add("deals", {"dealname": "Nobody's"})
    batch = client(fake).crm.associations.v4.batch_api
    answer = batch.get_page("deals", "contacts", fetch(deal, lone))
    assert [(r._from.id, [t.to_object_id for t in r.to]) for r in answer.results] == [(deal, [contact])]
    assert answer.results[0].to[0].association_types[0].type_id == 3
    assert "No contact is associated with deal" in answer.errors[0].message  # the deal without contacts
    to_company = batch.get_page("contacts", "companies", fetch(contact))
    assert {t.type_id for t in to_company.results[0].to[0].association_types} == {1, 279}  # primary and unlabeled
    assert fake.objects["deals"][deal]["properties"]["hs_is_closed_won"] == "true"
    assert fake.associations[("contacts", "deals")] == {contact: {deal}}
    assert fake.problems == []


def test_properties_listed_and_created_with_409_on_duplicate(fake: FakeHubSpot) -> None:
    api = client(fake).crm.properties.core_api
    names = {definition.name for definition in api.get_all("contacts").results}
    assert {"email", "hs_lead_status", "hs_lifecyclestage_customer_date", "lastmodifieddate"} <= names
    create = properties.PropertyCreate(
        name="qualify_score", label="Qualify score", type="number", field_type="number", group_name="contactinformation"
    )
    assert api.create("contacts", create).name == "qualify_score"
    with pytest.raises(properties.ApiException) as refused:
        api.create("contacts", create)
    assert refused.value.status == 409 and "OBJECT_ALREADY_EXISTS" in refused.value.body
    fake.add("contacts", {"email": "ann@example.com", "qualify_score": 87})
    assert fake.problems == []  # a 409 is HubSpot's answer to a well-formed request


def test_wrong_token_gets_401(fake: FakeHubSpot) -> None:
    with pytest.raises(properties.ApiException) as refused:
        client(fake, token="pat-wrong").crm.properties.core_api.get_all("deals")
    assert refused.value.status == 401 and "INVALID_AUTHENTICATION" in refused.value.body
    assert fake.problems == []  # the test sent the wrong token on purpose


def test_429_then_success() -> None:
    with FakeHubSpot(rate_limit=1, rate_window=0.2) as fake:
        api = client(fake).crm.properties.core_api
        api.get_all("companies")
        with pytest.raises(properties.ApiException) as limited:
            api.get_all("companies")
        assert limited.value.status == 429 and '"policyName": "SECONDLY"' in limited.value.body
        assert limited.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        time.sleep(0.25)
        assert api.get_all("companies").results
        assert [status for _, _, status in fake.requests] == [200, 429, 200] and fake.problems == []


def test_malformed_requests_are_refused_and_recorded(fake: FakeHubSpot) -> None:
    api = client(fake).crm.objects
    with pytest.raises(objects.ApiException) as refused:
        api.search_api.do_search("contacts", objects.PublicObjectSearchRequest(limit=500))
    assert refused.value.status == 400
    bad = objects.SimplePublicObjectBatchInputUpsert(id_property="email", id="x@example.com", properties={"score": "9"})
    with pytest.raises(objects.ApiException) as refused:
        api.batch_api.upsert("contacts", objects.BatchInputSimplePublicObjectBatchInputUpsert(inputs=[bad]))
    assert "PROPERTY_DOESNT_EXIST" in refused.value.body
    assert len(fake.problems) == 2 and "limit" in fake.problems[0] and "score" in fake.problems[1]
    assert fake.objects["contacts"] == {}  # nothing of a refused batch was written
    with pytest.raises(ValueError, match="does not exist"):
        fake.add("contacts", {"score": "9"})
