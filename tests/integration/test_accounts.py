"""An account's scores from its people in the store, on each engine: what `qualify account`, the
dashboard's account page and `GET /v1/accounts/{key}` show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from tests.conftest import key_for

from qualify.domain.errors import NotFound
from qualify.domain.model_loader import default_model_text
from qualify.domain.records import Account, Lead, make_event
from qualify.entrypoints.api import create_app
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_accounts, upsert_leads
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.reading.accounts import account_id_of, account_scores, account_view, scores_of
from qualify.service.unit_of_work import Workspace

# Now, not a fixed date: the API scores accounts as of the moment it answers.
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(days=10)
PEOPLE = [
    Lead(email="vp@acme.com", seniority="vp", department="finance", title="VP Finance"),
    Lead(email="ana@acme.com", seniority="manager", department="marketing", title="Marketing Manager"),
    Lead(email="dev@acme.com", seniority="individual", department="engineering", title="Engineer"),
    Lead(email="fan@acme.com", seniority="individual", department="marketing", title="Marketing Specialist"),
]


@pytest.fixture
def acme(workspace: Workspace) -> Workspace:
    """Acme (software, 800 people, US) and four people: the VP and the marketing manager engaged
    lately, the engineer once and long ago, the specialist over and over (past the cap)."""
    with workspace.unit_of_work() as uow:
        upsert_accounts(
            uow, [Account(domain="acme.com", name="Acme", industry="software", employees=800, country="US")]
        )
        upsert_leads(uow, PEOPLE, now=T0)
    events = [make_event("vp-1", "webinar_attended", NOW - timedelta(days=2), email="vp@acme.com")]
    events += [
        make_event(f"ana-{n}", "content_download", NOW - timedelta(days=3, hours=n), email="ana@acme.com")
        for n in range(2)
    ]
    events += [make_event("dev-1", "email_open", T0 - timedelta(days=200), email="dev@acme.com")]
    events += [
        make_event(f"fan-{n}", "content_download", NOW - timedelta(days=1, hours=n), email="fan@acme.com")
        for n in range(12)
    ]
    with workspace.unit_of_work() as uow:
        ingest_events(uow, sorted(events, key=lambda e: e.occurred_at), now=NOW)
    return workspace


def test_an_account_is_scored_from_its_people_in_the_store(acme: Workspace) -> None:
    with acme.unit_of_work(read_only=True) as uow:
        view = account_view(uow, account_id_of(uow, "ACME.com "), now=NOW)
    scores = view.scores
    assert scores is not None and view.as_of == NOW
    # The default model: target industry 35 + served market 20 + 200 to 10,000 people 45.
    assert scores.fit == 100 and scores.grade == "A"
    assert [c.rule for c in scores.fit_contributions] == [
        "target industry",
        "served market",
        "company of 200 to 10,000",
    ]
    shares = {c.rule: c.points for c in scores.engagement_contributions}
    assert (
        set(shares) == {"fan@acme.com", "ana@acme.com", "vp@acme.com", "dev@acme.com"} or "dev@acme.com" not in shares
    )
    # Held by the cap: 60 right after the latest download, decayed since (a day and a bit).
    assert 55 < shares["fan@acme.com"] < 60
    assert "held by the cap of 60" in next(c.text for c in scores.engagement_contributions if c.rule == "fan@acme.com")
    assert scores.engagement == pytest.approx(sum(shares.values()))
    people = {p["email"]: p for p in view.leads}
    assert people["fan@acme.com"]["engagement_score"] > 60  # the lead's own score is not held
    assert scores.covered == ("economic buyer", "champion", "practitioner")
    assert scores.coverage == "3 of 4 roles: economic buyer, champion, practitioner"
    evaluator = next(r for r in scores.roles if r.role == "technical evaluator")
    assert evaluator.people == () and evaluator.candidates == ("dev@acme.com",)  # active 210 days ago


def test_accounts_scored_together_score_as_each_alone(acme: Workspace) -> None:
    """The accounts list scores its page of accounts with their people read at once."""
    with acme.unit_of_work() as uow:
        upsert_accounts(uow, [Account(domain="tiny.example", industry="mining", employees=12, country="FR")])
        upsert_leads(uow, [Lead(email="solo@tiny.example", seniority="c_level", department="executive")], now=T0)
        ids = [account_id_of(uow, "acme.com"), account_id_of(uow, "tiny.example")]
        together = scores_of(uow, ids, now=NOW)
        assert together == {i: account_scores(uow, i, now=NOW) for i in ids}
        tiny = together[ids[1]]
        assert tiny.fit == 20 and tiny.grade == "D" and tiny.engagement == 0  # served market only; nobody engaged
        assert tiny.coverage == "0 of 4 roles" and tiny.roles[0].candidates == ("solo@tiny.example",)


def test_a_model_without_an_accounts_section_scores_no_account(acme: Workspace) -> None:
    without = default_model_text().split("\naccounts:")[0] + "\n"
    with acme.unit_of_work() as uow:
        activate_model(uow, without)
    with acme.unit_of_work(read_only=True) as uow:
        view = account_view(uow, account_id_of(uow, "acme.com"), now=NOW)
        assert view.scores is None and len(view.leads) == 4
        with pytest.raises(NotFound, match=r"no account 'nope\.example'"):
            account_id_of(uow, "nope.example")


def test_the_api_answers_an_account_with_its_scores(acme: Workspace) -> None:
    with acme.unit_of_work() as uow:
        reader = {"Authorization": f"Bearer {key_for(uow, 'sales')}"}
        ingest = {"Authorization": f"Bearer {key_for(uow, 'ingest')}"}
        account_id = account_id_of(uow, "acme.com")
    with TestClient(create_app(workspace=acme)) as client:
        answer = client.get("/v1/accounts/acme.com", headers=reader)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["account"]["domain"] == "acme.com" and body["stages"]["lead"] + body["stages"]["mql"] >= 1
        scores = body["scores"]
        assert scores["fit"] == 100 and scores["grade"] == "A" and scores["coverage"].startswith("3 of 4 roles")
        assert {r["role"]: r["covered"] for r in scores["roles"]}["technical evaluator"] is False
        assert sum(c["points"] for c in scores["engagement_explanation"]) == pytest.approx(
            scores["engagement"], abs=0.01
        )
        assert client.get(f"/v1/accounts/%23{account_id}", headers=reader).json()["account"]["id"] == account_id
        missing = client.get("/v1/accounts/nope.example", headers=reader)
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        # An id past the largest the store holds is simply not there (PostgreSQL would refuse to compare it).
        for path in ("/v1/accounts/%2399999999999999999999", "/v1/leads/%2399999999999999999999"):
            assert client.get(path, headers=reader).status_code == 404, path
        assert client.get("/v1/accounts/acme.com", headers=ingest).status_code == 403  # an ingest key writes blind
        assert {"/v1/accounts", "/v1/accounts/{key}"} <= set(client.get("/openapi.json").json()["paths"])
        listed = client.get("/v1/accounts", params={"q": "acme", "sort": "leads"}, headers=reader).json()
        assert listed["total"] == 1 and [a["domain"] for a in listed["items"]] == ["acme.com"]
        [item] = listed["items"]
        assert item["leads"] == 4 and item["scores"]["fit"] == 100 and item["scores"]["coverage"].startswith("3 of 4")
        assert client.get("/v1/accounts", params={"sort": "size"}, headers=reader).status_code == 422
        assert client.get("/v1/accounts", params={"q": "nothing-like-it"}, headers=reader).json() == {
            "items": [], "total": 0,
        }  # fmt: skip
