"""Enrolment: which changes trigger which workflows, and the due run an enrolment writes.

A trigger is a stage entered, a segment entered or left, a score crossing a threshold, or an
event (with tests on its properties). `enrol_triggered` enrols the leads a change triggered that
pass the workflow's enrolment tests: never twice at once, and again only after
`reenter_after_days`. Online this is the `workflows` reaction of the after-change pipeline
(service/pipeline.py), in the transaction of the change, fed the memberships that the `segments`
reaction left in `run.notes`; the batch refresh (segments) enrols on the moves it finds too.

Nothing here runs a workflow's steps: enrolment writes a due row, and the worker runs the steps
(qualify.service.automation.runs), so a change to a lead never waits for an email or a webhook.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, func, select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.automation import LeadFacts, Workflow
from qualify.service.automation.definitions import definitions
from qualify.service.automation.facts import lead_facts
from qualify.service.automation.history import SegmentChange, log_steps
from qualify.service.pipeline import Changed, Run


def triggered(
    workflows: Sequence[Workflow], changes: Changed, moved: Sequence[SegmentChange]
) -> list[tuple[Workflow, int, str]]:
    """(workflow, lead, why) for every trigger the changes fired, first reason per pair."""
    hits: dict[tuple[str, int], tuple[Workflow, int, str]] = {}

    def hit(workflow: Workflow, lead_id: int, why: str) -> None:
        hits.setdefault((workflow.name, lead_id), (workflow, lead_id, why))

    stage_entries, events = changes.stage_entries, changes.event_facts  # derived once, not per workflow
    for workflow in workflows:
        trigger = workflow.trigger
        match trigger.kind:
            case "entered_stage":
                for lead_id, stage in stage_entries:
                    if stage == trigger.value:
                        hit(workflow, lead_id, trigger.describe())
            case "account_entered_stage":
                for lead_id, stage in changes.account_entries:
                    if stage == trigger.value:
                        hit(workflow, lead_id, trigger.describe())
            case "entered_segment" | "left_segment":
                wanted = "entered" if trigger.kind == "entered_segment" else "left"
                for segment, lead_id, change in moved:
                    if segment == trigger.value and change == wanted:
                        hit(workflow, lead_id, trigger.describe())
            case "score_crossed":
                threshold = float(trigger.value)
                for lead_id, before, after in changes.scores:
                    if (before is None or before < threshold) and after >= threshold:
                        hit(workflow, lead_id, trigger.describe())
            case "event":
                for lead_id, kind, properties in events:
                    if kind == trigger.value and all(c.test(properties.get(c.field)) for c in trigger.where):
                        hit(workflow, lead_id, trigger.describe())
    return list(hits.values())


def enrol_triggered(
    conn: Connection,
    workflows: Sequence[Workflow],
    changes: Changed,
    moved: Sequence[SegmentChange],
    facts: dict[int, LeadFacts],
) -> int:
    """Enrol every lead whose change triggered a workflow and passes its enrolment rules; return how many."""
    candidates = [(w, lead_id, why) for w, lead_id, why in triggered(workflows, changes, moved) if lead_id in facts]
    if not candidates:
        return 0
    e = schema.workflow_enrolments
    previous: dict[tuple[str, int], tuple[datetime, bool]] = {}
    names = sorted({w.name for w, _, _ in candidates})
    ids = sorted({lead_id for _, lead_id, _ in candidates})
    for part in repo.chunks(ids):
        query = (
            select(e.c.workflow, e.c.lead_id, func.max(e.c.enrolled_at), func.sum(_active_flag()))
            .where(e.c.workflow.in_(names), e.c.lead_id.in_(part))
            .group_by(e.c.workflow, e.c.lead_id)
        )
        for workflow, lead_id, last, active in conn.execute(query):
            previous[(workflow, lead_id)] = (last, bool(active))
    now, at = changes.now, changes.now.timestamp()
    enrolling: list[tuple[str, int, str]] = []
    for workflow, lead_id, why in candidates:
        before = previous.get((workflow.name, lead_id))
        if before is not None:
            last, active = before
            if active or workflow.reenter_after_days is None:
                continue
            if now - last < timedelta(days=workflow.reenter_after_days):
                continue
        if not workflow.when.holds(facts[lead_id], at):
            continue
        enrolling.append((workflow.name, lead_id, why))
        previous[(workflow.name, lead_id)] = (now, True)
    return len(enrol(conn, enrolling, now))


def _active_flag() -> Any:
    e = schema.workflow_enrolments
    return case((e.c.status == "active", 1), else_=0)


def enrol(conn: Connection, enrolments: Sequence[tuple[str, int, str]], now: datetime) -> list[int]:
    """Write a due run for each (workflow, lead, why), its log's first line too, in two statements;
    return the runs' ids in the same order."""
    if not enrolments:
        return []
    e = schema.workflow_enrolments
    rows = [
        {
            "workflow": workflow,
            "lead_id": lead_id,
            "status": "active",
            "step": 0,
            "next_run_at": now,
            "trigger": why[:300],
            "enrolled_at": now,
        }
        for workflow, lead_id, why in enrolments
    ]
    ids = [int(i) for i in conn.execute(e.insert().returning(e.c.id, sort_by_parameter_order=True), rows).scalars()]
    log_steps(
        conn,
        [
            (enrolment_id, lead_id, workflow, -1, "enrol", "enrolled", why)
            for enrolment_id, (workflow, lead_id, why) in zip(ids, enrolments, strict=True)
        ],
        now,
    )
    return ids


def react_workflows(run: Run) -> None:
    """Reaction `workflows`: enrol every lead whose change (a stage entered, a segment entered or
    left, a score crossing, an event) triggers a workflow and passes its enrolment rules."""
    found = run.notes.get("definitions") or definitions(run.uow, run.configured.automation)  # read once a run
    if not found.workflows:
        return
    changed, conn = run.changed, run.uow.connection
    if "segments" in run.notes:
        moved, facts = run.notes["segments"]
    else:  # segments switched off: no segment triggers, but the rules still need the facts
        moved, facts = [], lead_facts(conn, changed.tested(), changed.now, found.needs, known=changed.records)
    if run.history_before is not None:  # history enrols nobody: only what is live triggers
        changed = replace(
            changed,
            moves=[m for m in changed.moves if not run.is_history(m.values["at"])],
            events=[row for row in changed.events if not run.is_history(row["occurred_at"])],
            scores=[s for s in changed.scores if not run.lead_is_history(s[0])],
        )
        moved = [m for m in moved if not run.lead_is_history(m[1])]
    enrol_triggered(conn, found.workflows, changed, moved, facts)
