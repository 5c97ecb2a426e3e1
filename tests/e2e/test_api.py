"""The HTTP API as another system sees it: keys, roles, per-event answers, problem details."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qualify.domain.access import Permission, Role, allows
from qualify.entrypoints.api import create_app
from qualify.service.unit_of_work import Workspace
from tests.conftest import key_for

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def api(workspace: Workspace) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    """A client and one key per role, as request headers."""
    headers = {}
    with workspace.unit_of_work() as uow:
        for role in Role:
            headers[role.value] = {"Authorization": f"Bearer {key_for(uow, role.value)}"}
    with TestClient(create_app(workspace=workspace)) as client:
        yield client, headers


def event(
    n: int, kind: str = "content_download", email: str = "jane@acme.com", days: float = 0, **props: Any
) -> dict[str, Any]:
    return {
        "event_id": f"e{n}",
        "type": kind,
        "occurred_at": (T0 + timedelta(days=days)).isoformat(),
        "email": email,
        "properties": props,
    }


def test_a_batch_is_answered_event_by_event_and_a_replay_changes_nothing(api: Any) -> None:
    client, keys = api
    batch = [
        event(1, title="Pricing guide"),
        event(2, "page_view", url="/pricing"),
        {"event_id": "bad", "type": "Page View", "occurred_at": T0.isoformat(), "email": "jane@acme.com"},
        {"event_id": "typo", "type": "page_view", "occurred_at": "2026-02-30T09:00:00Z", "email": "jane@acme.com"},
        "not an object",
    ]
    answer = client.post("/v1/events", json=batch, headers=keys["ingest"])
    assert answer.status_code == 200
    body = answer.json()
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 0, 3)
    statuses = [(r["index"], r["status"], r["field"]) for r in body["results"]]
    assert statuses == [
        (0, "accepted", None),
        (1, "accepted", None),
        (2, "rejected", "type"),
        (3, "rejected", "occurred_at"),
        (4, "rejected", ""),
    ]
    again = client.post("/v1/events", json={"events": batch[:2]}, headers=keys["ingest"]).json()
    assert (again["accepted"], again["duplicate"]) == (0, 2)
    lead = client.get("/v1/leads/jane@acme.com", headers=keys["sales"]).json()
    assert lead["events_total"] == 2


def test_one_event_alone_is_a_batch_of_one(api: Any) -> None:
    client, keys = api
    body = client.post("/v1/events", json=event(1), headers=keys["marketing"]).json()
    assert body["accepted"] == 1 and body["results"][0]["lead"] == "jane@acme.com"


def test_oversized_batches_and_non_json_are_refused_with_problem_details(api: Any) -> None:
    client, keys = api
    too_many = client.post("/v1/events", json=[event(i) for i in range(10_001)], headers=keys["ingest"])
    assert too_many.status_code == 413
    assert too_many.headers["content-type"] == "application/problem+json"
    assert "10,000" in too_many.json()["detail"]
    broken = client.post(
        "/v1/events", content=b"{not json", headers={**keys["ingest"], "Content-Type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["field"] == "body"


def test_keys_are_required_checked_and_revocable(api: Any, workspace: Workspace) -> None:
    client, keys = api
    missing = client.get("/v1/leads")
    assert missing.status_code == 401 and missing.json()["type"].endswith("/unauthenticated")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = keys["admin"]["Authorization"][:-2] + "xx"
    assert client.get("/v1/leads", headers={"Authorization": wrong}).status_code == 401
    assert client.get("/v1/leads", headers={"X-API-Key": keys["sales"]["Authorization"][7:]}).status_code == 200
    key_id = keys["sales"]["Authorization"].split("_")[1]
    assert client.delete(f"/v1/keys/{key_id}", headers=keys["admin"]).status_code == 204
    assert client.get("/v1/leads", headers=keys["sales"]).status_code == 401


def _operations(client: TestClient) -> list[tuple[str, str, str]]:
    spec = client.get("/openapi.json").json()
    return [
        (method.upper(), path, operation["x-permission"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if "x-permission" in operation
    ]


def test_every_route_but_health_declares_its_permission(api: Any) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            public = path == "/healthz" or operation.get("x-public") is True
            assert "x-permission" in operation or public, f"{method.upper()} {path} declares no permission"


def test_every_route_with_every_role(api: Any) -> None:
    """A role without the permission gets 403 before anything happens; a role with it gets past the check."""
    client, keys = api
    operations = _operations(client)
    assert len(operations) >= 10
    for method, path, permission in operations:
        concrete = path.replace("{key}", "nobody@acme.com").replace("{action}", "accept").replace("{key_id}", "0000")
        for role in Role:
            answer = client.request(method, concrete, headers=keys[role.value], json={})
            if allows(role, Permission(permission)):
                assert answer.status_code not in (401, 403), f"{role} refused on {method} {path}: {answer.text}"
            else:
                assert answer.status_code == 403, f"{role} got {answer.status_code} on {method} {path}"
                assert role.value in answer.json()["detail"]


def test_stage_actions_answer_with_the_right_problem(api: Any, workspace: Workspace) -> None:
    client, keys = api
    client.post("/v1/events", json=event(1, "demo_request", days=0), headers=keys["ingest"])
    owner = client.get("/v1/leads/jane@acme.com", headers=keys["sales"]).json()["owner"]
    with workspace.unit_of_work() as uow:
        rep = {"Authorization": f"Bearer {key_for(uow, 'sales', 'rep-key', user=owner)}"}
    url = "/v1/leads/jane@acme.com/actions"
    at = (T0 + timedelta(hours=2)).isoformat()
    assert client.post(f"{url}/win", json={"at": at}, headers=rep).status_code == 409
    missing_reason = client.post(f"{url}/reject", json={"at": at}, headers=rep)
    assert missing_reason.status_code == 422 and missing_reason.json()["field"] == "reason"
    assert client.post("/v1/leads/ghost@acme.com/actions/accept", json={}, headers=rep).status_code == 404
    assert client.post(f"{url}/promote", json={}, headers=rep).status_code == 422
    done = client.post(f"{url}/accept", json={"at": at, "note": "keen"}, headers=rep)
    assert done.status_code == 200, done.text
    assert (done.json()["from"], done.json()["to"]) == ("mql", "sql")
    history = client.get("/v1/leads/jane@acme.com", headers=rep).json()["history"]
    assert history[-1]["by"] == owner and history[-1]["note"] == "keen"
    audit = client.get("/v1/audit", headers=keys["admin"]).json()
    assert audit[0]["action"] == "stage.accept" and audit[0]["actor"] == owner
    assert audit[0]["key_id"] == rep["Authorization"].split("_")[1]


def test_leads_are_upserted_listed_with_filters_and_paged_by_cursor(api: Any) -> None:
    client, keys = api
    leads = [
        {
            "email": f"p{i}@acme.com",
            "seniority": "vp" if i % 2 else "individual",
            "account": {"domain": "acme.com", "industry": "software", "employees": 500},
        }
        for i in range(7)
    ] + [{"email": "not-an-email"}]
    answer = client.put("/v1/leads", json=leads, headers=keys["marketing"]).json()
    assert (answer["created"], answer["rejected"]) == (7, 1) and answer["results"][7]["field"] == "email"
    seen, cursor = [], None
    while True:
        params = {"limit": 3, "sort": "fit", **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/leads", params=params, headers=keys["sales"]).json()
        seen += [item["email"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f"p{i}@acme.com" for i in range(7)) and len(seen) == 7
    grade_a = client.get("/v1/leads", params={"grade": "A"}, headers=keys["sales"]).json()["items"]
    assert {item["email"] for item in grade_a} == {"p1@acme.com", "p3@acme.com", "p5@acme.com"}
    bad = client.get("/v1/leads", params={"cursor": "garbage"}, headers=keys["sales"])
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"


def test_models_are_validated_with_lines_and_activated_with_an_audit_entry(api: Any) -> None:
    from qualify.domain.model_loader import default_model_text

    client, keys = api
    broken = client.post(
        "/v1/models/validate", json={"document": "name: x\nfit: {personas: []}\n"}, headers=keys["marketing"]
    )
    assert broken.status_code == 422 and all("line" in p for p in broken.json()["problems"])
    document = default_model_text().replace("requalify_margin: 10", "requalify_margin: 15")
    activated = client.post("/v1/models/active", json={"document": document}, headers=keys["admin"]).json()
    assert activated["changed"] is True
    assert client.get("/v1/models/active", headers=keys["marketing"]).json()["version"] == activated["version"]
    entry = client.get("/v1/audit", headers=keys["admin"]).json()[0]
    assert (entry["action"], entry["target"], entry["actor"]) == ("model.activate", activated["version"], "admin-key")


def test_the_openapi_document_describes_bodies_with_examples(api: Any) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["EventIn"]["examples"]
    assert spec["components"]["schemas"]["Problem"]
    assert client.get("/docs").status_code == 200


def test_merge_export_and_erase_over_http(api: Any) -> None:
    client, keys = api
    client.put(
        "/v1/leads",
        json=[{"email": "jane@acme.com"}, {"email": "j.doe@acme.com", "title": "CMO"}],
        headers=keys["marketing"],
    )
    client.post("/v1/events", json=[event(1), event(2, email="j.doe@acme.com")], headers=keys["ingest"])
    merged = client.post(
        "/v1/leads/jane@acme.com/merge", json={"duplicate": "j.doe@acme.com"}, headers=keys["marketing"]
    )
    assert merged.status_code == 200 and merged.json() == {
        "kept": "jane@acme.com",
        "merged": "j.doe@acme.com",
        "events_moved": 1,
    }
    exported = client.get("/v1/leads/j.doe@acme.com/export", headers=keys["sales"]).json()
    assert exported["lead"]["title"] == "CMO" and len(exported["events"]) == 2
    assert client.delete("/v1/leads/jane@acme.com", headers=keys["marketing"]).status_code == 403
    assert client.delete("/v1/leads/jane@acme.com", headers=keys["admin"]).status_code == 204
    assert client.get("/v1/leads/jane@acme.com", headers=keys["sales"]).status_code == 404


def test_every_request_body_in_the_openapi_document_has_an_example(api: Any) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody")
            if body is None:
                continue
            media = body["content"]["application/json"]
            ref = media["schema"].get("$ref") or next(
                (s.get("$ref") for s in media["schema"].get("anyOf", []) if "$ref" in s), None
            )
            has = "examples" in media or (ref is not None and "examples" in schemas[ref.rsplit("/", 1)[1]])
            assert has, f"{method.upper()} {path} has no request example"


def test_events_and_actions_dated_in_the_future_are_refused_and_times_need_a_zone(api: Any) -> None:
    from datetime import UTC, datetime

    client, keys = api
    future = {
        "event_id": "f1",
        "type": "content_download",
        "occurred_at": "2099-01-01T00:00:00Z",
        "email": "jane@acme.com",
    }
    answer = client.post("/v1/events", json=[future, event(2)], headers=keys["ingest"]).json()
    assert [r["status"] for r in answer["results"]] == ["rejected", "accepted"]
    assert "in the future" in answer["results"][0]["reason"]
    client.post("/v1/events", json=event(3, "demo_request", email="joe@acme.com", days=-1), headers=keys["ingest"])
    late = client.post(
        "/v1/leads/joe@acme.com/actions/accept", json={"at": "2099-01-01T00:00:00Z"}, headers=keys["admin"]
    )
    assert late.status_code == 422 and late.json()["field"] == "at"
    naive = client.get("/v1/leads", params={"created_from": "2026-01-01T00:00:00"}, headers=keys["sales"])
    assert naive.status_code == 422 and naive.headers["content-type"] == "application/problem+json"
    assert (
        client.get(
            "/v1/leads", params={"created_from": datetime(2026, 1, 1, tzinfo=UTC).isoformat()}, headers=keys["sales"]
        ).status_code
        == 200
    )


def test_a_batch_naming_one_new_lead_by_two_keys_creates_it_once(api: Any) -> None:
    client, keys = api
    batch = [
        {"event_id": "k1", "type": "email_open", "occurred_at": T0.isoformat(), "external_id": "crm-7"},
        {
            "event_id": "k2",
            "type": "email_open",
            "occurred_at": T0.isoformat(),
            "external_id": "crm-7",
            "email": "jane@acme.com",
        },
        {"event_id": "k3", "type": "email_open", "occurred_at": T0.isoformat(), "email": "ok@acme.com"},
    ]
    answer = client.post("/v1/events", json=batch, headers=keys["ingest"])
    assert answer.status_code == 200 and answer.json()["accepted"] == 3
    assert client.get("/v1/leads/crm-7", headers=keys["sales"]).json()["events_total"] == 2


def test_a_lead_whose_account_is_invalid_is_refused_whole_and_accounts_are_answered_one_by_one(api: Any) -> None:
    client, keys = api
    leads = client.put(
        "/v1/leads",
        json=[{"email": "jane@acme.com", "account": {"domain": "not a domain!"}}],
        headers=keys["marketing"],
    ).json()
    assert leads["results"][0]["status"] == "rejected" and leads["results"][0]["field"] == "account.domain"
    accounts = client.put(
        "/v1/accounts", json=[{"domain": "ok.com"}, {"domain": "bad domain"}], headers=keys["marketing"]
    ).json()
    assert (accounts["created"], accounts["rejected"]) == (1, 1) and accounts["results"][1]["field"] == "domain"


def test_a_crms_history_goes_in_over_http_in_batches(api: Any) -> None:
    client, keys = api
    client.post("/v1/events", json=[event(1, "demo_request", days=-300)], headers=keys["ingest"])
    stages = [
        {"email": "jane@acme.com", "action": "accept", "at": (T0 - timedelta(days=290)).isoformat(), "by": "sam"},
        {"email": "jane@acme.com", "stage": "sql", "action": "win", "at": T0.isoformat()},
        {"email": "jane@acme.com", "action": "accept"},
        "not an object",
    ]
    answer = client.put("/v1/history/stages", json=stages, headers=keys["marketing"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["created"], body["rejected"], body["leads_rebuilt"]) == (1, 3, 1)
    assert [r["field"] for r in body["results"][1:]] == ["stage", "at", ""]
    deals = [
        {"deal_id": "D-1", "email": "jane@acme.com", "opened_at": (T0 - timedelta(days=280)).isoformat(),
         "closed_at": (T0 - timedelta(days=250)).isoformat(), "outcome": "won", "amount": 9000},
        {"deal_id": "D-2", "email": "jane@acme.com", "opened_at": (T0 - timedelta(days=200)).isoformat(),
         "outcome": "won"},
    ]  # fmt: skip
    answer = client.put("/v1/history/deals", json=deals, headers=keys["marketing"]).json()
    assert (answer["created"], answer["rejected"]) == (1, 1) and answer["results"][1]["field"] == "closed_at"
    lead = client.get("/v1/leads/jane@acme.com", headers=keys["sales"]).json()
    assert [h["to"] for h in lead["history"]] == ["lead", "mql", "sql", "opportunity", "customer"]
    assert lead["stage"] == "customer"
    assert client.put("/v1/history/deals", json=deals[:1], headers=keys["sales"]).status_code == 403


def test_the_lead_export_streams_every_lead_as_csv_or_json_lines(api: Any) -> None:
    client, keys = api
    sent = client.post(
        "/v1/events",
        json=[event(1, "demo_request"), event(2, "page_view", email="bo@globex.com", url="/pricing")],
        headers=keys["admin"],
    )
    assert sent.status_code == 200
    answer = client.get("/v1/leads/export", headers=keys["marketing"])
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert 'filename="leads.csv"' in answer.headers["content-disposition"]
    lines = answer.text.splitlines()
    assert lines[0].startswith("id,email,external_id,") and "stage_reason" in lines[0] and len(lines) == 3
    jsonl = client.get("/v1/leads/export", params={"format": "jsonl", "stage": "lead"}, headers=keys["sales"])
    rows = [json.loads(line) for line in jsonl.text.splitlines()]
    assert all(row["stage"] == "lead" for row in rows) and {"probability", "owner", "score"} <= rows[0].keys()
    assert client.get("/v1/leads/export", params={"stage": "maybe"}, headers=keys["admin"]).status_code == 422
    assert client.get("/v1/leads/export", headers=keys["ingest"]).status_code == 403
