"""SQL and template injection attempts in every user-controlled string: the scoring model (run by the
Python scorer and compiled to SQL for the batch engines), lead filters, segments, templates and the
dashboard. Each string must be stored and compared literally, never executed or evaluated."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput, ModelError
from qualify.domain.model_loader import default_model_text, load_model
from qualify.domain.records import Lead, make_event
from qualify.entrypoints.api import create_app
from qualify.service.admin.api_keys import create_key
from qualify.service.admin.users import add_user
from qualify.service.analytics.batch_scores import batch_scores
from qualify.service.email.outbox import enqueue
from qualify.service.email.templates import EmailTemplate, save_templates
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.reading.funnel import funnel
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 1, 5, tzinfo=UTC)
SQL = [
    "'; DROP TABLE leads; --",
    '" OR 1=1 --',
    "\\'; DROP TABLE events; --",
    "1' OR '1'='1",
    "‘ OR ’1’=’1",  # unicode quotes
    "x'); DELETE FROM scoring_models; SELECT ('",
]
TEMPLATE = [
    "{{ 7*7 }}",
    "{% for x in range(3) %}x{% endfor %}",
    "{{ ''.__class__.__mro__ }}",
    "${7*7}",
    "<script>alert(1)</script>",
]
NASTY = SQL + TEMPLATE
PASSWORD = "correct horse battery"


def _regex(text: str) -> str:
    """The text as a regular expression that matches it literally on every engine."""
    return re.sub(r"([\\{}$*().\[\]+?^|])", r"\\\1", text)


def injected_model() -> str:
    """The default model with rules, a persona, conditions, property names and labels made of NASTY."""
    doc = yaml.safe_load(default_model_text())
    for i, s in enumerate(NASTY):
        doc["fit"]["rules"] += [
            {"name": f"title {i} {s}", "when": {"field": "title", "equals": s}, "points": 1},
            {"name": f"note {i} {s}", "when": {"field": "attributes.note", "in": [s, "other"]}, "points": 2},
            {"name": f"dept {i} {s}", "when": {"field": "department", "regex": f"^{_regex(s)}$"}, "points": 3},
        ]
        doc["engagement"]["rules"].append(
            {
                "name": f"prop {i} {s}",
                "event": "content_download",
                "where": {s: s},
                "points": 1,
                "label": "read {title}",
            }
        )
    doc["fit"]["personas"][0]["name"] = NASTY[0]
    doc["disqualify"].append({"name": NASTY[1], "when": {"field": "country", "equals": NASTY[2]}, "reason": NASTY[6]})
    return yaml.safe_dump(doc, allow_unicode=True)


def _counts(workspace: Workspace) -> dict[str, int]:
    with workspace.unit_of_work(read_only=True) as uow:
        return {
            t.name: uow.connection.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (schema.leads, schema.events, schema.scoring_models, schema.api_keys, schema.users)
        }


@pytest.fixture
def injected(workspace: Workspace) -> Workspace:
    """One lead per NASTY string holding it in its title, department, attribute and one event's
    property (name and value), and one plain lead; the injected model active."""
    with workspace.unit_of_work() as uow:
        activate_model(uow, injected_model(), "injected.yaml")
        leads = [
            Lead(email=f"p{i}@acme.com", first_name=s, title=s, department=s, attributes={"note": s}, country=s)
            for i, s in enumerate(NASTY)
        ]
        upsert_leads(uow, [*leads, Lead(email="plain@acme.com", title="CTO", attributes={"note": "x"})], now=T0)
        events = [
            make_event(f"ev{i}", "content_download", T0, email=f"p{i}@acme.com", properties={s: s, "title": s})
            for i, s in enumerate(NASTY)
        ]
        assert all(o.status == "accepted" for o in ingest_events(uow, events, now=T0))
    return workspace


@pytest.mark.slow
def test_the_model_s_strings_are_compared_literally_online_and_in_batch(injected: Workspace) -> None:
    before = _counts(injected)
    engine = "postgres" if injected.settings.database_url.startswith("postgresql") else "duckdb"
    result = batch_scores(injected, engine=engine, as_of=T0 + timedelta(days=1), explain=True)
    assert result.explanations is not None
    by_lead: dict[int, set[str]] = {}
    for row in result.explanations.to_pylist():
        by_lead.setdefault(row["lead_id"], set()).add(row["rule"])
    with injected.unit_of_work(read_only=True) as uow:
        rows = {r.email: r for r in uow.connection.execute(select(schema.leads))}
    for i, s in enumerate(NASTY):
        lead = rows[f"p{i}@acme.com"]
        assert (lead.title, lead.first_name, lead.attributes["note"]) == (s, s, s)  # stored as sent
        mine = {f"title {i} {s}", f"note {i} {s}", f"dept {i} {s}", f"prop {i} {s}"}
        # Each lead earns the rules on its own string and nobody else's, in batch...
        assert mine <= by_lead[lead.id] and not any(
            r.startswith(("title ", "note ", "dept ", "prop ")) for r in by_lead[lead.id] - mine
        ), (s, by_lead[lead.id])
        # ...and online, with the same fit; the rule names and label are shown as written.
        assert lead.fit_score == 6.0, (s, lead.fit_score)
    plain = rows["plain@acme.com"]
    assert plain.fit_score == 0 and not any(r.startswith(("title ", "note ")) for r in by_lead.get(plain.id, set()))
    scored = {row["lead_id"]: row for row in result.table.to_pylist()}
    for row in rows.values():
        assert scored[row.id]["fit"] == row.fit_score and scored[row.id]["persona"] == row.persona
    assert rows["p0@acme.com"].persona == NASTY[0]
    assert before == _counts(injected)  # every table still there, nothing added or removed


def test_labels_and_rule_names_are_shown_not_evaluated(injected: Workspace) -> None:
    from qualify.service.reading.queries import lead_profile

    with injected.unit_of_work(read_only=True) as uow:
        for i, s in enumerate(NASTY):
            profile = lead_profile(uow, f"p{i}@acme.com")
            fit = {c.rule for c in profile.fit_explanation}
            assert {f"title {i} {s}", f"note {i} {s}", f"dept {i} {s}"} <= fit
            [award] = [c for c in profile.engagement_explanation if c.rule == f"prop {i} {s}"]
            # The label names a property; its value is put in as it is, never evaluated.
            assert award.text.startswith(f"read {s} "), award.text


def test_a_label_fills_in_property_names_only() -> None:
    from qualify.domain.engagement import AwardedEvent, render_label
    from qualify.domain.scoring_model import EngagementRule

    label = "{{ 7*7 }} ${7*7} {__class__} {url.__class__.__mro__} {url}"
    rule = EngagementRule("r", ("page_view",), (), 1.0, None, None, None, label)
    shown = render_label(rule, AwardedEvent(0.0, "page_view", {"url": "{{ 7*7 }}"}, ()))
    assert shown.endswith(" {{ 7*7 }}") and "49" not in shown and "class" not in shown, shown


def test_a_nul_character_in_the_model_is_refused_with_its_line() -> None:
    text = default_model_text().replace("name: email open", 'name: "email\\0open"')
    with pytest.raises(ModelError) as raised:
        load_model(text)
    [problem] = raised.value.problems
    assert problem.path == "engagement.rules[0].name" and "NUL" in problem.message and problem.line


# --- filters, segments, templates and the dashboard --------------------------------------------------


@pytest.fixture
def client(injected: Workspace) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with injected.unit_of_work() as uow:
        token, _ = create_key(uow, "admin", "admin")
        add_user(uow, "ana", "admin", PASSWORD)
        for i, s in enumerate(NASTY):  # owners and personas are filters: a lead owned by each string
            uow.connection.execute(
                schema.leads.update().where(schema.leads.c.email == f"p{i}@acme.com").values(owner=s)
            )
    with TestClient(create_app(workspace=injected)) as test_client:
        yield test_client, {"Authorization": f"Bearer {token}"}


def test_lead_list_filters_take_injection_strings_as_values(client: Any, injected: Workspace) -> None:
    test_client, headers = client
    before = _counts(injected)
    for i, s in enumerate(NASTY):
        owned = test_client.get("/v1/leads", params={"owner": s}, headers=headers)
        assert owned.status_code == 200, owned.text
        assert [item["email"] for item in owned.json()["items"]] == [f"p{i}@acme.com"]
        for name in ("persona", "stage", "grade", "sort", "cursor", "min_score", "created_from"):
            answer = test_client.get("/v1/leads", params={name: s}, headers=headers)
            assert answer.status_code in (200, 422), (name, s, answer.status_code)
            if answer.status_code == 200:
                assert answer.json()["items"] == [] or name == "persona"
    everyone = test_client.get("/v1/leads", params={"limit": 100}, headers=headers).json()["items"]
    assert len(everyone) == len(NASTY) + 1
    assert before == _counts(injected)


def test_segments_compare_injection_strings_literally(client: Any, injected: Workspace) -> None:
    test_client, headers = client
    for i, s in enumerate(NASTY):
        body = {"description": s, "when": [{"field": "title", "equals": s}, {"field": "attributes.note", "in": [s]}]}
        made = test_client.put(f"/v1/segments/s{i}", json=body, headers=headers)
        assert made.status_code == 200, made.text
        members = test_client.get(f"/v1/segments/s{i}/members", headers=headers).json()
        assert [m["lead"] for m in members] == [f"p{i}@acme.com"], (s, members)
        assert test_client.get(f"/v1/segments/s{i}", headers=headers).json()["description"] == s
    assert _counts(injected)["leads"] == len(NASTY) + 1


def test_lead_data_in_an_email_template_is_not_evaluated_and_is_escaped_in_html(injected: Workspace) -> None:
    template = EmailTemplate(
        "note", "Hi {{ first_name }}", "Hello {{ first_name }}, {{ title }}\n", "<p>Hello {{ first_name }}</p>"
    )
    with injected.unit_of_work() as uow:
        save_templates(uow.connection, [template], T0)
        ids = dict(uow.connection.execute(select(schema.leads.c.email, schema.leads.c.id)).all())
        for i, s in enumerate(NASTY):
            queued = enqueue(uow.connection, injected.settings, lead_id=ids[f"p{i}@acme.com"], template="note", now=T0)
            row = uow.connection.execute(select(schema.emails).where(schema.emails.c.id == queued.id)).one()
            assert row.subject == f"Hi {s}" and f"Hello {s}, {s}" in row.body_text, (s, row.subject)
            assert "<script>" not in (row.body_html or "")
        assert "49" not in "".join(r.subject + r.body_text for r in uow.connection.execute(select(schema.emails)))


def _sign_in(test_client: TestClient) -> None:
    form = test_client.get("/app/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf
    test_client.post("/app/login", data={"name": "ana", "password": PASSWORD, "csrf": csrf.group(1)})


def test_the_dashboard_escapes_injection_strings(client: Any, injected: Workspace) -> None:
    test_client, _ = client
    _sign_in(test_client)
    with injected.unit_of_work(read_only=True) as uow:
        script_lead = uow.connection.execute(
            select(schema.leads.c.id).where(schema.leads.c.title == "<script>alert(1)</script>")
        ).scalar_one()
    page = test_client.get(f"/app/leads/{script_lead}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    for s in NASTY:
        funnel = test_client.get("/app/funnel", params={"owner": s, "persona": s, "source": s, "campaign": s})
        assert funnel.status_code == 200, (s, funnel.status_code)
        assert "<script>alert(1)</script>" not in funnel.text
    model = test_client.get("/app/model")
    assert model.status_code == 200 and "<script>alert(1)</script>" not in model.text
    assert _counts(injected)["leads"] == len(NASTY) + 1


def test_a_nul_character_in_a_filter_or_a_template_is_refused_not_a_server_error(client: Any) -> None:
    test_client, headers = client
    for name in ("owner", "persona", "stage", "grade"):
        answer = test_client.get("/v1/leads", params={name: "x\x00y"}, headers=headers)
        assert answer.status_code == 422 and answer.json()["field"] == name, answer.text
    template = test_client.put("/v1/templates/nul", json={"subject": "Hi\x00", "text": "Hello"}, headers=headers)
    assert template.status_code == 422 and "NUL" in template.json()["detail"], template.text
    segment = test_client.put(
        "/v1/segments/nul", json={"when": [{"field": "title", "equals": "x\x00y"}]}, headers=headers
    )
    assert segment.status_code == 422 and "NUL" in segment.text, segment.text


def test_a_nul_character_in_a_report_filter_or_a_sign_in_is_refused_and_the_dashboard_goes_on(
    client: Any, injected: Workspace
) -> None:
    with injected.unit_of_work(read_only=True) as uow, pytest.raises(InvalidInput, match="NUL"):
        funnel(uow, where={"owner": "x\x00y"})
    test_client, _ = client
    form = test_client.get("/app/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf
    refused = test_client.post("/app/login", data={"name": "ana\x00", "password": PASSWORD, "csrf": csrf.group(1)})
    assert refused.status_code == 401 and "Wrong name or password" in refused.text
    _sign_in(test_client)
    page = test_client.get("/app/funnel", params={"owner": "x\x00y", "campaign": "\x00"})
    assert page.status_code == 200
