"""Merging duplicate leads, and the data subject's rights: export everything, erase a lead."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.adapters.repository import LeadRecord
from qualify.domain.engagement import EngagementState
from qualify.domain.errors import InvalidInput, NotFound
from qualify.domain.records import LEAD_FIELDS, merge_into
from qualify.service import pipeline
from qualify.service.audit import record_audit
from qualify.service.lifecycle.rescoring import rescore_leads
from qualify.service.lifecycle.stage_facts import forget_facts, merge_facts
from qualify.service.unit_of_work import UnitOfWork, utcnow

_PERSONAL = (*LEAD_FIELDS,)


@dataclass(frozen=True, slots=True)
class MergeResult:
    kept: str
    merged: str
    events_moved: int


def _existing(uow: UnitOfWork, key: str) -> LeadRecord:
    record = repo.find_lead(uow.connection, key, for_update=True)
    if record is None or record.id is None:
        raise NotFound(f"no lead {key!r}")
    return record


def merge_leads(
    uow: UnitOfWork, keep: str, duplicate: str, *, by: str, key_id: str | None = None, now: datetime | None = None
) -> MergeResult:
    """Fold `duplicate` into `keep`: its events move over, its empty-in-`keep` fields fill in, its
    keys become aliases of `keep` (later events for them land on `keep`), and it is deleted.

    `keep` keeps its stage and history; its scores are recomputed from all the events. The
    duplicate's own stage history is dropped with it, and summarised in the audit log.
    """
    now = now or utcnow()
    kept, gone = _existing(uow, keep), _existing(uow, duplicate)
    if kept.id == gone.id:
        raise InvalidInput("a lead cannot be merged into itself", field="duplicate")
    assert kept.id is not None and gone.id is not None
    conn = uow.connection
    moved = conn.execute(
        update(schema.events).where(schema.events.c.lead_id == gone.id).values(lead_id=kept.id)
    ).rowcount
    history = conn.execute(delete(schema.stage_history).where(schema.stage_history.c.lead_id == gone.id)).rowcount
    merge_facts(uow, gone.id, kept.id)
    conn.execute(update(schema.assignments).where(schema.assignments.c.lead_id == gone.id).values(lead_id=kept.id))
    conn.execute(update(schema.lead_aliases).where(schema.lead_aliases.c.lead_id == gone.id).values(lead_id=kept.id))
    conn.execute(update(schema.lead_notes).where(schema.lead_notes.c.lead_id == gone.id).values(lead_id=kept.id))
    pipeline.of(uow.workspace).lead_merged(uow, gone.id, kept.id, now)  # automation, email, web visitors follow
    fill = {
        name: getattr(gone.lead, name)
        for name in _PERSONAL
        if getattr(kept.lead, name) in (None, "") and getattr(gone.lead, name) not in (None, "")
    }
    # An opt-out given under either address holds for the person: never lost in a merge.
    for flag in ("do_not_email", "do_not_call"):
        if getattr(gone.lead, flag) and not getattr(kept.lead, flag):
            fill[flag] = True
    conn.execute(delete(schema.leads).where(schema.leads.c.id == gone.id))
    conn.execute(
        schema.lead_aliases.insert().values(
            email=gone.lead.email, external_id=gone.lead.external_id, lead_id=kept.id, merged_at=now
        )
    )
    if fill or gone.lead.attributes:
        incoming = type(kept.lead).stored(**fill, attributes={**gone.lead.attributes, **kept.lead.attributes})
        for flag in ("do_not_email", "do_not_call"):
            setattr(incoming, flag, fill.get(flag))
        merge_into(kept.lead, incoming, _PERSONAL)
        values = {name: getattr(kept.lead, name) for name in _PERSONAL} | {
            "attributes": kept.lead.attributes,
            "updated_at": now,
        }
        conn.execute(update(schema.leads).where(schema.leads.c.id == kept.id).values(**values))
    rescore_leads(uow, [kept.id], now)
    record_audit(
        uow,
        actor=by,
        key_id=key_id,
        action="lead.merge",
        target=kept.lead.key,
        at=now,
        # Ids and field names only: an audit entry must not outlive an erasure with personal data in it.
        details={
            "lead_id": kept.id,
            "merged_lead_id": gone.id,
            "merged_stage": gone.state.stage.value,
            "events_moved": moved,
            "history_dropped": history,
            "filled": sorted(fill),
        },
    )
    return MergeResult(kept.lead.key, gone.lead.key, moved)


def export_lead(uow: UnitOfWork, key: str) -> dict[str, Any]:
    """Everything the workspace holds about one person, as one JSON-ready document."""
    record = _existing(uow, key)
    conn = uow.connection
    lead_id = record.id
    row = conn.execute(select(schema.leads).where(schema.leads.c.id == lead_id)).one()._mapping
    lead = {k: v for k, v in row.items() if k != "engagement_state"}
    account = None
    if record.account_id is not None:
        account = dict(
            conn.execute(select(schema.accounts).where(schema.accounts.c.id == record.account_id)).one()._mapping
        )
    e, h, a, al = schema.events, schema.stage_history, schema.assignments, schema.lead_aliases
    return {
        "lead": lead,
        "account": account,
        "events": [dict(r._mapping) for r in conn.execute(select(e).where(e.c.lead_id == lead_id).order_by(e.c.id))],
        "stage_history": [
            dict(r._mapping) for r in conn.execute(select(h).where(h.c.lead_id == lead_id).order_by(h.c.id))
        ],
        "assignments": [
            dict(r._mapping) for r in conn.execute(select(a).where(a.c.lead_id == lead_id).order_by(a.c.id))
        ],
        "stage_facts": [
            dict(r._mapping)
            for r in conn.execute(select(schema.stage_facts).where(schema.stage_facts.c.lead_id == lead_id))
        ],
        "deals": [
            dict(r._mapping) for r in conn.execute(select(schema.deals).where(schema.deals.c.lead_id == lead_id))
        ],
        "aliases": [dict(r._mapping) for r in conn.execute(select(al).where(al.c.lead_id == lead_id))],
        "notes": [
            dict(r._mapping)
            for r in conn.execute(select(schema.lead_notes).where(schema.lead_notes.c.lead_id == lead_id))
        ],
        "audit": [
            dict(r._mapping)
            for r in conn.execute(
                select(schema.audit_log)
                .where(schema.audit_log.c.target == record.lead.key)
                .order_by(schema.audit_log.c.id)
            )
        ],
    }


def erase_lead(uow: UnitOfWork, key: str, *, by: str, key_id: str | None = None, now: datetime | None = None) -> int:
    """Erase a person: their events, personal fields, notes and aliases go; the row stays,
    nameless, so the funnel's counts and conversion rates do not change. Every lead of the
    person (their earlier journeys) is erased with it. Returns the lead id."""
    now = now or utcnow()
    record = _existing(uow, key)
    assert record.id is not None
    person = record.person_email or record.lead.email
    leads = schema.leads
    journeys: list[int] = (
        list(
            uow.connection.execute(
                select(leads.c.id).where(
                    leads.c.person_email == person, leads.c.id != record.id, leads.c.erased_at.is_(None)
                )
            ).scalars()
        )
        if person
        else []
    )
    for other in journeys:
        found = repo.find_lead(uow.connection, f"#{other}", for_update=True)
        if found is not None:
            _erase(uow, found, by, key_id, now)
    return _erase(uow, record, by, key_id, now)


def _erase(uow: UnitOfWork, record: LeadRecord, by: str, key_id: str | None, now: datetime) -> int:
    lead_id = record.id
    assert lead_id is not None
    conn = uow.connection
    events = conn.execute(delete(schema.events).where(schema.events.c.lead_id == lead_id)).rowcount
    aliases = schema.lead_aliases
    alias_keys = [
        key
        for row in conn.execute(select(aliases.c.email, aliases.c.external_id).where(aliases.c.lead_id == lead_id))
        for key in (row.email, row.external_id)
        if key
    ]
    conn.execute(delete(aliases).where(aliases.c.lead_id == lead_id))
    pipeline.of(uow.workspace).lead_erased(uow, lead_id, now)  # automation, email, web visitors forget
    conn.execute(update(schema.stage_history).where(schema.stage_history.c.lead_id == lead_id).values(note=None))
    conn.execute(delete(schema.lead_notes).where(schema.lead_notes.c.lead_id == lead_id))
    forget_facts(uow, lead_id)
    conn.execute(
        update(schema.leads)
        .where(schema.leads.c.id == lead_id)
        .values(
            **dict.fromkeys(n for n in _PERSONAL if not n.startswith("do_not_")),
            do_not_email=True,
            do_not_call=True,
            attributes={},
            engagement_state=EngagementState().to_json(),
            engagement_score=0.0,
            last_event_at=None,
            probability=None,
            probability_at=None,
            predictive_version=None,
            person_email=None,
            erased_at=now,
            updated_at=now,
        )
    )
    _scrub_traces(conn, lead_id, [record.lead.key, *alias_keys])
    record_audit(
        uow,
        actor=by,
        key_id=key_id,
        action="lead.erase",
        target=f"#{lead_id}",
        at=now,
        details={"events_deleted": events},
    )
    return lead_id


def _scrub_traces(conn: Any, lead_id: int, keys: list[str]) -> None:
    """Personal data elsewhere than the lead row: the audit log names the lead by id only (the
    erased key would itself be personal data), and queued webhook payloads keep only the id."""
    log = schema.audit_log
    conn.execute(update(log).where(log.c.target.in_(keys)).values(target=f"#{lead_id}", details={"redacted": True}))
    deliveries = schema.webhook_deliveries
    for row in conn.execute(select(deliveries.c.id, deliveries.c.payload)).all():
        lead = row.payload.get("lead") if isinstance(row.payload, dict) else None
        if isinstance(lead, dict) and lead.get("id") == lead_id:
            redacted = {**row.payload, "lead": {"id": lead_id, "email": None, "external_id": None}}
            conn.execute(update(deliveries).where(deliveries.c.id == row.id).values(payload=redacted))
