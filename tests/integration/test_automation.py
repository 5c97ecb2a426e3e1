"""Segments (online and in batch, with history and counts) and workflows (triggers, enrolment rules,
steps, waits, exits, the per-lead log) against a real store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.automation import (
    STATE_FIELDS,
    AutomationError,
    EventCount,
    FactNeeds,
    ValueCount,
    load_automation,
)
from qualify.domain.errors import InvalidInput
from qualify.domain.records import Account, Lead, make_event
from qualify.service.automation import runs as workflows
from qualify.service.automation.definitions import definitions, put_segments, put_workflows, set_workflow_active
from qualify.service.automation.facts import lead_facts
from qualify.service.automation.reading import lead_automation, segment_counts, segment_info
from qualify.service.automation.segments import refresh_segments
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_accounts, upsert_leads
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)

SEGMENTS = """
segments:
  - name: pricing-readers
    description: read the pricing guide lately, not yet a customer
    when:
      - {event: content_download, where: {title: {regex: pricing}}, within_days: 30}
      - {field: stage, not_in: [customer, evangelist]}
  - name: no-demo-yet
    when:
      - {field: account.domain, exists: true}
      - {no_event: demo_request}
  - name: busy-readers
    match: any
    when:
      - {event: page_view, min_count: 3}
      - {tag: vip}
"""

WORKFLOWS = """
templates:
  - name: comeback
    subject: "{{ first_name or 'Hello' }}, what changed since we spoke?"
    text: "Hi {{ first_name }}, here is what is new: https://example.com/new"
workflows:
  - name: recycle
    description: leads sales sent back get a bonus, a tag, a wait and a nudge
    trigger: {entered_stage: nurture}
    exit: [{field: stage, in: [sql, opportunity, customer]}]
    steps:
      - add_tag: recycled
      - bonus: {points: 15, reason: recycled}
      - notify_owner: "back in nurture"
      - wait: {days: 3}
      - send_email: comeback
      - wait_for: {event: email_click, timeout_days: 7}
      - set_owner: nurture.team
  - name: pricing-nudge
    trigger: {entered_segment: pricing-readers}
    when: [{field: fit_grade, in: [A, B, C, D]}]
    reenter_after_days: 10
    steps:
      - add_tag: pricing
"""


def apply(workspace: Workspace, text: str) -> None:
    document = load_automation(text, "test.yaml")
    with workspace.unit_of_work() as uow:
        put_segments(uow, document.segments, by="test", now=T0)
        if document.workflows:
            put_workflows(uow, document, by="test", now=T0)


def ingest(workspace: Workspace, *events: Any, now: datetime) -> None:
    with workspace.unit_of_work() as uow:
        ingest_events(uow, list(events), now=now)


def lead_id(workspace: Workspace, email: str) -> int:
    with workspace.unit_of_work() as uow:
        found = uow.connection.execute(select(schema.leads.c.id).where(schema.leads.c.email == email)).scalar_one()
        return int(found)


def members(workspace: Workspace, segment: str) -> set[str]:
    with workspace.unit_of_work() as uow:
        m, leads = schema.segment_members, schema.leads
        rows = uow.connection.execute(
            select(leads.c.email).join(m, m.c.lead_id == leads.c.id).where(m.c.segment == segment)
        )
        return set(rows.scalars())


def test_a_document_names_the_line_and_field_of_every_problem() -> None:
    text = """
segments:
  - name: Bad Name
    when:
      - {field: stage, in: [mql, prospect]}
      - {field: shoe_size, equals: 42}
      - {event: PageView}
workflows:
  - name: w
    trigger: {entered_stage: nowhere}
    steps:
      - wait: {weeks: 2}
      - bonus: {points: 500}
      - teleport: somewhere
"""
    with pytest.raises(AutomationError) as caught:
        load_automation(text, "bad.yaml")
    found = {(p.line, p.path) for p in caught.value.problems}
    assert (3, "segments[0].name") in found
    assert (5, "segments[0].when[0].in") in found  # prospect is no stage
    assert (6, "segments[0].when[1].field") in found
    assert (7, "segments[0].when[2].event") in found
    assert (10, "workflows[0].trigger.entered_stage") in found
    assert (12, "workflows[0].steps[0].wait.weeks") in found
    assert (13, "workflows[0].steps[1].bonus.points") in found
    assert (14, "workflows[0].steps[2].teleport") in found
    assert "bad.yaml" in str(caught.value)


def test_segments_follow_events_online_and_keep_their_history(workspace: Workspace) -> None:
    apply(workspace, SEGMENTS)
    ingest(
        workspace,
        make_event("d1", "content_download", T0, email="ann@acme.com", properties={"title": "Pricing guide"}),
        make_event("d2", "content_download", T0, email="bob@acme.com", properties={"title": "Culture book"}),
        now=T0,
    )
    assert members(workspace, "pricing-readers") == {"ann@acme.com"}
    assert members(workspace, "no-demo-yet") == {"ann@acme.com", "bob@acme.com"}
    ingest(workspace, make_event("d3", "demo_request", T0 + DAY, email="bob@acme.com"), now=T0 + DAY)
    assert members(workspace, "no-demo-yet") == {"ann@acme.com"}
    views = [
        make_event(f"v{i}", "page_view", T0 + DAY, email="cy@acme.com", properties={"url": "/x"}) for i in range(3)
    ]
    ingest(workspace, *views[:2], now=T0 + DAY)
    assert "cy@acme.com" not in members(workspace, "busy-readers")
    ingest(workspace, views[2], now=T0 + DAY)
    assert "cy@acme.com" in members(workspace, "busy-readers")
    bob_id = lead_id(workspace, "bob@acme.com")
    with workspace.unit_of_work() as uow:
        bob = lead_automation(uow, bob_id)
    assert [(h["segment"], h["change"], h["by"]) for h in bob["segment_history"]] == [
        ("no-demo-yet", "entered", "online"),
        ("no-demo-yet", "left", "online"),
    ]


def test_batch_refresh_agrees_with_online_and_lets_time_move_leads_out(workspace: Workspace) -> None:
    apply(workspace, SEGMENTS)
    events = []
    for i in range(12):
        kind = ("content_download", "page_view", "demo_request")[i % 3]
        props = {"title": "Pricing guide" if i % 2 else "Other"} if kind == "content_download" else {"url": "/p"}
        for j in range(i % 4 + 1):
            events.append(make_event(f"e{i}-{j}", kind, T0 + j * DAY, email=f"l{i}@firm{i % 5}.com", properties=props))
    ingest(workspace, *events, now=T0 + 4 * DAY)
    online = {s: members(workspace, s) for s in ("pricing-readers", "no-demo-yet", "busy-readers")}
    assert online["pricing-readers"]  # something to compare
    # The batch evaluation at the same instant finds the same members: nothing enters or leaves.
    assert refresh_segments(workspace, T0 + 4 * DAY) == {"leads": 12, "entered": 0, "left": 0}
    # Thirty days on, the pricing downloads fall out of the window.
    result = refresh_segments(workspace, T0 + 40 * DAY, names=["pricing-readers"])
    assert result["left"] == len(online["pricing-readers"]) and members(workspace, "pricing-readers") == set()
    with workspace.unit_of_work() as uow:
        counts = segment_counts(uow, "pricing-readers", days=42, every_days=7, now=T0 + 41 * DAY)
    assert counts[-1]["members"] == 0 and max(c["members"] for c in counts) == len(online["pricing-readers"])
    assert sum(c["left"] for c in counts) == len(online["pricing-readers"])


def run(workspace: Workspace, now: datetime) -> workflows.RunSummary:
    return workflows.run_due(workspace, now)


def log_of(workspace: Workspace, email: str) -> list[tuple[str, int, str, str]]:
    found_id = lead_id(workspace, email)
    with workspace.unit_of_work() as uow:
        found = lead_automation(uow, found_id)
    return [(line["workflow"], line["step"], line["action"], line["outcome"]) for line in found["log"]]


def test_a_workflow_runs_its_steps_waits_across_restarts_and_logs_each_once(workspace: Workspace) -> None:
    apply(workspace, SEGMENTS + WORKFLOWS.replace("templates:", "templates:", 1))
    ingest(workspace, make_event("m1", "demo_request", T0, email="ann@acme.com"), now=T0)
    with workspace.unit_of_work() as uow:
        apply_stage_action(uow, "ann@acme.com", "reject", by="rep", reason="no_budget", at=T0 + DAY, now=T0 + DAY)
    assert log_of(workspace, "ann@acme.com") == [("recycle", -1, "enrol", "enrolled")]
    summary = run(workspace, T0 + DAY)
    assert summary.steps == 4  # tag, bonus, notify, and the start of the wait
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        tags = list(conn.execute(select(schema.lead_tags.c.tag)).scalars())
        bonus = conn.execute(
            select(schema.events.c.properties).where(schema.events.c.type == "score_bonus")
        ).scalar_one()
    assert tags == ["recycled"] and bonus["points"] == 15 and bonus["workflow"] == "recycle"
    assert run(workspace, T0 + 2 * DAY).steps == 0  # still waiting
    # A fresh workspace object (a restarted worker) finds the wait where it was left.
    restarted = open_workspace(workspace.settings)
    try:
        assert run(restarted, T0 + 4 * DAY + timedelta(seconds=1)).steps == 3  # wait ends, email, wait_for starts
        ingest(
            restarted,
            make_event("c1", "email_click", T0 + 5 * DAY, email="ann@acme.com", properties={"url": "x"}),
            now=T0 + 5 * DAY,
        )
        summary = run(restarted, T0 + 5 * DAY)
        assert summary.woken == 1 and summary.completed == 1
    finally:
        restarted.close()
    assert log_of(workspace, "ann@acme.com") == [
        ("recycle", -1, "enrol", "enrolled"),
        ("recycle", 0, "add_tag", "done"),
        ("recycle", 1, "bonus", "done"),
        ("recycle", 2, "notify_owner", "done"),
        ("recycle", 3, "wait", "done"),
        ("recycle", 4, "send_email", "done"),
        ("recycle", 5, "wait_for", "done"),
        ("recycle", 6, "set_owner", "done"),
        ("recycle", 7, "complete", "completed"),
    ]
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        owner = conn.execute(select(schema.leads.c.owner).where(schema.leads.c.email == "ann@acme.com")).scalar()
        emails = conn.execute(select(func.count()).select_from(schema.emails)).scalar()
    assert owner == "nurture.team" and emails == 1


def test_reaching_the_goal_ends_the_run_and_enrolment_rules_hold(workspace: Workspace) -> None:
    apply(workspace, SEGMENTS + WORKFLOWS)
    ingest(workspace, make_event("m1", "demo_request", T0, email="ann@acme.com"), now=T0)
    with workspace.unit_of_work() as uow:
        apply_stage_action(uow, "ann@acme.com", "reject", by="rep", reason="no_budget", at=T0 + DAY, now=T0 + DAY)
    run(workspace, T0 + DAY)  # into the 3-day wait
    # Back to MQL and accepted by sales: the goal (SQL) is reached while it waits.
    ingest(workspace, make_event("m2", "quote_request", T0 + 2 * DAY, email="ann@acme.com"), now=T0 + 2 * DAY)
    with workspace.unit_of_work() as uow:
        stage = uow.connection.execute(select(schema.leads.c.stage)).scalar()
        if stage == "mql":
            apply_stage_action(uow, "ann@acme.com", "accept", by="rep", at=T0 + 2 * DAY, now=T0 + 2 * DAY)
    summary = run(workspace, T0 + 5 * DAY)
    assert summary.exited == 1
    assert log_of(workspace, "ann@acme.com")[-1][2:] == ("exit", "exited")
    # Entered the segment twice within 10 days: one run; after 10 days: a second.
    pricing = {"title": "Pricing"}
    ingest(workspace, make_event("p1", "content_download", T0, email="bo@acme.com", properties=pricing), now=T0)
    refresh_segments(workspace, T0 + 31 * DAY, names=["pricing-readers"])  # leaves: window passed
    ingest(
        workspace,
        make_event("p2", "content_download", T0 + 32 * DAY, email="bo@acme.com", properties=pricing),
        now=T0 + 32 * DAY,
    )
    runs = [line for line in log_of(workspace, "bo@acme.com") if line[2] == "enrol"]
    assert len(runs) == 1  # the first run is still active
    run(workspace, T0 + 32 * DAY)
    refresh_segments(workspace, T0 + 63 * DAY, names=["pricing-readers"])
    ingest(
        workspace,
        make_event("p3", "content_download", T0 + 64 * DAY, email="bo@acme.com", properties=pricing),
        now=T0 + 64 * DAY,
    )
    assert len([line for line in log_of(workspace, "bo@acme.com") if line[2] == "enrol"]) == 2


def test_pausing_stops_runs_and_a_workflow_needs_its_template_and_segment(workspace: Workspace) -> None:
    apply(workspace, SEGMENTS + WORKFLOWS)
    ingest(workspace, make_event("m1", "demo_request", T0, email="ann@acme.com"), now=T0)
    with workspace.unit_of_work() as uow:
        apply_stage_action(uow, "ann@acme.com", "reject", by="rep", reason="no_budget", at=T0 + DAY, now=T0 + DAY)
        assert set_workflow_active(uow, "recycle", False, by="test", now=T0 + DAY) == 1
    assert run(workspace, T0 + DAY).steps == 0
    assert log_of(workspace, "ann@acme.com")[-1][2:] == ("pause", "stopped")
    orphan = load_automation(
        "workflows:\n  - name: x\n    trigger: {entered_segment: ghosts}\n    steps: [{send_email: missing}]\n"
    )
    with workspace.unit_of_work() as uow, pytest.raises(InvalidInput) as caught:
        put_workflows(uow, orphan, by="test")
    assert "no email template 'missing'" in str(caught.value) and "no segment 'ghosts'" in str(caught.value)


def test_merges_and_erasure_carry_or_clear_what_automation_holds(workspace: Workspace) -> None:
    from qualify.service.lifecycle.lead_admin import erase_lead, merge_leads

    apply(workspace, SEGMENTS + WORKFLOWS)
    for email in ("ann@acme.com", "ann.b@acme.com"):
        ingest(workspace, make_event(f"m-{email}", "demo_request", T0, email=email), now=T0)
        with workspace.unit_of_work() as uow:
            apply_stage_action(uow, email, "reject", by="rep", reason="no_budget", at=T0 + DAY, now=T0 + DAY)
    run(workspace, T0 + DAY)
    run(workspace, T0 + 5 * DAY)  # both tagged, mailed, waiting for a click
    with workspace.unit_of_work() as uow:
        merge_leads(uow, "ann@acme.com", "ann.b@acme.com", by="test", now=T0 + 5 * DAY)
    kept = lead_id(workspace, "ann@acme.com")
    with workspace.unit_of_work() as uow:
        found = lead_automation(uow, kept)
        mails = uow.connection.execute(select(func.count()).select_from(schema.emails)).scalar()
    assert found["tags"] == ["recycled"]
    assert sorted(r["status"] for r in found["workflows"]) == ["active", "stopped"]  # one run, not two
    # The duplicate's memberships are recorded as left, so counts over time stay whole.
    with workspace.unit_of_work() as uow:
        counts = segment_counts(uow, "no-demo-yet", days=7, every_days=7, now=T0 + 6 * DAY)
    assert counts[-1]["members"] == len(members(workspace, "no-demo-yet"))
    assert mails == 2
    with workspace.unit_of_work() as uow:
        erase_lead(uow, "ann@acme.com", by="test", now=T0 + 6 * DAY)
    with workspace.unit_of_work() as uow:
        found = lead_automation(uow, kept)
        addresses = set(uow.connection.execute(select(schema.emails.c.to_address)).scalars())
    assert found["segments"] == [] and found["tags"] == [] and addresses == {""}
    assert {r["status"] for r in found["workflows"]} == {"stopped"}
    assert run(workspace, T0 + 30 * DAY).steps == 0


def test_score_crossings_and_segment_exits_trigger_workflows(workspace: Workspace) -> None:
    apply(
        workspace,
        SEGMENTS
        + """
workflows:
  - name: hot
    trigger: {score_crossed: 25}
    steps: [{add_tag: hot}]
  - name: lost-interest
    trigger: {left_segment: no-demo-yet}
    when: [{field: stage, in: [lead, mql]}]
    steps: [{add_tag: asked-for-demo}]
""",
    )
    ingest(workspace, make_event("o1", "email_open", T0, email="ann@acme.com", properties={"campaign": "x"}), now=T0)
    assert log_of(workspace, "ann@acme.com") == []  # 1 point: nothing crossed, still in no-demo-yet
    ingest(workspace, make_event("d1", "demo_request", T0 + DAY, email="ann@acme.com"), now=T0 + DAY)
    enrolled = {(w, step) for w, step, *_ in log_of(workspace, "ann@acme.com")}
    assert enrolled == {("hot", -1), ("lost-interest", -1)}
    run(workspace, T0 + DAY)
    ann = lead_id(workspace, "ann@acme.com")
    with workspace.unit_of_work() as uow:
        assert lead_automation(uow, ann)["tags"] == ["asked-for-demo", "hot"]
    # Crossing again later (after decaying below) does not enrol twice: `hot` runs once per lead.
    ingest(workspace, make_event("d2", "demo_request", T0 + 200 * DAY, email="ann@acme.com"), now=T0 + 200 * DAY)
    assert [line for line in log_of(workspace, "ann@acme.com") if line[2] == "enrol"].count(
        ("hot", -1, "enrol", "enrolled")
    ) == 1


def test_editing_a_workflow_stops_its_runs_instead_of_renumbering_their_steps(workspace: Workspace) -> None:
    apply(workspace, SEGMENTS + WORKFLOWS)
    ingest(workspace, make_event("m1", "demo_request", T0, email="ann@acme.com"), now=T0)
    with workspace.unit_of_work() as uow:
        apply_stage_action(uow, "ann@acme.com", "reject", by="rep", reason="no_budget", at=T0 + DAY, now=T0 + DAY)
    run(workspace, T0 + DAY)  # tag, bonus, notify done; waiting
    apply(
        workspace,
        SEGMENTS
        + WORKFLOWS.replace("      - add_tag: recycled\n", "      - add_tag: first\n      - add_tag: recycled\n"),
    )
    assert ("recycle", 3, "edit", "stopped") in log_of(workspace, "ann@acme.com")  # stopped at its wait
    assert run(workspace, T0 + 10 * DAY).steps == 0


def test_text_outside_the_basic_plane_survives_the_store(workspace: Workspace) -> None:
    apply(
        workspace,
        'segments:\n  - name: launch\n    description: "launch 🚀"\n    when: [{event: content_download, where: {title: "Launch 🚀"}}]\n',
    )
    ingest(
        workspace,
        make_event("d1", "content_download", T0, email="ann@acme.com", properties={"title": "launch 🚀"}),
        now=T0,
    )
    assert members(workspace, "launch") == {"ann@acme.com"}
    with workspace.unit_of_work() as uow:
        assert segment_info(uow, "launch").description == "launch 🚀"


NEEDS = """
segments:
  - name: recent-pricing
    when: [{event: page_view, where: {url: /pricing}, within_days: 30}]
  - name: two-downloads
    when: [{event: content_download, min_count: 2}]
  - name: clicked-lately
    when: [{event: email_click, within_days: 7}]
"""


def test_the_facts_read_each_kind_of_event_only_as_far_back_as_a_test_looks(workspace: Workspace) -> None:
    """A long history is not read whole: page views (which a `where` reads) only for the 30 days a
    test looks back, with their properties; downloads and clicks, which tests only count, are
    counted by the store, each over its test's window."""
    lead = "reader@acme.com"
    now = T0 + 60 * DAY
    ingest(
        workspace,
        make_event("old-view", "page_view", T0, email=lead, properties={"url": "/pricing"}),
        make_event("new-view", "page_view", T0 + 50 * DAY, email=lead, properties={"url": "/pricing"}),
        make_event("old-dl", "content_download", T0, email=lead, properties={"title": "Guide"}),
        make_event("new-dl", "content_download", T0 + 55 * DAY, email=lead, properties={"title": "Guide"}),
        make_event("old-click", "email_click", T0 + 40 * DAY, email=lead),
        make_event("form", "form_submit", T0 + 55 * DAY, email=lead),
        now=now,
    )
    apply(workspace, NEEDS)
    with workspace.unit_of_work() as uow:
        needs = definitions(uow).needs
        lead_id = uow.connection.execute(select(schema.leads.c.id)).scalar_one()
        facts = lead_facts(uow.connection, [lead_id], now, needs)[lead_id]
    refresh_segments(workspace, now)
    with workspace.unit_of_work() as uow:
        members = set(uow.connection.execute(select(schema.segment_members.c.segment)).scalars())
    downloads, clicks = EventCount(("content_download",), None), EventCount(("email_click",), 7)
    pricing = ValueCount(("page_view",), 30, ("url",))
    assert needs.grouped == {pricing} and not needs.events
    assert needs.counts == {downloads, clicks}
    assert facts.grouped == {pricing: [(("/pricing",), 1)]} and not facts.events  # the old view is 50 days old
    assert facts.counts == {downloads: 2, clicks: 0}  # the click was 20 days ago
    assert members == {"recent-pricing", "two-downloads"}


def test_counted_event_tests_agree_with_the_events_read_one_by_one(workspace: Workspace) -> None:
    """Where the store counts a test's events, the answer is the one the events themselves give,
    at the edges of windows and ranges too."""
    ann, bob = "ann@acme.com", "bob@acme.com"
    now = T0 + 30 * DAY
    # Values whose JSON text other JSON functions would change: a float rounded to 15 digits, an
    # integer beyond 64 bits, booleans (read as 1 and 0), a nested object, a null, a missing key.
    odd: list[dict[str, Any]] = [
        {"url": "/PRICING ", "seconds": 0.30000000000000004}, {"url": "/pricing", "seconds": 123456789012345678901234},
        {"url": True, "seconds": "0.3"}, {"url": {"path": "/pricing"}}, {"url": None, "seconds": 1e300}, {},
        {"url": "/pricing", "seconds": 3}, {"url": "/Pricing", "seconds": 3.0},
    ]  # fmt: skip
    ingest(
        workspace,
        *(make_event(f"a{i}", "page_view", T0 + i * DAY, email=ann, properties={"url": "/"}) for i in range(30)),
        *(make_event(f"o{i}", "page_view", T0 + (22 + i) * DAY, email=ann, properties=p) for i, p in enumerate(odd)),
        make_event("a-dl", "content_download", T0 + 29 * DAY, email=ann),
        make_event("b-view", "page_view", T0 + 23 * DAY, email=bob, properties={"url": "/"}),
        now=now,
    )
    apply(
        workspace,
        """
segments:
  - name: regulars
    when: [{event: page_view, within_days: 7, min_count: 7}]
  - name: light
    when: [{event: [page_view, content_download], min_count: 1, max_count: 30}]
  - name: quiet-week
    when: [{no_event: page_view, within_days: 7}]
  - name: pricing-twice
    when: [{event: page_view, where: {url: /pricing}, within_days: 7, min_count: 2, max_count: 3}]
  - name: exact-seconds
    when: [{event: page_view, where: {seconds: {range: [0.30000000000000004, 0.30000000000000004]}}, min_count: 1}]
  - name: shown-true
    when: [{event: page_view, where: {url: "yes", seconds: {regex: "^0[.]3$"}}}]
  - name: three-seconds
    when: [{event: page_view, where: {seconds: {equals: 3}}, min_count: 2}]
  - name: no-url
    when: [{event: page_view, where: {url: {exists: false}}, min_count: 2}]
  - name: big
    when: [{event: page_view, where: {seconds: {regex: "^1234567890123456789012"}}}]
""",
    )
    ids = [lead_id(workspace, ann), lead_id(workspace, bob)]
    with workspace.unit_of_work() as uow:
        document = definitions(uow)
        counted = lead_facts(uow.connection, ids, now, document.needs)
        every_kind = FactNeeds(events={"page_view": None, "content_download": None})
        one_by_one = lead_facts(uow.connection, ids, now, every_kind)
    assert counted[ids[0]].counts and counted[ids[0]].grouped and not counted[ids[0]].events
    expected = {"pricing-twice": True, "exact-seconds": True, "shown-true": True, "three-seconds": True}
    expected |= {"no-url": True, "big": True}
    for segment in document.segments:
        if segment.name in expected:
            assert segment.holds(one_by_one[ids[0]], now.timestamp(), member=False), segment.name
    for segment in document.segments:
        for i in ids:
            assert segment.holds(counted[i], now.timestamp(), member=False) is segment.holds(
                one_by_one[i], now.timestamp(), member=False
            ), (segment.name, i)
    refresh_segments(workspace, now)
    assert members(workspace, "regulars") == {ann}  # days 23–29: seven views in the last seven days
    assert members(workspace, "light") == {bob}  # ann: 31 of either kind, one too many
    assert members(workspace, "quiet-week") == set()  # bob's view is seven days old: on the edge


STATIC = """
segments:
  - name: webinar-guests
    description: people the events team invited by hand
    static: true
workflows:
  - name: welcome-guests
    trigger: {entered_segment: webinar-guests}
    steps: [{add_tag: guest}]
"""


def test_a_static_segment_holds_whom_people_put_in_it_until_taken_out(workspace: Workspace) -> None:
    from qualify.service.automation.segments import set_members
    from qualify.service.lifecycle.lead_admin import merge_leads

    apply(workspace, STATIC)
    for email in ("ann@acme.com", "bo@acme.com", "cy@acme.com"):
        ingest(workspace, make_event(f"v-{email}", "page_view", T0, email=email), now=T0)
    ann, bo, cy = (lead_id(workspace, e) for e in ("ann@acme.com", "bo@acme.com", "cy@acme.com"))
    assert members(workspace, "webinar-guests") == set()  # no tests: nobody enters on their own
    with workspace.unit_of_work() as uow:
        done = set_members(uow, "webinar-guests", [ann, bo, 999_999], add=True, by="events.team", now=T0 + DAY)
    assert done.changed == [ann, bo] and done.skipped == {999_999: "no such lead"}
    assert done.summary() == "add to a static segment: 2 lead(s) changed, 1 left as they were"
    with workspace.unit_of_work() as uow:
        again = set_members(uow, "webinar-guests", [ann], add=True, by="events.team", now=T0 + DAY)
        entered_by = set(
            uow.connection.execute(
                select(schema.segment_history.c.by).where(schema.segment_history.c.segment == "webinar-guests")
            ).scalars()
        )
        audit = uow.connection.execute(
            select(schema.audit_log.c.actor, schema.audit_log.c.action).where(
                schema.audit_log.c.target == "webinar-guests"
            )
        ).all()
    assert again.changed == [] and again.skipped == {ann: "already in webinar-guests"}
    assert entered_by == {"people"}
    assert ("events.team", "segment.add") in [tuple(row) for row in audit]
    # Entering triggers workflows as any segment's entry does.
    assert {(w, step) for w, step, *_ in log_of(workspace, "ann@acme.com")} == {("welcome-guests", -1)}
    # Events, the batch refresh and the dry run keep the members as they are.
    ingest(workspace, make_event("v2", "page_view", T0 + 2 * DAY, email="cy@acme.com"), now=T0 + 2 * DAY)
    assert refresh_segments(workspace, T0 + 3 * DAY) == {"leads": 3, "entered": 0, "left": 0}
    assert members(workspace, "webinar-guests") == {"ann@acme.com", "bo@acme.com"}
    # A merge carries the duplicate's membership to the kept lead.
    with workspace.unit_of_work() as uow:
        merge_leads(uow, "cy@acme.com", "bo@acme.com", by="test", now=T0 + 4 * DAY)
    assert members(workspace, "webinar-guests") == {"ann@acme.com", "cy@acme.com"}
    with workspace.unit_of_work() as uow:
        out = set_members(uow, "webinar-guests", [ann], add=False, by="events.team", now=T0 + 5 * DAY)
        counts = segment_counts(uow, "webinar-guests", days=7, every_days=7, now=T0 + 6 * DAY)
        info = segment_info(uow, "webinar-guests")
    assert out.changed == [ann] and members(workspace, "webinar-guests") == {"cy@acme.com"}
    assert counts[-1]["members"] == 1
    assert info.describe == "the leads people put in it"
    del cy


def test_only_a_static_segment_is_filled_by_hand_and_it_takes_no_tests(workspace: Workspace) -> None:
    from qualify.service.automation.segments import set_members

    apply(workspace, SEGMENTS)
    ingest(workspace, make_event("v1", "page_view", T0, email="ann@acme.com"), now=T0)
    ann = lead_id(workspace, "ann@acme.com")
    with workspace.unit_of_work() as uow, pytest.raises(InvalidInput, match="is dynamic"):
        set_members(uow, "busy-readers", [ann], add=True, by="x", now=T0)
    with pytest.raises(AutomationError) as caught:
        load_automation(
            "segments:\n  - name: a\n    static: true\n    when: [{tag: vip}]\n  - name: b\n  - name: c\n    static: 'yes'\n",
            "s.yaml",
        )
    said = str(caught.value)
    assert "segments[0].when: a static segment has no tests" in said
    assert "segments[1]: missing required key 'when' (or 'static: true'" in said
    assert "segments[2].static: must be true or false" in said


ALL_KINDS = """
segments:
  - name: all-kinds
    match: any
    when:
      - {field: account.industry, equals: software}
      - {field: attributes.plan, equals: pro}
      - {field: country, equals: DE}
      - {field: score, range: {min: 1}}
      - {field: days_in_stage, range: {min: 1}}
      - {field: owner, exists: true}
      - {field: stage, in: [mql, sql]}
      - {tag: vip}
      - {event: page_view, where: {url: /pricing}, within_days: 30}
      - {event: email_click, within_days: 7, min_count: 2}
"""


def test_facts_of_the_leads_a_change_just_wrote_equal_the_facts_read_from_the_store(workspace: Workspace) -> None:
    """Facts of leads given as written (their scoring state taken from memory, only what some test
    needs read) equal the facts a full read of the store gives."""
    with workspace.unit_of_work() as uow:
        upsert_accounts(uow, [Account("acme.com", name="Acme", industry="software", employees=300)], now=T0)
        upsert_leads(
            uow,
            [
                Lead(email="ann@acme.com", first_name="Ann", title="VP Sales", attributes={"plan": "pro"}),
                Lead(email="bob@gmail.com", country="DE"),
            ],
            now=T0,
        )
    ingest(
        workspace,
        make_event("v1", "page_view", T0 + DAY, email="ann@acme.com", properties={"url": "/pricing"}),
        make_event("d1", "demo_request", T0 + 2 * DAY, email="bob@gmail.com"),
        now=T0 + 3 * DAY,
    )
    ids = [lead_id(workspace, "ann@acme.com"), lead_id(workspace, "bob@gmail.com")]
    with workspace.unit_of_work() as uow:
        uow.connection.execute(schema.lead_tags.insert().values(lead_id=ids[0], tag="VIP", added_at=T0, by="test"))
    everything = load_automation(ALL_KINDS, "test.yaml").segments[0].tests.needs()
    state_only = FactNeeds(frozenset({"stage", "score", "fit_grade"}))
    now = T0 + 5 * DAY
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        written = repo.find_leads_by_id(conn, ids, profile=False)  # as the event ingestion holds them
        for needs in (everything, state_only):
            stored = lead_facts(conn, ids, now, needs)
            remembered = lead_facts(conn, ids, now, needs, known=written)
            assert sorted(remembered) == sorted(stored) == sorted(ids)
            for i in ids:
                assert {f: remembered[i].values.get(f) for f in needs.fields} == {
                    f: stored[i].values.get(f) for f in needs.fields
                }
                assert remembered[i].tags == stored[i].tags
                assert remembered[i].events == stored[i].events and remembered[i].grouped == stored[i].grouped
        facts = lead_facts(conn, ids, now, everything, known=written)
        assert facts[ids[0]].values["account.industry"] == "software"
        assert facts[ids[0]].values["attributes.plan"] == "pro"
        assert facts[ids[0]].tags == {"vip"}
        assert list(facts[ids[0]].grouped.values()) == [[(("/pricing",), 1)]]
        assert facts[ids[1]].values["country"] == "DE"
        lean = lead_facts(conn, ids, now, state_only, known=written)[ids[0]]
        assert set(lean.values) <= set(STATE_FIELDS) and not (lean.tags or lean.events or lean.grouped)  # nothing else


def test_the_online_reactions_judge_leads_on_what_the_store_holds(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through real ingestion (stage moves, the handoff writing owners, a workflow adding tags), each
    time the segments reaction judges the leads a change wrote on their state in memory, a full
    read of the store in the same transaction gives the same facts."""
    from qualify.service.automation import segments as segments_module

    real = segments_module.lead_facts
    checked: list[int] = []

    def checking(conn: Any, lead_ids: Any, now: datetime, needs: FactNeeds, *, known: Any = ()) -> Any:
        known = list(known)
        seen = real(conn, lead_ids, now, needs, known=known)
        if known:
            stored = real(conn, lead_ids, now, needs)
            assert sorted(seen) == sorted(stored)
            for i, facts in seen.items():
                assert {f: facts.values.get(f) for f in needs.fields} == {
                    f: stored[i].values.get(f) for f in needs.fields
                }, i
                assert (facts.tags, facts.events, facts.counts, facts.grouped) == (
                    stored[i].tags, stored[i].events, stored[i].counts, stored[i].grouped
                )  # fmt: skip
            checked.append(len(seen))
        return seen

    monkeypatch.setattr(segments_module, "lead_facts", checking)
    apply(workspace, SEGMENTS + ALL_KINDS.split("segments:\n", 1)[1] + WORKFLOWS)  # one document: a put replaces all
    with workspace.unit_of_work() as uow:
        upsert_accounts(uow, [Account("acme.com", industry="software", employees=300)], now=T0)
        upsert_leads(uow, [Lead(email="ann@acme.com", title="VP Sales", attributes={"plan": "pro"})], now=T0)
    people = ["ann@acme.com", "bob@gmail.com", "cy@acme.com"]
    for day in range(6):
        ingest(
            workspace,
            *(
                make_event(f"v{day}-{p}", "page_view", T0 + day * DAY, email=p, properties={"url": "/pricing"})
                for p in people
            ),
            *(make_event(f"c{day}-{p}", "email_click", T0 + day * DAY, email=p) for p in people[1:]),
            *([make_event("demo", "demo_request", T0 + day * DAY, email="bob@gmail.com")] if day == 2 else []),
            *([make_event("quote", "quote_request", T0 + day * DAY, email="cy@acme.com")] if day == 4 else []),
            now=T0 + day * DAY,
        )
    assert checked == [1] + [len(people)] * 6  # the upsert of ann, then each day's batch
    with workspace.unit_of_work() as uow:
        owners = set(uow.connection.execute(select(schema.leads.c.owner)).scalars())
    assert owners - {None}  # the handoff did write owners the reactions then read
