"""The Salesforce fake (tests/fake_salesforce.py) driven by the real simple-salesforce client over HTTPS.

These pin the fake's answers to Salesforce's documented ones, so that the CRM sync's tests can trust it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from tests.fake_salesforce import FakeSalesforce

START = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeSalesforce]:
    with FakeSalesforce(page_size=2, clock=clock) as started:
        yield started


def client(fake: FakeSalesforce, token: str | None = None) -> Salesforce:
    return Salesforce(instance_url=fake.url, session_id=token or fake.token, session=fake.session())


def lead(fake: FakeSalesforce, n: int, **fields: Any) -> str:
    return fake.add("Lead", Email=f"p{n}@example.com", LastName=f"Person {n}", Company="Acme", **fields)


def save(sf: Salesforce, method: str, records: list[dict[str, Any]], all_or_none: bool = False) -> Any:
    return sf.restful("composite/sobjects", method=method, json={"allOrNone": all_or_none, "records": records})


def answer(refused: pytest.ExceptionInfo[SalesforceError]) -> Any:
    """The JSON list Salesforce answered with (simple-salesforce keeps it in the exception's content)."""
    return refused.value.content


def codes(fake: FakeSalesforce) -> list[str]:
    """The Salesforce error code of each problem the fake recorded."""
    return [m[1] for p in fake.problems if (m := re.search(r"(?:\d{3}|\)) ([A-Z][A-Z_]+): ", p))]


def test_a_query_pages_through_next_records_url(fake: FakeSalesforce) -> None:
    ids = [lead(fake, n) for n in range(5)]
    fake.update("Lead", ids[4], IsDeleted=True)  # in the recycle bin: only queryAll sees it
    sf = client(fake)

    first = sf.query("SELECT Id, Email FROM Lead ORDER BY Email DESC")
    assert (first["totalSize"], first["done"], len(first["records"])) == (4, False, 2)
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    assert first["records"][0] == {
        "attributes": {"type": "Lead", "url": f"/services/data/v59.0/sobjects/Lead/{ids[3]}"},
        "Id": ids[3],
        "Email": "p3@example.com",
    }
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert (second["done"], "nextRecordsUrl" in second) == (True, False)
    assert [r["Email"] for r in first["records"] + second["records"]] == [f"p{n}@example.com" for n in (3, 2, 1, 0)]

    everything = sf.query_all("SELECT Id, IsDeleted FROM Lead", include_deleted=True)  # queryAll/, then query/<next>
    assert everything["totalSize"] == 5 and sum(r["IsDeleted"] for r in everything["records"]) == 1
    assert all(len(r["Id"]) == 18 and r["Id"].startswith("00Q") for r in everything["records"])
    assert fake.count("GET", "query/") == 4 and fake.count("GET", "/services/data/v59.0/queryAll/") == 1
    assert sf.api_usage["api-usage"].used == fake.api_usage == 5  # Sforce-Limit-Info comes with every answer

    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.query_more(first["nextRecordsUrl"].replace("-2", "-9"), identifier_is_url=True)
    assert answer(refused)[0]["errorCode"] == "INVALID_QUERY_LOCATOR"
    assert codes(fake) == ["INVALID_QUERY_LOCATOR"]


def test_relationship_fields_come_back_nested_as_salesforce_nests_them(fake: FakeSalesforce) -> None:
    account = fake.add("Account", Name="Acme", Website="https://acme.example")
    contact = fake.add("Contact", LastName="Ng", Email="ng@acme.example", AccountId=account)
    won = fake.add("Opportunity", Name="Big", StageName="Closed Won", CloseDate="2026-12-01", ContactId=contact)
    fake.add("Opportunity", Name="Lone", StageName="Prospecting", CloseDate="2026-12-24")

    soql = "SELECT Id, IsWon, Contact.Email, Contact.Account.Website, Owner.Email FROM Opportunity ORDER BY CloseDate"
    rows = client(fake).query_all(soql)["records"]
    assert rows[0]["Id"] == won and rows[0]["IsWon"] is True  # IsWon follows the stage
    assert rows[0]["Contact"] == {
        "attributes": {"type": "Contact", "url": f"/services/data/v59.0/sobjects/Contact/{contact}"},
        "Email": "ng@acme.example",
        "Account": {
            "attributes": {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{account}"},
            "Website": "https://acme.example",
        },
    }
    assert rows[0]["Owner"]["Email"] == "integration@example.com"  # records belong to the API's user by default
    assert rows[1]["Contact"] is None and rows[1]["IsWon"] is False
    assert fake.problems == []


def test_where_system_modstamp_takes_an_unquoted_datetime_literal(fake: FakeSalesforce, clock: Clock) -> None:
    old, touched = lead(fake, 1), lead(fake, 2)
    clock.now += timedelta(hours=1)
    fake.update("Lead", touched, Status="Working - Contacted")
    lead(fake, 3, CreatedDate=START - timedelta(days=30))  # history: created long ago, stamped now
    sf = client(fake)

    rows = sf.query("SELECT Id, SystemModstamp FROM Lead WHERE SystemModstamp >= 2026-12-06T21:30:00Z")["records"]
    assert {r["Id"] for r in rows} == {touched, *fake.records["Lead"]} - {old}
    assert rows[0]["SystemModstamp"] == "2026-12-06T22:00:00.000+0000"
    soql = (
        "SELECT Id FROM Lead WHERE SystemModstamp > 2026-12-06T22:30:00.000+01:00 AND Status != 'open - not contacted'"
    )
    assert [r["Id"] for r in sf.query(soql)["records"]] == [touched]  # text compares case-insensitively
    assert fake.problems == []

    with pytest.raises(SalesforceMalformedRequest) as refused:  # quoted, the literal is a string: Salesforce refuses it
        sf.query("SELECT Id FROM Lead WHERE SystemModstamp >= '2026-12-06T21:30:00Z'")
    assert answer(refused)[0]["errorCode"] == "INVALID_FIELD"
    assert "must be of type dateTime and should not be enclosed in quotes" in answer(refused)[0]["message"]
    assert codes(fake) == ["INVALID_FIELD"]


def test_a_collection_update_fails_the_bad_record_alone_unless_all_or_none(fake: FakeSalesforce, clock: Clock) -> None:
    good, bad, gone = lead(fake, 1), lead(fake, 2), lead(fake, 3)
    fake.update("Lead", gone, IsDeleted=True)  # a salesperson deleted it meanwhile: not the client's fault
    clock.now += timedelta(minutes=5)
    sf = client(fake)
    batch: list[dict[str, Any]] = [
        {"attributes": {"type": "Lead"}, "Id": good, "Status": "Working - Contacted", "Title": "CTO"},
        {"attributes": {"type": "Lead"}, "Id": bad, "IsConverted": True},  # not updateable
        {"attributes": {"type": "Lead"}, "id": gone, "Title": "CEO"},  # field names are case-insensitive
    ]

    results = save(sf, "PATCH", batch)
    assert results[0] == {"id": good, "success": True, "errors": []}
    assert results[1]["success"] is False and results[1]["errors"][0]["fields"] == ["IsConverted"]
    assert [r["errors"][0]["statusCode"] for r in results[1:]] == [
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "ENTITY_IS_DELETED",
    ]
    assert fake.records["Lead"][good]["Status"] == "Working - Contacted"
    assert fake.records["Lead"][good]["SystemModstamp"] == "2026-12-06T21:05:00.000+0000"
    assert codes(fake) == ["INVALID_FIELD_FOR_INSERT_UPDATE"]  # the client's fault, unlike the deleted record

    batch[0]["Status"] = "Closed - Converted"
    results = save(sf, "PATCH", batch, all_or_none=True)
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK" and not results[0]["success"]
    assert fake.records["Lead"][good]["Status"] == "Working - Contacted"

    created = save(sf, "POST", [
        {"attributes": {"type": "Contact"}, "LastName": "Ng", "Email": "ng@acme.example"},
        {"attributes": {"type": "Contact"}, "Email": "nobody@acme.example"},  # LastName is required
    ])  # fmt: skip
    assert created[0]["success"] is True and created[0]["id"] in fake.records["Contact"]
    assert created[1]["errors"] == [
        {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [LastName]", "fields": ["LastName"]}
    ]  # fmt: skip

    with pytest.raises(SalesforceMalformedRequest) as refused:
        save(sf, "PATCH", [{"attributes": {"type": "Lead"}, "Id": good, "Title": "x"}] * 201)
    assert answer(refused)[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    with pytest.raises(
        SalesforceMalformedRequest
    ) as refused:  # Salesforce can't deserialize it: the whole request fails
        save(sf, "PATCH", [{"attributes": {"type": "Lead"}, "Id": good, "Score__c": 1}])
    assert answer(refused)[0]["message"] == "No such column 'Score__c' on sobject of type Lead"
    assert codes(fake) == [
        "INVALID_FIELD_FOR_INSERT_UPDATE", "INVALID_FIELD_FOR_INSERT_UPDATE", "REQUIRED_FIELD_MISSING", "EXCEEDED_ID_LIMIT",
        "INVALID_FIELD",
    ]  # fmt: skip


def test_describe_lists_fields_with_salesforce_types(fake: FakeSalesforce) -> None:
    fake.add_field("Lead", "Fit_Score__c", "double", "Fit Score")
    sf = client(fake)
    described: Any = sf.Lead.describe()  # type: ignore[operator]  # .../sobjects/Lead/describe, without the trailing slash
    fields = {f["name"]: f for f in described["fields"]}
    assert (described["name"], described["keyPrefix"]) == ("Lead", "00Q")
    assert [v["value"] for v in fields["Status"]["picklistValues"]][:2] == [
        "Open - Not Contacted",
        "Working - Contacted",
    ]
    assert [fields[f]["type"] for f in ("Id", "Email", "ConvertedDate", "SystemModstamp")] == [
        "id",
        "email",
        "date",
        "datetime",
    ]
    assert (fields["IsConverted"]["updateable"], fields["Title"]["updateable"]) == (False, True)
    assert fields["Fit_Score__c"] | {"custom": True, "type": "double", "label": "Fit Score"} == fields["Fit_Score__c"]
    assert sf.restful("sobjects/Opportunity/describe/")["keyPrefix"] == "006"  # type: ignore[index]
    assert sf.limits()["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - 3}
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful("sobjects/Prospect/describe/")
    assert fake.problems == [
        "GET /services/data/v59.0/sobjects/Prospect/describe/: 404 NOT_FOUND: The requested resource does not exist"
    ]


def test_a_wrong_token_is_refused_with_invalid_session_id(fake: FakeSalesforce) -> None:
    with pytest.raises(SalesforceExpiredSession) as refused:
        client(fake, token="00Dexpired!token").query("SELECT Id FROM Lead")
    assert answer(refused) == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert fake.problems == [] and fake.api_usage == 0
    unauthenticated = fake.session().get(f"{fake.url}/services/data/v59.0/limits/", timeout=5)
    assert unauthenticated.status_code == 401 and codes(fake) == ["INVALID_SESSION_ID"]  # no Authorization: a bug


def test_request_limit_exceeded_once_usage_passes_the_limit(fake: FakeSalesforce) -> None:
    fake.api_limit = 2
    sf = client(fake)
    sf.query("SELECT Id FROM Lead")
    sf.query("SELECT Id FROM Lead")
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT Id FROM Lead")
    assert answer(refused) == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert fake.requests[-1] == ("GET", "/services/data/v59.0/query/", 403) and fake.problems == []


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id, Score FROM Lead", "INVALID_FIELD"),
        ("SELECT Id FROM Lead WHERE Email = 'a@x.io' OR Email = 'b@x.io' AND Country = 'NL'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Lead WHERE NumberOfEmployees > '50'", "INVALID_FIELD"),
        ("SELECT Id FROM Lead WHERE Id = 'not-an-id'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Prospect", "INVALID_TYPE"),
        ("SELECT Id FROM Lead LIMIT", "MALFORMED_QUERY"),
    ],
)
def test_malformed_requests_are_refused_and_recorded(fake: FakeSalesforce, soql: str, code: str) -> None:
    sf = client(fake)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.query(soql)
    assert answer(refused)[0]["errorCode"] == code
    assert codes(fake) == [code] and soql in fake.problems[0]
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.restful("composite/sobjects", method="PATCH", data="{not json")
    assert codes(fake) == [code, "JSON_PARSER_ERROR"]
    assert sf.query("SELECT Id FROM Lead WHERE (Email = 'a@x.io' OR Email = 'b@x.io') AND Country = 'NL'")["done"]
