"""What the segment and workflow tests know about each lead (`LeadFacts`), read from the store.

One read serves every test of a change: the lead's profile and account values, its stage and
scores as of now, its tags, and of its events only the kinds some test looks at, each only as far
back as a test looks, with properties only where a test reads them. The online reactions, the
batch refresh (segments, enrolment) and the worker's exit tests (runs) all judge leads on these.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, case, null, or_, select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.automation import EventNeed, LeadFacts, SeenEvent
from qualify.domain.engagement import DAY
from qualify.domain.fit import profile_values


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
