"""Segments and workflow enrolment in the store: definitions, membership (online and in batch),
history, counts over time, and the triggers that enrol leads in workflows.

Online, the `segments` and `workflows` reactions of the after-change pipeline (service/pipeline.py)
run inside the unit of work of every change to leads (events, upserts,
stage actions, workflow steps): it tests the touched leads against every segment, records who
entered and left, and enrols leads whose change triggers a workflow, all in that transaction.
In batch, `refresh_segments` tests every lead, a chunk per transaction, with the same code; the
worker runs it for segments that time alone can change (windows, days in stage, decaying scores).

Nothing here runs a workflow's steps: enrolment writes a due row, and the worker runs the steps
(qualify.service.automation.runs), so a change to a lead never waits for an email or a webhook.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, null, or_, select, tuple_, update

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.automation import (
    AutomationDocument,
    EventNeed,
    LeadFacts,
    SeenEvent,
    Segment,
    Tests,
    Workflow,
    load_segment,
    load_workflow,
    merge_needs,
)
from qualify.domain.engagement import DAY
from qualify.domain.errors import InvalidInput, NotFound
from qualify.domain.fit import profile_values
from qualify.service.audit import record_audit
from qualify.service.pipeline import Changed, Run
from qualify.service.unit_of_work import UnitOfWork, Workspace, utcnow

CHUNK = 500
ONLINE, BATCH = "online", "batch"


# --- definitions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Definitions:
    """The segments and active workflows of a workspace, parsed once per version."""

    segments: tuple[Segment, ...] = ()
    workflows: tuple[Workflow, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.segments and not self.workflows

    def workflow(self, name: str) -> Workflow | None:
        return next((w for w in self.workflows if w.name == name), None)

    def _tests(self) -> list[Tests]:
        return [s.tests for s in self.segments] + [t for w in self.workflows for t in (w.when, w.exit)]

    def event_needs(self) -> dict[str, EventNeed]:
        """The event kinds any test looks at, each with how far back and whether its properties."""
        return merge_needs(*(t.event_needs() for t in self._tests()))

    def reads(self, field: str) -> bool:
        """Whether a segment or workflow tests this lead field."""
        return any(field in t.fields() for t in self._tests())


def definitions(uow: UnitOfWork) -> Definitions:
    """The current definitions: one small query for their versions, parsed only when they changed."""
    conn = uow.connection
    s, w = schema.segments, schema.workflows
    versions = tuple(
        [("s", name, version) for name, version in conn.execute(select(s.c.name, s.c.version).order_by(s.c.name))]
        + [
            ("w", name, version)
            for name, version in conn.execute(select(w.c.name, w.c.version).where(w.c.active).order_by(w.c.name))
        ]
    )
    cache = uow.workspace._automation
    found: Definitions | None = cache.get(versions)
    if found is None:
        segments = tuple(
            load_segment(json.loads(doc), f"segment {name}")
            for name, doc in conn.execute(select(s.c.name, s.c.document).order_by(s.c.name))
        )
        workflows = tuple(
            load_workflow(json.loads(doc), f"workflow {name}")
            for name, doc in conn.execute(select(w.c.name, w.c.document).where(w.c.active).order_by(w.c.name))
        )
        found = Definitions(segments, workflows)
        cache.clear()  # only the newest definitions are worth keeping; a reader elsewhere keeps its own
        cache[versions] = found
    return found


@dataclass(frozen=True, slots=True)
class Applied:
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"created": self.created, "changed": self.changed, "unchanged": self.unchanged}


def put_segments(uow: UnitOfWork, segments: Iterable[Segment], *, by: str, now: datetime | None = None) -> Applied:
    """Create or replace segments by name. A changed definition keeps its members until the
    next evaluation (run `refresh_segments` to re-test every lead now)."""
    now = now or utcnow()
    applied = Applied()
    for segment in segments:
        values = {"description": segment.description, "version": segment.version}
        _put_definition(uow, schema.segments, segment.name, segment.document, values, applied, by, now)
    return applied


def put_workflows(uow: UnitOfWork, document: AutomationDocument, *, by: str, now: datetime | None = None) -> Applied:
    """Create or replace the document's workflows (active) and save its templates.

    Every template a workflow sends must be in the document or already stored, and every
    segment it is triggered by must exist: a workflow that could never run is refused.
    """
    from qualify.service.email import mail

    now = now or utcnow()
    conn = uow.connection
    templates = list(document.templates)
    problems = [f"template {t.name}: {p}" for t in templates for p in mail.template_problems(t)]
    known_templates = {t.name for t in templates} | {t.name for t in mail.list_templates(conn)}
    known_segments = {s.name for s in document.segments} | set(conn.execute(select(schema.segments.c.name)).scalars())
    for workflow in document.workflows:
        for name in sorted(workflow.templates() - known_templates):
            problems.append(f"workflow {workflow.name}: no email template {name!r}")
        for name in sorted(workflow.segments() - known_segments):
            problems.append(f"workflow {workflow.name}: no segment {name!r}")
    if problems:
        raise InvalidInput("; ".join(problems), field="workflows")
    if templates:
        mail.save_templates(conn, templates, now)
    applied = Applied()
    for workflow in document.workflows:
        values = {"description": workflow.description, "version": workflow.version, "active": True}
        if (
            _put_definition(uow, schema.workflows, workflow.name, workflow.document, values, applied, by, now)
            == "edited"
        ):
            _stop_runs(conn, workflow.name, "edit", "the workflow was changed; a new trigger starts it afresh", now)
    return applied


def _put_definition(
    uow: UnitOfWork,
    table: Any,
    name: str,
    document: dict[str, Any],
    values: dict[str, Any],
    applied: Applied,
    by: str,
    now: datetime,
) -> str:
    """Insert or replace one segment or workflow by name, record it in `applied` and the audit log.

    Returns "created", "edited" (a new version), "changed" (same version, other values, e.g. a
    paused workflow made active again) or "unchanged".
    """
    conn = uow.connection
    row = conn.execute(select(table).where(table.c.name == name)).first()
    values = values | {"document": json.dumps(document, sort_keys=True), "updated_at": now}
    if row is None:
        conn.execute(table.insert().values(name=name, created_at=now, **values))
        applied.created.append(name)
        outcome = "created"
    elif any(row._mapping[key] != value for key, value in values.items() if key not in ("document", "updated_at")):
        conn.execute(update(table).where(table.c.name == name).values(**values))
        applied.changed.append(name)
        outcome = "edited" if row.version != values["version"] else "changed"
    else:
        applied.unchanged.append(name)
        return "unchanged"
    kind = "segment" if table is schema.segments else "workflow"
    record_audit(uow, actor=by, action=f"{kind}.put", target=name, at=now, details={"version": values["version"]})
    return outcome


def delete_segment(uow: UnitOfWork, name: str, *, by: str, now: datetime | None = None) -> None:
    """Remove a segment; its members' exits are recorded, so the history stays whole."""
    now = now or utcnow()
    conn = uow.connection
    table, members = schema.segments, schema.segment_members
    if conn.execute(select(table.c.name).where(table.c.name == name)).first() is None:
        raise NotFound(f"no segment {name!r}")
    users = [w for w in definitions(uow).workflows if name in w.segments()]
    if users:
        raise InvalidInput(
            f"segment {name!r} triggers workflow(s) {', '.join(w.name for w in users)}: pause them first", field="name"
        )
    left = list(conn.execute(select(members.c.lead_id).where(members.c.segment == name)).scalars())
    _write_history(conn, [(name, lead_id, "left") for lead_id in left], now, BATCH)
    conn.execute(delete(members).where(members.c.segment == name))
    conn.execute(delete(table).where(table.c.name == name))
    record_audit(uow, actor=by, action="segment.delete", target=name, at=now, details={"members": len(left)})


def _stop_runs(conn: Connection, workflow: str, action: str, why: str, now: datetime) -> int:
    """Stop a workflow's runs in progress, each with its log line; return how many.

    Runs follow their workflow by step number, so a run must not go on under a changed list of
    steps: it could repeat a step it did, or skip one."""
    e = schema.workflow_enrolments
    query = select(e.c.id, e.c.lead_id, e.c.step).where(e.c.workflow == workflow, e.c.status == "active")
    runs = list(conn.execute(query))
    for run in runs:
        finish(conn, run.id, run.lead_id, workflow, run.step, "stopped", action, why, now)
    return len(runs)


def set_workflow_active(uow: UnitOfWork, name: str, active: bool, *, by: str, now: datetime | None = None) -> int:
    """Pause or resume a workflow. Pausing stops its runs in progress (logged); returns how many."""
    now = now or utcnow()
    conn = uow.connection
    table = schema.workflows
    if conn.execute(select(table.c.name).where(table.c.name == name)).first() is None:
        raise NotFound(f"no workflow {name!r}")
    if active:
        document = conn.execute(select(table.c.document).where(table.c.name == name)).scalar_one()
        missing = load_workflow(json.loads(document), f"workflow {name}").segments() - set(
            conn.execute(select(schema.segments.c.name)).scalars()
        )
        if missing:
            raise InvalidInput(
                f"workflow {name!r} is triggered by segment {missing.pop()!r}, which is gone", field="name"
            )
    conn.execute(update(table).where(table.c.name == name).values(active=active, updated_at=now))
    stopped = _stop_runs(conn, name, "pause", "the workflow was paused", now) if not active else 0
    record_audit(
        uow,
        actor=by,
        action="workflow.resume" if active else "workflow.pause",
        target=name,
        at=now,
        details={"stopped": stopped},
    )
    return stopped


# --- facts about leads ---------------------------------------------------------------------------


def lead_facts(
    conn: Connection,
    lead_ids: Sequence[int],
    now: datetime,
    events: Mapping[str, EventNeed],
) -> dict[int, LeadFacts]:
    """What the tests need to know about each lead, read from the store (erased leads are left out).

    Of its events, only the kinds in `events`, each as far back as some test looks, and with
    properties only where some test reads them: a lead's long history of page views is not read
    whole for a test on the last 30 days.
    """
    leads = schema.leads
    out: dict[int, LeadFacts] = {}
    at = now.timestamp()
    rows = []
    for part in repo.chunks(sorted(set(lead_ids))):
        rows += list(conn.execute(select(leads).where(leads.c.id.in_(part), leads.c.erased_at.is_(None))))
    records = [(repo.lead_from_row(row), row) for row in rows]
    accounts = repo.accounts_by_id(conn, {r.account_id for r, _ in records if r.account_id is not None})
    for record, row in records:
        state = record.state
        engagement = state.engagement_at(at)
        values = profile_values(record.lead, accounts.get(record.account_id) if record.account_id else None)
        values.update(
            stage=state.stage.value,
            fit_score=state.fit,
            fit_grade=state.grade,
            engagement_score=round(engagement, 6),
            score=round(state.fit + engagement, 6),
            probability=row.probability,
            persona=state.persona,
            owner=row.owner,
            days_in_stage=(at - state.stage_entered) / DAY,
            days_since_created=(at - record.created_at.timestamp()) / DAY,
            days_since_last_event=(at - state.last_event) / DAY if state.last_event is not None else None,
        )
        assert record.id is not None
        out[record.id] = LeadFacts(record.id, values)
    if not out:
        return out
    tags: dict[int, set[str]] = defaultdict(set)
    t = schema.lead_tags
    for part in repo.chunks(sorted(out)):
        for lead_id, tag in conn.execute(select(t.c.lead_id, t.c.tag).where(t.c.lead_id.in_(part))):
            tags[lead_id].add(tag.casefold())
    for lead_id, found in tags.items():
        out[lead_id].tags = frozenset(found)
    if events:
        ev = schema.events
        by_window: dict[float | None, list[str]] = defaultdict(list)
        for kind, need in sorted(events.items()):
            by_window[need.days].append(kind)
        wanted = or_(
            *(
                ev.c.type.in_(kinds)
                if days is None
                else and_(ev.c.type.in_(kinds), ev.c.occurred_at >= now - timedelta(days=days))
                for days, kinds in by_window.items()
            )
        )
        with_properties = sorted(kind for kind, need in events.items() if need.properties)
        properties = (
            ev.c.properties
            if len(with_properties) == len(events)
            else case((ev.c.type.in_(with_properties or [""]), ev.c.properties), else_=null())
        )
        for part in repo.chunks(sorted(out)):
            query = select(ev.c.lead_id, ev.c.type, ev.c.occurred_at, properties).where(ev.c.lead_id.in_(part), wanted)
            for lead_id, kind, occurred, found in conn.execute(query):
                out[lead_id].events.append(SeenEvent(kind, occurred.timestamp(), found or {}))
    return out


# --- membership ------------------------------------------------------------------------------------


SegmentChange = tuple[str, int, str]  # segment, lead id, "entered" | "left"


def _members(conn: Connection, lead_ids: Sequence[int], names: Iterable[str] | None = None) -> set[tuple[str, int]]:
    m = schema.segment_members
    out: set[tuple[str, int]] = set()
    for part in repo.chunks(sorted(set(lead_ids))):
        query = select(m.c.segment, m.c.lead_id).where(m.c.lead_id.in_(part))
        if names is not None:
            query = query.where(m.c.segment.in_(sorted(names)))
        out.update((row.segment, row.lead_id) for row in conn.execute(query))
    return out


def _write_history(conn: Connection, changes: list[SegmentChange], now: datetime, by: str) -> None:
    if changes:
        conn.execute(
            schema.segment_history.insert(),
            [
                {"segment": s, "lead_id": lead_id, "change": change, "at": now, "by": by}
                for s, lead_id, change in changes
            ],
        )


def evaluate_segments(
    conn: Connection,
    segments: Sequence[Segment],
    lead_ids: Sequence[int],
    facts: dict[int, LeadFacts],
    now: datetime,
    by: str,
) -> list[SegmentChange]:
    """Test `lead_ids` against `segments`, write who entered and left (members and history), return it."""
    if not segments or not lead_ids:
        return []
    at = now.timestamp()
    names = [s.name for s in segments]
    current = _members(conn, lead_ids, names)
    changes: list[SegmentChange] = []
    for lead_id in lead_ids:
        lead = facts.get(lead_id)  # absent: erased, so in no segment
        for segment in segments:
            inside = lead is not None and segment.tests.holds(lead, at)
            was = (segment.name, lead_id) in current
            if inside and not was:
                changes.append((segment.name, lead_id, "entered"))
            elif was and not inside:
                changes.append((segment.name, lead_id, "left"))
    entered = [{"segment": s, "lead_id": i, "entered_at": now} for s, i, c in changes if c == "entered"]
    left = [(s, i) for s, i, c in changes if c == "left"]
    if entered:
        conn.execute(schema.segment_members.insert(), entered)
    m = schema.segment_members
    for part in repo.chunks(left):
        conn.execute(delete(m).where(tuple_(m.c.segment, m.c.lead_id).in_(list(part))))
    _write_history(conn, changes, now, by)
    return changes


# --- the online reactions -----------------------------------------------------------------------


def react_segments(run: Run) -> None:
    """Reaction `segments`: the touched leads tested against every segment, in the change's
    transaction; entries and exits recorded. Leaves the facts and the memberships it changed in
    `run.notes` for the workflows' triggers."""
    changed = run.changed
    found = definitions(run.uow)
    if found.empty:
        return
    conn = run.uow.connection
    ids = changed.touched()
    facts = lead_facts(conn, ids, changed.now, found.event_needs())
    run.notes["segments"] = (evaluate_segments(conn, found.segments, ids, facts, changed.now, ONLINE), facts)


def react_workflows(run: Run) -> None:
    """Reaction `workflows`: enrol every lead whose change (a stage entered, a segment entered or
    left, a score crossing, an event) triggers a workflow and passes its enrolment rules."""
    found = definitions(run.uow)
    if not found.workflows:
        return
    changed, conn = run.changed, run.uow.connection
    if "segments" in run.notes:
        moved, facts = run.notes["segments"]
    else:  # segments switched off: no segment triggers, but the rules still need the facts
        moved, facts = [], lead_facts(conn, changed.touched(), changed.now, found.event_needs())
    enrol_triggered(conn, found.workflows, changed, moved, facts)


def refresh_reading(workspace: Workspace, name: str) -> None:
    """A field moved for every lead at once (e.g. `probability`): the segments that test it, tested again."""
    with workspace.unit_of_work(read_only=True) as uow:
        reading = [s.name for s in definitions(uow).segments if name in s.tests.fields()]
    if reading:
        refresh_segments(workspace, names=reading)


# --- enrolment -------------------------------------------------------------------------------------


def triggered(
    workflows: Sequence[Workflow], changes: Changed, moved: Sequence[SegmentChange]
) -> list[tuple[Workflow, int, str]]:
    """(workflow, lead, why) for every trigger the changes fired, first reason per pair."""
    hits: dict[tuple[str, int], tuple[Workflow, int, str]] = {}

    def hit(workflow: Workflow, lead_id: int, why: str) -> None:
        hits.setdefault((workflow.name, lead_id), (workflow, lead_id, why))

    for workflow in workflows:
        trigger = workflow.trigger
        match trigger.kind:
            case "entered_stage":
                for lead_id, stage in changes.stage_entries:
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
                for lead_id, kind, properties in changes.event_facts:
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
    enrolled = 0
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
        enrol(conn, workflow.name, lead_id, why, now)
        previous[(workflow.name, lead_id)] = (now, True)
        enrolled += 1
    return enrolled


def _active_flag() -> Any:
    e = schema.workflow_enrolments
    return case((e.c.status == "active", 1), else_=0)


def enrol(conn: Connection, workflow: str, lead_id: int, why: str, now: datetime) -> int:
    e = schema.workflow_enrolments
    enrolment_id = conn.execute(
        e.insert()
        .values(
            workflow=workflow,
            lead_id=lead_id,
            status="active",
            step=0,
            next_run_at=now,
            trigger=why[:300],
            enrolled_at=now,
        )
        .returning(e.c.id)
    ).scalar_one()
    log_step(conn, enrolment_id, lead_id, workflow, -1, "enrol", "enrolled", why, now)
    return int(enrolment_id)


def log_step(
    conn: Connection,
    enrolment_id: int,
    lead_id: int,
    workflow: str,
    step: int,
    action: str,
    outcome: str,
    detail: str | None,
    now: datetime,
) -> None:
    conn.execute(
        schema.workflow_log.insert().values(
            enrolment_id=enrolment_id,
            lead_id=lead_id,
            workflow=workflow,
            step=step,
            action=action,
            outcome=outcome,
            detail=(detail or "")[:2000] or None,
            at=now,
        )
    )


def finish(
    conn: Connection,
    enrolment_id: int,
    lead_id: int,
    workflow: str,
    step: int,
    status: str,
    action: str,
    detail: str,
    now: datetime,
) -> None:
    """End a run (completed, exited, stopped, failed), with its log line at `step`."""
    e = schema.workflow_enrolments
    conn.execute(
        update(e)
        .where(e.c.id == enrolment_id)
        .values(status=status, finished_at=now, outcome=detail[:300], next_run_at=None, waiting_for=None)
    )
    log_step(conn, enrolment_id, lead_id, workflow, step, action, status, detail, now)


# --- batch -----------------------------------------------------------------------------------------


def refresh_segments(
    workspace: Workspace,
    now: datetime | None = None,
    *,
    names: Iterable[str] | None = None,
    only_timed: bool = False,
    chunk: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Test every lead against the segments (all, `names`, or those time can change) as of `now`;
    record entries and exits (`by` batch) and enrol the workflows they trigger. Returns
    {"leads": tested, "entered": n, "left": n}."""
    now = now or utcnow()
    wanted = set(names) if names is not None else None
    totals = {"leads": 0, "entered": 0, "left": 0}
    after_id = 0
    while True:
        with workspace.unit_of_work() as uow:
            found = definitions(uow)
            segments = [
                s for s in found.segments if (wanted is None or s.name in wanted) and (not only_timed or s.timed)
            ]
            if wanted is not None and (missing := wanted - {s.name for s in found.segments}):
                raise NotFound(f"no segment {', '.join(sorted(missing))!r}")
            if not segments:
                return totals
            conn = uow.connection
            leads = schema.leads
            ids = list(
                conn.execute(
                    # Locked in id order, as ingestion locks them: a lead being changed is waited for
                    # rather than judged on what it was, and the two never wait on each other in a circle.
                    select(leads.c.id).where(leads.c.id > after_id).order_by(leads.c.id).limit(chunk).with_for_update()
                ).scalars()
            )
            if not ids:
                conn.execute(
                    update(schema.segments)
                    .where(schema.segments.c.name.in_([s.name for s in segments]))
                    .values(refreshed_at=now)
                )
                return totals
            probe = Definitions(tuple(segments), found.workflows)
            facts = lead_facts(conn, ids, now, probe.event_needs())
            moved = evaluate_segments(conn, segments, ids, facts, now, BATCH)
            if found.workflows and moved:
                enrol_triggered(conn, found.workflows, Changed(now, lead_ids=ids), moved, facts)
        totals["leads"] += len(ids)
        totals["entered"] += sum(1 for *_, c in moved if c == "entered")
        totals["left"] += sum(1 for *_, c in moved if c == "left")
        if progress is not None:
            progress(len(ids))
        after_id = ids[-1]


def refresh_due(workspace: Workspace, now: datetime, every: timedelta) -> int:
    """The worker's share: refresh the segments time can change, when their last refresh is older
    than `every`; returns how many leads entered or left."""
    with workspace.unit_of_work(read_only=True) as uow:
        found = definitions(uow)
        timed = {s.name for s in found.segments if s.timed}
        if not timed:
            return 0
        s = schema.segments
        stale = list(
            uow.connection.execute(
                select(s.c.name).where(
                    s.c.name.in_(sorted(timed)), (s.c.refreshed_at.is_(None)) | (s.c.refreshed_at <= now - every)
                )
            ).scalars()
        )
    if not stale:
        return 0
    result = refresh_segments(workspace, now, names=stale)
    return result["entered"] + result["left"]


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    name: str
    description: str | None
    definition: dict[str, Any]
    version: str
    members: int
    updated_at: datetime
    refreshed_at: datetime | None
    describe: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "definition": self.definition,
            "version": self.version,
            "members": self.members,
            "updated_at": self.updated_at.isoformat(),
            "refreshed_at": self.refreshed_at.isoformat() if self.refreshed_at else None,
            "tests": self.describe,
        }


def list_segments(uow: UnitOfWork) -> list[SegmentInfo]:
    conn = uow.connection
    s, m = schema.segments, schema.segment_members
    counts: dict[str, int] = dict(conn.execute(select(m.c.segment, func.count()).group_by(m.c.segment)).all())
    out = []
    for row in conn.execute(select(s).order_by(s.c.name)):
        definition = json.loads(row.document)
        out.append(
            SegmentInfo(
                row.name,
                row.description,
                definition,
                row.version,
                int(counts.get(row.name, 0)),
                row.updated_at,
                row.refreshed_at,
                load_segment(definition, f"segment {row.name}").tests.describe(),
            )
        )
    return out


def segment_info(uow: UnitOfWork, name: str) -> SegmentInfo:
    found = next((s for s in list_segments(uow) if s.name == name), None)
    if found is None:
        raise NotFound(f"no segment {name!r}")
    return found


def segment_members(uow: UnitOfWork, name: str, *, limit: int = 100, after_id: int = 0) -> list[dict[str, Any]]:
    """Members by lead id (a page after `after_id`), with when they entered and their scores now."""
    segment_info(uow, name)
    m, leads = schema.segment_members, schema.leads
    query = (
        select(
            leads.c.id,
            leads.c.email,
            leads.c.external_id,
            leads.c.stage,
            leads.c.fit_grade,
            leads.c.fit_score,
            leads.c.engagement_score,
            leads.c.owner,
            m.c.entered_at,
        )
        .join(leads, leads.c.id == m.c.lead_id)
        .where(m.c.segment == name, m.c.lead_id > after_id)
        .order_by(m.c.lead_id)
        .limit(limit)
    )
    return [
        {
            "id": row.id,
            "lead": row.email or f"ext:{row.external_id}",
            "stage": row.stage,
            "grade": row.fit_grade,
            "fit": row.fit_score,
            "engagement": round(row.engagement_score, 2),
            "owner": row.owner,
            "entered_at": row.entered_at.isoformat(),
        }
        for row in uow.connection.execute(query)
    ]


def segment_counts(
    uow: UnitOfWork, name: str, *, days: int = 90, every_days: int = 7, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Members at the end of every `every_days` over the last `days`, from the history, plus the
    entries and exits in each interval."""
    if every_days < 1 or days < every_days:
        raise InvalidInput("days must be at least every_days ≥ 1", field="days")
    segment_info(uow, name)
    now = now or utcnow()
    h = schema.segment_history
    rows = sorted(
        (row.at, 1 if row.change == "entered" else -1)
        for row in uow.connection.execute(select(h.c.at, h.c.change).where(h.c.segment == name))
    )
    ends = [now - timedelta(days=every_days * i) for i in range(days // every_days, -1, -1)]
    out, size, i = [], 0, 0
    previous: datetime | None = None
    for end in ends:
        entered = left = 0
        while i < len(rows) and rows[i][0] <= end:
            size += rows[i][1]
            if previous is not None and rows[i][0] > previous:
                entered += rows[i][1] > 0
                left += rows[i][1] < 0
            i += 1
        out.append({"at": end.astimezone(UTC).isoformat(), "members": size, "entered": entered, "left": left})
        previous = end
    return out


def lead_automation(uow: UnitOfWork, lead_id: int) -> dict[str, Any]:
    """A lead's segments (now and their history), tags, workflow runs and every step of them."""
    conn = uow.connection
    m, h, t = schema.segment_members, schema.segment_history, schema.lead_tags
    e, log = schema.workflow_enrolments, schema.workflow_log
    return {
        "segments": [
            {"segment": row.segment, "entered_at": row.entered_at.isoformat()}
            for row in conn.execute(select(m).where(m.c.lead_id == lead_id).order_by(m.c.segment))
        ],
        "segment_history": [
            {"segment": row.segment, "change": row.change, "at": row.at.isoformat(), "by": row.by}
            for row in conn.execute(select(h).where(h.c.lead_id == lead_id).order_by(h.c.at, h.c.id))
        ],
        "tags": list(conn.execute(select(t.c.tag).where(t.c.lead_id == lead_id).order_by(t.c.tag)).scalars()),
        "workflows": [
            {
                "id": row.id,
                "workflow": row.workflow,
                "status": row.status,
                "next_step": row.step,
                "next_run_at": row.next_run_at.isoformat() if row.next_run_at else None,
                "waiting_for": row.waiting_for,
                "trigger": row.trigger,
                "enrolled_at": row.enrolled_at.isoformat(),
                "finished_at": row.finished_at.isoformat() if row.finished_at else None,
                "outcome": row.outcome,
            }
            for row in conn.execute(select(e).where(e.c.lead_id == lead_id).order_by(e.c.enrolled_at, e.c.id))
        ],
        "log": [
            {
                "enrolment": row.enrolment_id,
                "workflow": row.workflow,
                "step": row.step,
                "action": row.action,
                "outcome": row.outcome,
                "detail": row.detail,
                "at": row.at.isoformat(),
            }
            for row in conn.execute(select(log).where(log.c.lead_id == lead_id).order_by(log.c.at, log.c.id))
        ],
    }


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    name: str
    description: str | None
    definition: dict[str, Any]
    version: str
    active: bool
    runs: dict[str, int]  # by status
    steps: list[str]
    trigger: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "definition": self.definition,
            "version": self.version,
            "active": self.active,
            "runs": self.runs,
            "trigger": self.trigger,
            "steps": self.steps,
        }


def list_workflows(uow: UnitOfWork) -> list[WorkflowInfo]:
    conn = uow.connection
    w, e = schema.workflows, schema.workflow_enrolments
    runs: dict[str, dict[str, int]] = defaultdict(dict)
    for name, status, n in conn.execute(
        select(e.c.workflow, e.c.status, func.count()).group_by(e.c.workflow, e.c.status)
    ):
        runs[name][status] = int(n)
    out = []
    for row in conn.execute(select(w).order_by(w.c.name)):
        definition = json.loads(row.document)
        workflow = load_workflow(definition, f"workflow {row.name}")
        out.append(
            WorkflowInfo(
                row.name,
                row.description,
                definition,
                row.version,
                row.active,
                runs.get(row.name, {}),
                [s.describe() for s in workflow.steps],
                workflow.trigger.describe(),
            )
        )
    return out


def workflow_info(uow: UnitOfWork, name: str) -> WorkflowInfo:
    found = next((w for w in list_workflows(uow) if w.name == name), None)
    if found is None:
        raise NotFound(f"no workflow {name!r}")
    return found


# --- merges and erasure --------------------------------------------------------------------------


def move_lead(conn: Connection, gone: int, kept: int, now: datetime) -> None:
    """A merge: the duplicate's tags, segment history, workflow runs and log move to the
    kept lead. Its current memberships go (the kept lead is tested again after the merge), and
    a run of a workflow the kept lead is running too is stopped rather than run twice."""
    e, t = schema.workflow_enrolments, schema.lead_tags
    # Whatever the kept lead runs or ran is not run again for the same person.
    running = set(conn.execute(select(e.c.workflow).where(e.c.lead_id == kept)).scalars())
    for run in conn.execute(
        select(e.c.id, e.c.workflow, e.c.step).where(
            e.c.lead_id == gone, e.c.status == "active", e.c.workflow.in_(running)
        )
    ).all():
        finish(
            conn,
            run.id,
            gone,
            run.workflow,
            run.step,
            "stopped",
            "merge",
            f"merged into lead #{kept}, which runs or ran it",
            now,
        )
    kept_tags = set(conn.execute(select(t.c.tag).where(t.c.lead_id == kept)).scalars())
    conn.execute(delete(t).where(t.c.lead_id == gone, t.c.tag.in_(sorted(kept_tags))))
    for table in (t, schema.segment_history, e, schema.workflow_log):
        conn.execute(update(table).where(table.c.lead_id == gone).values(lead_id=kept))
    m = schema.segment_members
    left = list(conn.execute(select(m.c.segment).where(m.c.lead_id == gone)).scalars())
    _write_history(conn, [(name, kept, "left") for name in left], now, BATCH)  # the counts stay whole
    conn.execute(delete(m).where(m.c.lead_id == gone))


def forget_lead(conn: Connection, lead_id: int, now: datetime) -> None:
    """An erasure: the lead leaves its segments (recorded), loses its tags, and its runs stop (its
    emails are cleared by `email.forget_lead_emails`)."""
    m, e = schema.segment_members, schema.workflow_enrolments
    left = list(conn.execute(select(m.c.segment).where(m.c.lead_id == lead_id)).scalars())
    _write_history(conn, [(name, lead_id, "left") for name in left], now, BATCH)
    conn.execute(delete(m).where(m.c.lead_id == lead_id))
    conn.execute(delete(schema.lead_tags).where(schema.lead_tags.c.lead_id == lead_id))
    for run in conn.execute(
        select(e.c.id, e.c.workflow, e.c.step).where(e.c.lead_id == lead_id, e.c.status == "active")
    ).all():
        finish(conn, run.id, lead_id, run.workflow, run.step, "stopped", "erase", "the lead was erased", now)
