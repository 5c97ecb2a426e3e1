"""Running workflows: the worker claims due runs and does one step per transaction.

A run (`workflow_enrolments` row) says which step is next and when it is due. The worker claims
one due run at a time (`FOR UPDATE SKIP LOCKED`: two workers never take the same run), and in one
transaction does the step's work, writes its log line and moves the run on. A crash before the
commit undoes all three, so the step runs again, once; after the commit it is done. The log's
unique index on (run, step) holds that line even against a bug: a step cannot be recorded twice.

What leaves the store is written in the same transaction and sent later: an email becomes a
row of the email outbox (delivered by `qualify.service.email.sending.deliver_due`), an owner
notification an announcement of the webhook outbox. Waits are rows too (`next_run_at`), so they
survive a restart of the worker; a wait for an event is cut short when the event arrives.

Before each step the run's exit tests are checked (the goal reached: e.g. the lead became SQL);
a run whose workflow was paused or removed, or whose lead was erased, stops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, exists, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.automation import Step, Workflow
from qualify.domain.errors import QualifyError
from qualify.domain.lifecycle import Actor
from qualify.domain.records import Event
from qualify.service.automation.definitions import definitions
from qualify.service.automation.facts import lead_facts
from qualify.service.automation.history import finish, log_step
from qualify.service.integrations import announcements as outbox
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.lead_ops import move_to_nurture, set_tag
from qualify.service.pipeline import Changed, react
from qualify.service.unit_of_work import UnitOfWork, Workspace

NOTIFY = outbox.WORKFLOW_NOTIFY
log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunSummary:
    steps: int = 0
    completed: int = 0
    exited: int = 0
    stopped: int = 0
    woken: int = 0


def run_due(workspace: Workspace, now: datetime, *, limit: int = 1000) -> RunSummary:
    """Run due steps, one transaction each, until none is due or `limit` steps ran."""
    summary = RunSummary(woken=wake_waiting(workspace, now))
    while summary.steps < limit:
        run: Row[Any] | None = None
        try:
            with workspace.unit_of_work() as uow:
                run = _claim(uow, now)
                if run is None:
                    break
                status = run_step(uow, run, now)
        except (OperationalError, IntegrityError):
            raise  # a conflict with a concurrent writer: the step was undone and runs again next pass
        except Exception as error:  # a bug or bad data in one run must not hold up every other run
            if run is None:
                raise
            log.exception("workflow run failed")
            status = _fail(workspace, run, now, error)
        summary.steps += 1
        if status == "completed":
            summary.completed += 1
        elif status == "exited":
            summary.exited += 1
        elif status in ("stopped", "failed"):
            summary.stopped += 1
    return summary


def _fail(workspace: Workspace, run: Row[Any], now: datetime, error: Exception) -> str:
    """End a run whose step raised (its transaction was rolled back), with the error in its log."""
    with workspace.unit_of_work() as uow:
        e = schema.workflow_enrolments
        still = uow.connection.execute(select(e.c.status, e.c.step).where(e.c.id == run.id)).first()
        if still is None or still.status != "active":
            return still.status if still is not None else "failed"
        detail = f"step failed: {type(error).__name__}: {error}"
        finish(uow.connection, run.id, run.lead_id, run.workflow, still.step, "failed", "error", detail, now)
    return "failed"


def wake_waiting(workspace: Workspace, now: datetime) -> int:
    """Make due every run waiting for an event that has arrived since its wait began."""
    e, ev = schema.workflow_enrolments, schema.events
    arrived = exists().where(
        ev.c.lead_id == e.c.lead_id, ev.c.type == e.c.waiting_for, ev.c.occurred_at >= e.c.wait_started_at
    )
    with workspace.unit_of_work() as uow:
        result = uow.connection.execute(
            update(e)
            .where(e.c.status == "active", e.c.waiting_for.is_not(None), e.c.next_run_at > now, arrived)
            .values(next_run_at=now)
        )
    return int(result.rowcount or 0)


def _claim(uow: UnitOfWork, now: datetime) -> Row[Any] | None:
    """The next due run, locked together with its lead's row (PostgreSQL; SQLite's writers take
    turns). A run whose lead another transaction holds (an event being ingested, an erasure) is
    skipped for now, so the worker never waits on a lead while holding a run: no lock cycle."""
    e, leads = schema.workflow_enrolments, schema.leads
    query = (
        select(e)
        .join(leads, leads.c.id == e.c.lead_id)
        .where(e.c.status == "active", e.c.next_run_at <= now)
        .order_by(e.c.next_run_at, e.c.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=[e, leads])
    )
    return uow.connection.execute(query).first()


def run_step(uow: UnitOfWork, run: Row[Any], now: datetime) -> str:
    """Do the run's next step (or its exit or completion); return the run's status after it."""
    conn = uow.connection
    found = definitions(uow)
    workflow = found.workflow(run.workflow)
    k = run.step
    if workflow is None:
        finish(conn, run.id, run.lead_id, run.workflow, k, "stopped", "stop", "the workflow was paused or removed", now)
        return "stopped"
    needs = workflow.exit.needs().merge(workflow.when.needs())
    facts = lead_facts(conn, [run.lead_id], now, needs).get(run.lead_id)
    if facts is None:
        finish(conn, run.id, run.lead_id, workflow.name, k, "stopped", "stop", "the lead was erased", now)
        return "stopped"
    if workflow.exit.items and workflow.exit.holds(facts, now.timestamp()):
        met = [t.describe() for t in workflow.exit.items if t.holds(facts, now.timestamp())]
        finish(conn, run.id, run.lead_id, workflow.name, k, "exited", "exit", f"goal reached: {'; '.join(met)}", now)
        return "exited"
    if k >= len(workflow.steps):
        finish(conn, run.id, run.lead_id, workflow.name, k, "completed", "complete", "every step done", now)
        return "completed"
    step = workflow.steps[k]
    if step.kind in ("wait", "wait_for"):
        return _wait(uow, run, workflow, step, now)
    outcome, detail = _do(uow, run, workflow, step, now)
    log_step(conn, run.id, run.lead_id, workflow.name, k, step.kind, outcome, detail, now)
    return _advance(uow, run, workflow, now)


def _advance(uow: UnitOfWork, run: Row[Any], workflow: Workflow, now: datetime) -> str:
    e = schema.workflow_enrolments
    following = run.step + 1
    uow.connection.execute(
        update(e)
        .where(e.c.id == run.id)
        .values(step=following, next_run_at=now, wait_started_at=None, waiting_for=None)
    )
    if following >= len(workflow.steps):
        finish(
            uow.connection,
            run.id,
            run.lead_id,
            workflow.name,
            following,
            "completed",
            "complete",
            "every step done",
            now,
        )
        return "completed"
    return "active"


def _wait(uow: UnitOfWork, run: Row[Any], workflow: Workflow, step: Step, now: datetime) -> str:
    """Start a wait (no log line yet), or end it: its log line says how it ended."""
    conn = uow.connection
    e = schema.workflow_enrolments
    if run.wait_started_at is None:
        days = step.args["days"] if step.kind == "wait" else step.args["timeout_days"]
        conn.execute(
            update(e)
            .where(e.c.id == run.id)
            .values(
                wait_started_at=now,
                next_run_at=now + timedelta(days=days),
                waiting_for=step.args["event"] if step.kind == "wait_for" else None,
            )
        )
        return "active"
    waited = (now - run.wait_started_at).total_seconds() / 86400
    if step.kind == "wait":
        log_step(conn, run.id, run.lead_id, workflow.name, run.step, "wait", "done", f"waited {waited:.2f} days", now)
        return _advance(uow, run, workflow, now)
    ev = schema.events
    first = conn.execute(
        select(ev.c.occurred_at)
        .where(ev.c.lead_id == run.lead_id, ev.c.type == step.args["event"], ev.c.occurred_at >= run.wait_started_at)
        .order_by(ev.c.occurred_at)
        .limit(1)
    ).scalar()
    if first is not None:
        detail = f"{step.args['event']} arrived at {first.isoformat()} after {waited:.2f} days"
        log_step(conn, run.id, run.lead_id, workflow.name, run.step, "wait_for", "done", detail, now)
        return _advance(uow, run, workflow, now)
    if step.args["on_timeout"] == "exit":
        detail = f"no {step.args['event']} within {step.args['timeout_days']:g} days"
        finish(conn, run.id, run.lead_id, workflow.name, run.step, "exited", "wait_for", detail, now)
        return "exited"
    detail = f"no {step.args['event']} within {step.args['timeout_days']:g} days: going on"
    log_step(conn, run.id, run.lead_id, workflow.name, run.step, "wait_for", "timed_out", detail, now)
    return _advance(uow, run, workflow, now)


def _do(uow: UnitOfWork, run: Row[Any], workflow: Workflow, step: Step, now: datetime) -> tuple[str, str]:
    """The step's work, in the run's transaction; returns (outcome, detail) for its log line."""
    conn = uow.connection
    args, lead_id = step.args, run.lead_id
    match step.kind:
        case "send_email":
            from qualify.service.email import outbox as mail

            try:
                queued = mail.enqueue(
                    conn,
                    uow.workspace.settings,
                    lead_id=lead_id,
                    template=args["template"],
                    now=now,
                    enrolment_id=run.id,
                    step=run.step,
                )
            except QualifyError as error:  # a template deleted since, or one this lead cannot fill in
                return "failed", f"email {args['template']!r} not sent: {error}"
            if queued.status == "skipped":
                return "skipped", f"email {args['template']!r} not sent: {queued.reason}"
            return "done", f"email {args['template']!r} queued (email #{queued.id})"
        case "notify_owner":
            row = conn.execute(
                select(schema.leads.c.email, schema.leads.c.external_id, schema.leads.c.owner).where(
                    schema.leads.c.id == lead_id
                )
            ).one()
            payload = {
                "lead": {"id": lead_id, "email": row.email, "external_id": row.external_id},
                "owner": row.owner,
                "workflow": workflow.name,
                "step": run.step,
                "message": args.get("message") or f"{workflow.name}: please look at this lead",
                "at": now.isoformat(),
            }
            sent = outbox.enqueue(conn, [outbox.Announcement(NOTIFY, payload)], now)
            who = row.owner or "no owner"
            return "done", f"notified {who} ({sent} webhook subscription(s))"
        case "set_owner":
            leads = schema.leads
            conn.execute(
                update(leads)
                .where(leads.c.id == lead_id)
                .values(owner=args["owner"], owner_rule=f"workflow {workflow.name}"[:200], owner_assigned_at=now)
            )
            conn.execute(
                schema.assignments.insert().values(
                    lead_id=lead_id, owner=args["owner"], team=None, rule=f"workflow {workflow.name}"[:200], at=now
                )
            )
            _changed(uow, lead_id, now)
            return "done", f"owner set to {args['owner']}"
        case "add_tag" | "remove_tag":
            return _tag(uow, lead_id, args["tag"], step.kind == "add_tag", workflow, now)
        case "bonus":
            record = repo.find_leads_by_id(conn, [lead_id], profile=False)[0]
            reason = args.get("reason") or ""
            [outcome] = ingest_events(
                uow,
                [
                    Event(
                        event_id=f"bonus:{run.id}:{run.step}",
                        type="score_bonus",
                        occurred_at=now,
                        email=record.lead.email,
                        external_id=record.lead.external_id,
                        properties={"points": args["points"], "reason": reason, "workflow": workflow.name},
                    )
                ],
                create_unknown=False,
                now=now,
                by=f"workflow {workflow.name}",
            )
            if outcome.status != "accepted":
                return "skipped", f"bonus not given: {outcome.reason}"
            return "done", f"bonus {args['points']:+g} points" + (f": {reason}" if reason else "")
        case "move_to_nurture":
            return _nurture(uow, lead_id, workflow, args.get("reason") or "", now)
    raise AssertionError(f"unknown step {step.kind}")


def _changed(uow: UnitOfWork, lead_id: int, now: datetime) -> None:
    """A step changed the lead outside of an event: test its segments and triggers again."""
    react(uow, Changed(now, lead_ids=[lead_id]))


def _tag(uow: UnitOfWork, lead_id: int, tag: str, add: bool, workflow: Workflow, now: datetime) -> tuple[str, str]:
    if not set_tag(uow, lead_id, tag, add, by=f"workflow {workflow.name}", now=now):
        return "skipped", f"already {'tagged' if add else 'not tagged'} {tag!r}"
    return "done", f"{'added' if add else 'removed'} tag {tag!r}"


def _nurture(uow: UnitOfWork, lead_id: int, workflow: Workflow, reason: str, now: datetime) -> tuple[str, str]:
    by = f"workflow {workflow.name}"
    moved, said = move_to_nurture(uow, lead_id, by=by, reason=reason or by, now=now, actor=Actor.SYSTEM)
    return ("done" if moved else "skipped"), said
