"""What the segment and workflow tests know about each lead (`LeadFacts`), read from the store.

One read serves every test of a change, and reads only what some test needs: the lead's profile
and account values where a test reads one, its stage and scores as of now (from memory for the
leads the change has just written), its tags where a test looks at them, and of its events only
counts made by the store, each only as far back as a test looks: an event test without `where`
gets its count, one with `where` the counts of its events per distinct properties document, each
document decoded and tested once (a lead's 20,000 page views are a few distinct URLs). The online
reactions, the batch refresh (segments, enrolment) and the worker's exit tests (runs) all judge
leads on these.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Text, and_, case, cast, func, or_, select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.adapters.json_codec import loads
from qualify.adapters.repository import LeadRecord
from qualify.domain.automation import ACCOUNT_STATE_FIELDS, FactNeeds, LeadFacts, SeenEvent, ValueCount
from qualify.domain.engagement import DAY
from qualify.domain.fit import profile_values
from qualify.domain.records import Lead


def lead_facts(
    conn: Connection,
    lead_ids: Sequence[int],
    now: datetime,
    needs: FactNeeds,
    *,
    known: Iterable[LeadRecord] = (),
) -> dict[int, LeadFacts]:
    """What the tests need to know about each lead, read from the store (erased leads are left out).

    Only what `needs` names is read: the profile and account values only where a test reads one,
    the tags only where a test looks at them, and of the events only counts, each as far back as
    some test looks (`needs.events` alone reads events one by one: what the counts are tested
    against). `known` are leads as the caller's transaction has just written them: their scoring
    state is taken from memory, and of their rows only the owner and probability (and the profile,
    if needed) are read.
    """
    leads = schema.leads
    at = now.timestamp()
    in_memory = {r.id: r for r in known if r.id is not None}
    profiles, scores = needs.profile, bool(needs.fields & {"engagement_score", "score"})
    ids = sorted(set(lead_ids))
    found: list[tuple[LeadRecord, Lead | None, Any, Any]] = []  # record, profile, owner, probability
    narrow = [leads.c.id, leads.c.owner, leads.c.probability]
    if profiles:
        narrow += [leads.c[name] for name in repo.PROFILE_COLUMNS]
    for part in repo.chunks([i for i in ids if i in in_memory]):
        query = select(*narrow).where(leads.c.id.in_(part), leads.c.erased_at.is_(None))
        for row in conn.execute(query).all():
            record = in_memory[row.id]
            profile = repo.profile_from_row(row, record.created_at) if profiles else None
            found.append((record, profile, row.owner, row.probability))
    for part in repo.chunks([i for i in ids if i not in in_memory]):
        for row in conn.execute(select(leads).where(leads.c.id.in_(part), leads.c.erased_at.is_(None))):
            record = repo.lead_from_row(row)
            found.append((record, record.lead, row.owner, row.probability))
    accounts = (
        repo.accounts_by_id(conn, {r.account_id for r, _, _, _ in found if r.account_id is not None})
        if needs.account
        else {}
    )
    standing = _account_standing(conn, {r.account_id for r, _, _, _ in found}, needs)
    out: dict[int, LeadFacts] = {}
    for record, profile, owner, probability in sorted(found, key=lambda f: f[0].id or 0):
        state = record.state
        engagement = state.engagement_at(at) if scores else 0.0  # decayed to now: only where tested
        account = accounts.get(record.account_id) if record.account_id is not None else None
        values = profile_values(profile, account) if profile is not None else {}
        values.update(
            stage=state.stage.value,
            fit_score=state.fit,
            fit_grade=state.grade,
            engagement_score=round(engagement, 6) if scores else None,
            score=round(state.fit + engagement, 6) if scores else None,
            probability=probability,
            persona=state.persona,
            owner=owner,
            days_in_stage=(at - state.stage_entered) / DAY,
            days_since_created=(at - record.created_at.timestamp()) / DAY,
            days_since_last_event=(at - state.last_event) / DAY if state.last_event is not None else None,
        )
        if standing is not None:
            stage, covered = standing.get(record.account_id, (None, None)) if record.account_id else (None, None)
            values["account.stage"], values["account.coverage"] = stage, covered
        assert record.id is not None
        out[record.id] = LeadFacts(record.id, values)
    if not out:
        return out
    if needs.tags:
        tags: dict[int, set[str]] = defaultdict(set)
        t = schema.lead_tags
        for part in repo.chunks(sorted(out)):
            for lead_id, tag in conn.execute(select(t.c.lead_id, t.c.tag).where(t.c.lead_id.in_(part))):
                tags[lead_id].add(tag.casefold())
        for lead_id, names in tags.items():
            out[lead_id].tags = frozenset(names)
    ev = schema.events
    # A `where` test's events grouped by their properties' stored text: each distinct document is
    # decoded once (as a row read would decode it) and its counted events tested once per value.
    # The grouping does not depend on the fields a test reads: tests on the same kinds and window
    # share one query.
    document = cast(ev.c.properties, Text)
    windows: dict[tuple[tuple[str, ...], float | None], list[ValueCount]] = defaultdict(list)
    for need in sorted(needs.grouped, key=_order):
        windows[(need.types, need.days)].append(need)
    for (types, days), sharing in windows.items():
        decoded: dict[str | None, Any] = {}
        for part in repo.chunks(sorted(out)):
            query = (
                select(ev.c.lead_id, document, func.count())
                .where(ev.c.lead_id.in_(part), _any_of({days: list(types)}, now))
                .group_by(ev.c.lead_id, document)
            )
            for lead_id, text, n in conn.execute(query).all():
                if text not in decoded:
                    decoded[text] = loads(text) if text is not None else {}
                properties = decoded[text]
                for need in sharing:
                    read = tuple(properties.get(f) if isinstance(properties, dict) else None for f in need.fields)
                    out[lead_id].grouped.setdefault(need, []).append((read, int(n)))
        for facts in out.values():
            for need in sharing:
                facts.grouped.setdefault(need, [])
    if needs.events:
        by_window: dict[float | None, list[str]] = defaultdict(list)
        for kind, days in sorted(needs.events.items()):
            by_window[days].append(kind)
        for part in repo.chunks(sorted(out)):
            query = select(ev.c.lead_id, ev.c.type, ev.c.occurred_at, ev.c.properties).where(
                ev.c.lead_id.in_(part), _any_of(by_window, now)
            )
            for lead_id, kind, occurred, properties in conn.execute(query).all():
                out[lead_id].events.append(SeenEvent(kind, occurred.timestamp(), properties or {}))
    if needs.counts:
        # One pass over the leads' events of the counted kinds, one sum per count: a lead with a
        # long history is counted by the store, not read row by row.
        counts = sorted(needs.counts, key=lambda c: (c.types, c.days is None, c.days or 0.0))
        each = [_any_of({c.days: list(c.types)}, now) for c in counts]
        sums = [func.sum(case((counted, 1), else_=0)) for counted in each]
        reach = or_(*each)
        for part in repo.chunks(sorted(out)):
            query = select(ev.c.lead_id, *sums).where(ev.c.lead_id.in_(part), reach).group_by(ev.c.lead_id)
            for row in conn.execute(query).all():
                out[row[0]].counts = {c: int(row[k + 1] or 0) for k, c in enumerate(counts)}
        for facts in out.values():
            if not facts.counts:  # no event of any counted kind
                facts.counts = dict.fromkeys(counts, 0)
    return out


def _account_standing(
    conn: Connection, account_ids: set[int | None], needs: FactNeeds
) -> dict[int, tuple[str, int | None]] | None:
    """Each account's stage and covered roles, as the pipeline keeps them, where a test reads
    `account.stage` or `account.coverage` (None where none does)."""
    if not needs.fields & set(ACCOUNT_STATE_FIELDS):
        return None
    a = schema.accounts
    out: dict[int, tuple[str, int | None]] = {}
    for part in repo.chunks(sorted(i for i in account_ids if i is not None)):
        for account_id, stage, covered in conn.execute(
            select(a.c.id, a.c.stage, a.c.covered_roles).where(a.c.id.in_(part))
        ):
            out[account_id] = (stage, covered)
    return out


def _order(need: ValueCount) -> tuple[Any, ...]:
    return (need.types, need.days is None, need.days or 0.0, need.fields)


def _any_of(kinds_by_window: Mapping[float | None, Sequence[str]], now: datetime) -> ColumnElement[bool]:
    """Events of these kinds, each within its window (None: all time) back from `now`."""
    ev = schema.events
    return or_(
        *(
            ev.c.type.in_(sorted(kinds))
            if days is None
            else and_(ev.c.type.in_(sorted(kinds)), ev.c.occurred_at >= now - timedelta(days=days))
            for days, kinds in kinds_by_window.items()
        )
    )
