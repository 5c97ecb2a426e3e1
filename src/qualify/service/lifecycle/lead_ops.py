"""Changes people and workflows make to leads besides the lifecycle's actions: tags, owner, a
move to nurture; and the dashboard's bulk actions, which apply one of them to many leads at once.

Each single change runs the after-change reactions (segments and workflow triggers test the
lead again); a bulk action is one transaction and one audit entry naming how many leads it
changed and which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, func, select, update

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.errors import InvalidInput, NotFound
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.records import check_text
from qualify.service.audit import record_audit
from qualify.service.lifecycle.lead_batch import LeadBatch
from qualify.service.pipeline import Changed, react
from qualify.service.unit_of_work import UnitOfWork, utcnow

NURTURABLE = (Stage.LEAD, Stage.MQL)  # parked in nurture by marketing or a workflow; later stages are sales' call
MAX_TAG, MAX_OWNER, MAX_REASON, MAX_NOTE = 100, 200, 300, 4000
BULK_MAX = 1000  # leads one bulk action may change: a page of the list, or a selection of them
BULK_ACTIONS = {
    "assign": "assign owner",
    "tag": "add tag",
    "untag": "remove tag",
    "nurture": "move to nurture",
}
# The longest value each bulk action takes: an owner, a tag, a reason.
_VALUE_LIMITS = {"assign": MAX_OWNER, "tag": MAX_TAG, "untag": MAX_TAG, "nurture": MAX_REASON}


def set_tag(uow: UnitOfWork, lead_id: int, tag: str, add: bool, *, by: str, now: datetime) -> bool:
    """Add or remove a tag (tags match whatever their case, as segments test them: "VIP" and
    "vip" are one tag); returns whether anything changed."""
    conn = uow.connection
    t = schema.lead_tags
    same = and_(t.c.lead_id == lead_id, func.lower(t.c.tag) == tag.lower())
    present = conn.execute(select(t.c.tag).where(same)).first() is not None
    if add == present:
        return False
    if add:
        conn.execute(t.insert().values(lead_id=lead_id, tag=tag, added_at=now, by=by[:200]))
    else:
        conn.execute(delete(t).where(same))
    react(uow, Changed(now, lead_ids=[lead_id]))
    return True


def move_to_nurture(
    uow: UnitOfWork, lead_id: int, *, by: str, reason: str, now: datetime, actor: Actor = Actor.USER
) -> tuple[bool, str]:
    """Park a lead or MQL in nurture (its decay-out timers run first); returns whether it moved,
    and what happened in words."""
    record = repo.find_lead(uow.connection, f"#{lead_id}", for_update=True)
    assert record is not None
    batch = LeadBatch(uow, uow.active_model(), now)
    batch.remember(record)
    timer_moves = batch.evaluator.run_timers(record.state, now.timestamp())
    if timer_moves:
        batch.record_moves(record, timer_moves)
    before = record.state.stage
    if before not in NURTURABLE:
        if timer_moves:
            _write(uow, batch)
        return False, f"the lead is {before.value}: only {', '.join(s.value for s in NURTURABLE)} go to nurture"
    batch.record_history(record, before, Stage.NURTURE, now, actor, by[:200], reason[:MAX_REASON])
    record.state.stage = Stage.NURTURE
    record.state.stage_entered = now.timestamp()
    record.changed = True
    _write(uow, batch)
    return True, f"moved from {before.value} to nurture"


def owner_of(uow: UnitOfWork, lead_id: int) -> str | None:
    """The lead's owner (None: nobody's), or NotFound when there is no such lead (or it was erased)."""
    leads = schema.leads
    found = uow.connection.execute(
        select(leads.c.owner).where(leads.c.id == lead_id, leads.c.erased_at.is_(None))
    ).first()
    if found is None:
        raise NotFound(f"no lead #{lead_id}")
    owner: str | None = found.owner
    return owner


def add_note(uow: UnitOfWork, lead_id: int, text: str, *, by: str, now: datetime | None = None) -> None:
    """A person's note on a lead, kept with its history (and in the audit log)."""
    text = text.strip()
    if not text:
        raise InvalidInput("write something", field="note")
    check_text(text, "note", MAX_NOTE)
    now = now or utcnow()
    uow.connection.execute(schema.lead_notes.insert().values(lead_id=lead_id, at=now, by=by[:200], text=text))
    record_audit(uow, actor=by, action="lead.note", target=f"#{lead_id}", at=now)


def notes_of(uow: UnitOfWork, lead_id: int) -> list[dict[str, object]]:
    """The lead's notes, newest first."""
    notes = schema.lead_notes
    rows = uow.connection.execute(
        select(notes.c.at, notes.c.by, notes.c.text).where(notes.c.lead_id == lead_id).order_by(notes.c.at.desc())
    )
    return [dict(row._mapping) for row in rows]


def _write(uow: UnitOfWork, batch: LeadBatch) -> None:
    changed = batch.write()
    changed.judge = False  # a person or a workflow decided: not judged again on the probability
    react(uow, changed, batch)


@dataclass(frozen=True, slots=True)
class BulkResult:
    action: str
    changed: list[int]
    skipped: dict[int, str]  # lead id → why it was left as it was
    words: str = ""  # the action in words (BULK_ACTIONS' by default)

    def summary(self) -> str:
        what = self.words or BULK_ACTIONS[self.action]
        said = f"{what}: {len(self.changed):,} lead(s) changed"
        return f"{said}, {len(self.skipped):,} left as they were" if self.skipped else said


def bulk_action(
    uow: UnitOfWork,
    lead_ids: Sequence[int],
    action: str,
    value: str = "",
    *,
    by: str,
    now: datetime | None = None,
) -> BulkResult:
    """Apply one action to every lead named: `assign` (value: the new owner), `tag` and `untag`
    (value: the tag), `nurture` (value: the reason). Erased or unknown ids are skipped."""
    now = now or utcnow()
    if action not in BULK_ACTIONS:
        raise InvalidInput(
            f"unknown bulk action {action!r}; expected one of: {', '.join(BULK_ACTIONS)}", field="action"
        )
    ids = bulk_ids(lead_ids)
    value = value.strip()
    if action in ("assign", "tag", "untag") and not value:
        raise InvalidInput(f"say the {'owner' if action == 'assign' else 'tag'}", field="value")
    check_text(value, "value", _VALUE_LIMITS[action])
    leads = schema.leads
    found = set(
        uow.connection.execute(select(leads.c.id).where(leads.c.id.in_(ids), leads.c.erased_at.is_(None))).scalars()
    )
    changed: list[int] = []
    skipped: dict[int, str] = {i: "no such lead" for i in ids if i not in found}
    present = [i for i in ids if i in found]
    if action == "assign":
        changed, skipped_now = _assign(uow, present, value, by, now)
        skipped |= skipped_now
    for lead_id in present if action != "assign" else ():
        if action == "nurture":
            moved, why = move_to_nurture(uow, lead_id, by=by, reason=value or f"bulk action by {by}", now=now)
        else:
            moved = set_tag(uow, lead_id, value, action == "tag", by=by, now=now)
            why = f"already {'tagged' if action == 'tag' else 'not tagged'} {value!r}"
        if moved:
            changed.append(lead_id)
        else:
            skipped[lead_id] = why
    record_audit(
        uow,
        actor=by,
        action=f"lead.bulk.{action}",
        target=f"{len(changed)} lead(s)",
        details={"value": value, "changed": changed, "skipped": sorted(skipped)},
        at=now,
    )
    return BulkResult(action, changed, skipped)


def bulk_ids(lead_ids: Sequence[int]) -> list[int]:
    """The leads one bulk action names, each once, in order: at least one and at most BULK_MAX."""
    ids = list(dict.fromkeys(lead_ids))
    if not ids:
        raise InvalidInput("select at least one lead", field="leads")
    if len(ids) > BULK_MAX:
        raise InvalidInput(f"{len(ids):,} leads selected; one bulk action changes at most {BULK_MAX:,}", field="leads")
    return ids


def _assign(uow: UnitOfWork, ids: list[int], owner: str, by: str, now: datetime) -> tuple[list[int], dict[int, str]]:
    """Give the leads to `owner` (an assignment each, counted in the rep's weekly capacity)."""
    leads = schema.leads
    rows = uow.connection.execute(select(leads.c.id, leads.c.owner).where(leads.c.id.in_(ids))).all()
    keep = {row.id for row in rows if row.owner == owner}
    moving = [i for i in ids if i not in keep]
    if moving:
        rule = f"assigned by {by}"[:200]
        uow.connection.execute(
            update(leads)
            .where(leads.c.id.in_(moving))
            .values(owner=owner, owner_rule=rule, owner_assigned_at=now, updated_at=now)
        )
        uow.connection.execute(
            schema.assignments.insert(), [{"lead_id": i, "owner": owner, "rule": rule, "at": now} for i in moving]
        )
        react(uow, Changed(now, lead_ids=moving))
    return moving, dict.fromkeys(keep, f"already {owner}'s")
