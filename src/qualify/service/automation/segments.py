"""Segment membership: who is in each segment, tested online on every change and in batch.

Online, the `segments` reaction of the after-change pipeline (service/pipeline.py) runs inside
the unit of work of every change to leads (events, upserts, stage actions, workflow steps): it
tests the touched leads against every segment, records who entered and left, and leaves that in
`run.notes` for the `workflows` reaction (enrolment). In batch, `refresh_segments` tests every
lead, a chunk per transaction, with the same code, and enrols the workflows its moves trigger;
the worker runs it (`refresh_due`) for segments that time alone can change (windows, days in
stage, decaying scores), and the pipeline's field-refresh listener `refresh_reading` for the
segments that test a field moved for every lead at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select, tuple_, update

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.automation import LeadFacts, Segment
from qualify.domain.errors import InvalidInput, NotFound
from qualify.service.audit import record_audit
from qualify.service.automation.definitions import Definitions, definitions
from qualify.service.automation.enrolment import enrol_triggered
from qualify.service.automation.facts import lead_facts
from qualify.service.automation.history import BATCH, ONLINE, PEOPLE, SegmentChange, write_history
from qualify.service.lifecycle.lead_ops import BulkResult, bulk_ids
from qualify.service.pipeline import Changed, Run
from qualify.service.unit_of_work import UnitOfWork, Workspace, utcnow

# The bulk actions of the lead list that fill a static segment (beside lifecycle.lead_ops's).
SEGMENT_ACTIONS = {"segment": "add to a static segment", "unsegment": "remove from a static segment"}


def _members(conn: Connection, lead_ids: Sequence[int], names: Iterable[str] | None = None) -> set[tuple[str, int]]:
    m = schema.segment_members
    out: set[tuple[str, int]] = set()
    for part in repo.chunks(sorted(set(lead_ids))):
        query = select(m.c.segment, m.c.lead_id).where(m.c.lead_id.in_(part))
        if names is not None:
            query = query.where(m.c.segment.in_(sorted(names)))
        out.update((row.segment, row.lead_id) for row in conn.execute(query))
    return out


def _tested(
    segments: Sequence[Segment],
    lead_ids: Sequence[int],
    facts: dict[int, LeadFacts],
    current: set[tuple[str, int]],
    at: float,
) -> Iterator[tuple[str, int, bool, bool]]:
    """Each (segment, lead): whether the lead is in it now, and whether it was a member."""
    for lead_id in lead_ids:
        lead = facts.get(lead_id)  # absent: erased, so in no segment
        for segment in segments:
            was = (segment.name, lead_id) in current
            yield segment.name, lead_id, lead is not None and segment.holds(lead, at, member=was), was


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
    current = _members(conn, lead_ids, [s.name for s in segments])
    changes: list[SegmentChange] = [
        (name, lead_id, "entered" if inside else "left")
        for name, lead_id, inside, was in _tested(segments, lead_ids, facts, current, now.timestamp())
        if inside != was
    ]
    entered = [{"segment": s, "lead_id": i, "entered_at": now} for s, i, c in changes if c == "entered"]
    left = [(s, i) for s, i, c in changes if c == "left"]
    if entered:
        conn.execute(schema.segment_members.insert(), entered)
    m = schema.segment_members
    for part in repo.chunks(left):
        conn.execute(delete(m).where(tuple_(m.c.segment, m.c.lead_id).in_(list(part))))
    write_history(conn, changes, now, by)
    return changes


def react_segments(run: Run) -> None:
    """Reaction `segments`: the touched leads tested against every segment, in the change's
    transaction; entries and exits recorded. Leaves the facts and the memberships it changed in
    `run.notes` for the workflows' triggers."""
    changed = run.changed
    found = run.notes["definitions"] = definitions(run.uow, run.configured.automation)
    if found.empty:
        return
    conn = run.uow.connection
    ids = changed.tested()
    facts = lead_facts(conn, ids, changed.now, found.needs, known=changed.records)
    run.notes["segments"] = (evaluate_segments(conn, found.segments, ids, facts, changed.now, ONLINE), facts)


def refresh_reading(workspace: Workspace, name: str) -> None:
    """A field moved for every lead at once (e.g. `probability`): the segments that test it, tested again."""
    with workspace.unit_of_work(read_only=True) as uow:
        reading = [s.name for s in definitions(uow).segments if name in s.tests.fields()]
    if reading:
        refresh_segments(workspace, names=reading)


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
            facts = lead_facts(conn, ids, now, probe.needs)
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


def set_members(
    uow: UnitOfWork, name: str, lead_ids: Sequence[int], *, add: bool, by: str, now: datetime | None = None
) -> BulkResult:
    """Put leads in a static segment (`add`) or take them out: the entries and exits are recorded
    as any segment's are (`by` people), the workflows an entry or exit triggers enrol the leads,
    and the audit log names who did it. Erased or unknown leads, and leads already in (or not in)
    the segment, are left as they were, each with why."""
    now = now or utcnow()
    action = "segment" if add else "unsegment"
    ids = bulk_ids(lead_ids)
    conn = uow.connection
    found = definitions(uow)
    segment = next((s for s in found.segments if s.name == name), None)
    if segment is None:
        raise NotFound(f"no segment {name!r}")
    if not segment.static:
        raise InvalidInput(
            f"{name!r} is dynamic: its members are the leads its tests hold for, so nobody adds or "
            "removes them by hand; make a static segment (static: true) for a list people fill",
            field="segment",
        )
    leads = schema.leads
    present = set(conn.execute(select(leads.c.id).where(leads.c.id.in_(ids), leads.c.erased_at.is_(None))).scalars())
    members = {lead_id for _, lead_id in _members(conn, sorted(present), [name])}
    skipped = {i: "no such lead" for i in ids if i not in present}
    skipped |= {i: f"already {'in' if add else 'not in'} {name}" for i in present if (i in members) == add}
    moving = [i for i in ids if i in present and i not in skipped]
    changes: list[SegmentChange] = [(name, i, "entered" if add else "left") for i in moving]
    m = schema.segment_members
    if add and moving:
        conn.execute(m.insert(), [{"segment": name, "lead_id": i, "entered_at": now} for i in moving])
    for part in repo.chunks(moving if not add else []):
        conn.execute(delete(m).where(m.c.segment == name, m.c.lead_id.in_(list(part))))
    write_history(conn, changes, now, PEOPLE)
    if found.workflows and changes:
        facts = lead_facts(conn, moving, now, found.needs)
        enrol_triggered(conn, found.workflows, Changed(now, lead_ids=moving), changes, facts)
    record_audit(
        uow,
        actor=by,
        action=f"segment.{'add' if add else 'remove'}",
        target=name,
        details={"changed": moving, "skipped": sorted(skipped)},
        at=now,
    )
    return BulkResult(action, moving, skipped, SEGMENT_ACTIONS[action])


@dataclass
class SegmentPreview:
    """What a dry run found for one segment."""

    members: int = 0
    entering: int = 0  # members it would have that are not members now
    leaving: int = 0
    sample: list[int] = field(default_factory=list)  # lead ids
    entering_sample: list[int] = field(default_factory=list)


def preview_segments(
    workspace: Workspace, segments: Sequence[Segment], now: datetime | None = None, *, sample: int = 20
) -> dict[str, SegmentPreview]:
    """A dry run: who would be in each of `segments` now, without writing anything. For each, the
    members it would have, how many of them would enter (not members now) and leave, and the
    first `sample` lead ids of each kind. Read a chunk of leads per read-only unit of work."""
    now = now or utcnow()
    at = now.timestamp()
    out = {s.name: SegmentPreview() for s in segments}
    if not segments:
        return out
    needs = Definitions(tuple(segments), ()).needs
    names = [s.name for s in segments]
    after_id = 0
    while True:
        with workspace.unit_of_work(read_only=True) as uow:
            conn = uow.connection
            leads = schema.leads
            ids = list(
                conn.execute(
                    select(leads.c.id).where(leads.c.id > after_id, leads.c.erased_at.is_(None)).order_by(leads.c.id)
                    .limit(1000)
                ).scalars()
            )  # fmt: skip
            if not ids:
                return out
            facts = lead_facts(conn, ids, now, needs)
            current = _members(conn, ids, names)
        for name, lead_id, inside, was in _tested(segments, ids, facts, current, at):
            seen = out[name]
            if inside:
                seen.members += 1
                if len(seen.sample) < sample:
                    seen.sample.append(lead_id)
            if inside and not was:
                seen.entering += 1
                if len(seen.entering_sample) < sample:
                    seen.entering_sample.append(lead_id)
            elif was and not inside:
                seen.leaving += 1
        after_id = ids[-1]
