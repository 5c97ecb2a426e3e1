"""Ingest events: idempotent by event_id, scored and stage-evaluated one by one, written in bulk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from qualify.adapters import repository as repo
from qualify.adapters.repository import LeadRecord
from qualify.domain.access import Role
from qualify.domain.engagement import BONUS_EVENT, DAY
from qualify.domain.records import Event, Lead
from qualify.service.lifecycle.lead_batch import LeadBatch
from qualify.service.pipeline import of, react
from qualify.service.unit_of_work import UnitOfWork, utcnow

EventStatus = Literal["accepted", "duplicate", "rejected"]
# How far ahead of the server's clock an event may be dated: senders' clocks drift a little.
CLOCK_SKEW = timedelta(minutes=5)
ACCEPTED: EventStatus = "accepted"
DUPLICATE: EventStatus = "duplicate"
REJECTED: EventStatus = "rejected"


@dataclass(frozen=True, slots=True)
class EventOutcome:
    event_id: str
    status: EventStatus
    reason: str | None = None
    lead: str | None = None
    field: str | None = None  # the field a rejection is about, where it is one field


# A bonus moves a lead's score by up to 100 points: workflows give them, and admins by hand.
BONUS_RESERVED = f"type: {BONUS_EVENT} is reserved for workflow bonuses (or an admin key)"


def sender_refusal(role: Role, event: Event) -> EventOutcome | None:
    """Why a caller of `role` (an API key's) may not send `event`, as its rejection; None when it may.

    Only admins may send a `score_bonus` event themselves: the other roles' are rejected on the
    `type` field before anything is applied. Workflows send theirs without a caller.
    """
    if event.type == BONUS_EVENT and role is not Role.ADMIN:
        return EventOutcome(event.event_id, REJECTED, BONUS_RESERVED, field="type")
    return None


def ingest_events(
    uow: UnitOfWork,
    events: list[Event],
    *,
    create_unknown: bool = True,
    now: datetime | None = None,
    by: str = "event",
    defer_late: bool = False,
    create_from_external_id: bool = True,
    accounts_later: bool = False,
) -> list[EventOutcome]:
    """Apply `events` in order; return one outcome per event, in the same order.

    An event whose `event_id` is already stored (or earlier in the batch) is a duplicate
    and changes nothing. An event for an unknown lead creates it when `create_unknown` (one that
    names it by an external id alone, only when `create_from_external_id` too).
    With `defer_late` (an import of history: the workspace has a history cutoff), an event dated
    before its lead's newest event or stage change is stored without being scored, and its lead
    queued to be rebuilt in time order (`stage_facts.rebuild_pending`), as are the later events
    of a lead already queued: scoring them one by one out of order would be undone anyway.
    With `accounts_later` (the HTTP API's, the event streams' and the web tracker's ingestion),
    the accounts of the leads the events change are left to the worker (`accounts.keep_pending`),
    not kept in this transaction: a batch costs about what it costs without account scoring, and
    an account touched by many batches between two passes is counted once.

    Four steps, each once per batch: load what the batch names, evaluate every event in
    memory through the domain, write, and run the after-change pipeline's reactions.
    """
    now = now or utcnow()
    batch = LeadBatch(uow, uow.active_model(), now, accounts_later=accounts_later)
    stored = _load(batch, events, create_unknown, by, create_from_external_id)
    queued: set[int] | None = None
    if defer_late:
        queued = repo.queued_for_rebuild(uow.connection, [r.id for r in batch.records() if r.id is not None])
    outcomes, rows = _evaluate(batch, events, stored, queued, create_unknown and not create_from_external_id)
    history_before = of(uow.workspace).history_before
    if history_before is not None:
        # An import of history: what the CRM knew when it happened, Qualify knows as of then too
        # (a backtest replays events as they were received).
        for _, row in rows:
            if row["occurred_at"] < history_before:
                row["received_at"] = row["occurred_at"]
    changed = batch.write(rows)
    if batch.late:
        cutoff = of(uow.workspace).cutoff(now) or now
        late = [r.id for r in batch.late.values() if r.id is not None]
        repo.queue_rebuild(uow.connection, late, now=now, history_before=cutoff)
    react(uow, changed, batch)
    return outcomes


def _load(
    batch: LeadBatch, events: list[Event], create_unknown: bool, by: str, create_from_external_id: bool = True
) -> set[str]:
    """The event ids already stored, the leads the events name (scoring state only), and, when
    `create_unknown`, a new lead for each key the store lacks (an external id alone, only when
    `create_from_external_id`). Returns the stored ids."""
    batch.load({e.email for e in events if e.email}, {e.external_id for e in events if e.external_id}, profile=False)
    creating: list[Event] = []
    if create_unknown:
        latest = batch.now + CLOCK_SKEW
        creating = [e for e in events if e.occurred_at <= latest and (e.email or create_from_external_id)]
        unknown = [e for e in creating if batch.get(e.email, e.external_id) is None]
        batch.claim(
            {e.email for e in unknown if e.email}, {e.external_id for e in unknown if e.external_id}, profile=False
        )
    # Read once the leads are locked (their rows, and on PostgreSQL the keys of those to create):
    # a batch that held them first has committed by now, so its events are found as duplicates
    # here instead of failing this batch's insert.
    stored = repo.existing_event_ids(batch.conn, [e.event_id for e in events])
    if creating:
        _create_unknown_leads(batch, creating, stored, by)
    return stored


def _evaluate(
    batch: LeadBatch,
    events: list[Event],
    stored: set[str],
    queued: set[int] | None = None,
    external_ids_off: bool = False,  # unknown leads were created, but not from an external id alone
) -> tuple[list[EventOutcome], list[tuple[LeadRecord, dict[str, Any]]]]:
    """Each event in order through the online evaluator (engagement, then the stage policy), in
    memory: the outcomes, and the event rows to write. Only a late event (dated before the
    lead's newest) reads the store again, for the awards of its day (per-day caps). With `queued`
    (the leads waiting for a rebuild), a late event and every later one of its lead is stored
    unscored, and the lead added to `batch.late`."""
    now = batch.now
    latest = now + CLOCK_SKEW
    outcomes: list[EventOutcome] = []
    rows: list[tuple[LeadRecord, dict[str, Any]]] = []
    seen: set[str] = set()
    evaluator = batch.evaluator
    for event in events:
        if event.event_id in stored or event.event_id in seen:
            outcomes.append(EventOutcome(event.event_id, DUPLICATE, "event_id already ingested"))
            continue
        record = batch.get(event.email, event.external_id)
        if record is None:
            who = event.email or event.external_id
            off = "from an external id alone" if external_ids_off and not event.email else "from events"
            outcomes.append(
                EventOutcome(
                    event.event_id,
                    REJECTED,
                    f"no lead {who} (creating leads {off} is off)",
                    field="email" if event.email else "external_id",
                )
            )
            continue
        if event.occurred_at > latest:
            # Decay run backwards would inflate it beyond reason (a date typo, a skewed clock).
            outcomes.append(
                EventOutcome(
                    event.event_id,
                    REJECTED,
                    f"occurred_at {event.occurred_at.isoformat()} is in the future",
                    field="occurred_at",
                )
            )
            continue
        seen.add(event.event_id)
        timestamp = event.occurred_at.timestamp()
        if queued is not None and _deferred(batch, record, timestamp, queued):
            rows.append((record, _row(event, now, [])))
            outcomes.append(EventOutcome(event.event_id, ACCEPTED, None, record.lead.key))
            continue
        lookup = _DayTotals(batch, record, rows)
        step = evaluator.apply(record.state, event.type, event.properties, timestamp, lookup)
        record.changed = True
        if step.moves:
            batch.record_moves(record, step.moves)
        rows.append((record, _row(event, now, [[a.rule, a.points] for a in step.awards])))
        outcomes.append(EventOutcome(event.event_id, ACCEPTED, None, record.lead.key))
    return outcomes, rows


def _row(event: Event, now: datetime, awards: list[list[Any]]) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "received_at": now,
        "properties": event.properties,
        "awards": awards,
    }


def _deferred(batch: LeadBatch, record: LeadRecord, timestamp: float, queued: set[int]) -> bool:
    """Whether the event waits for its lead's rebuild: the lead is queued already, or the event is
    older than the lead's newest event or stage change (the lead is queued from now on)."""
    state = record.state
    waiting = (record.id is not None and record.id in queued) or id(record) in batch.late
    if not waiting and timestamp >= state.stage_entered and (state.last_event is None or timestamp >= state.last_event):
        return False
    batch.late[id(record)] = record
    return True


def _create_unknown_leads(batch: LeadBatch, events: list[Event], stored: set[str], by: str) -> None:
    """Create every lead the batch names that the store lacks, at the time of its first event.

    "First" is in arrival order, not the earliest time in the batch, so that how events are
    cut into batches never changes when a lead was created.
    """
    unknown = [e for e in events if e.event_id not in stored and batch.get(e.email, e.external_id) is None]
    batch.ensure_accounts(Lead(email=e.email, external_id=e.external_id).account_domain or "" for e in unknown)
    for event in unknown:
        # One at a time: a lead created for {external_id: X} is the lead of a later
        # {email: e, external_id: X} too, instead of a second lead with the same key.
        if batch.get(event.email, event.external_id) is None:
            batch.create(
                Lead(email=event.email, external_id=event.external_id, created_at=event.occurred_at),
                at=event.occurred_at,
                by=by,
            )


class _DayTotals:
    """Per-day cap lookup for a late event: stored awards of that day plus this batch's."""

    def __init__(self, batch: LeadBatch, record: LeadRecord, rows: list[tuple[LeadRecord, dict[str, Any]]]) -> None:
        self.batch, self.record, self.rows = batch, record, rows

    def __call__(self, rule: str, day: int) -> float:
        start = datetime.fromtimestamp(day * DAY, UTC)
        end = start + timedelta(days=1)
        awards: list[list[Any]] = []
        if self.record.id is not None:
            awards += repo.awards_between(self.batch.conn, self.record.id, start, end)
        awards += [
            award
            for record, row in self.rows
            if record is self.record and start <= row["occurred_at"] < end
            for award in row["awards"]
        ]
        return float(sum(abs(points) for name, points in awards if name == rule))
