"""What a lead's features read beyond its own row and events: its deals, and the other leads at
its account (recipe.py's `deal_features` and `account_features`), loaded for online scoring
(`serving.subjects`) and for backtests.

Online, the account roll-ups are counted by the store (`rollups_of`), one query per batch of
leads, without reading the colleagues' events; a backtest, which needs them at every instant of a
replay, reads the colleagues themselves (`peers_of`)."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Integer, Text, bindparam, case, cast, column, func, select
from sqlalchemy.dialects.postgresql import JSONB

from qualify.adapters import schema
from qualify.adapters.repository import chunks
from qualify.domain.engagement import BONUS_EVENT
from qualify.predictive.recipe import ACCOUNT_COLUMNS, OPPORTUNITY, QUALIFIED, DealFact, Peer

CHUNK = 500


def deals_of(conn: Any, lead_ids: Sequence[int]) -> dict[int, list[DealFact]]:
    """The leads' deals, as the deal features read them."""
    d = schema.deals
    found: dict[int, list[DealFact]] = defaultdict(list)
    query = select(d.c.lead_id, d.c.opened_at, d.c.closed_at, d.c.outcome, d.c.amount).where(d.c.lead_id.in_(lead_ids))
    for lead_id, opened, closed, outcome, amount in conn.execute(query.order_by(d.c.id)):
        found[lead_id].append(DealFact(opened, closed, outcome, amount))
    return found


def peers_of(conn: Any, lead_ids: Sequence[int]) -> dict[int, list[Peer]]:
    """The other (not erased) leads at each lead's account, as the account roll-ups read them."""
    leads, events, h = schema.leads, schema.events, schema.stage_history
    accounts = dict(
        conn.execute(
            select(leads.c.id, leads.c.account_id).where(leads.c.id.in_(lead_ids), leads.c.account_id.is_not(None))
        ).all()
    )
    if not accounts:
        return {}
    members: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
    for peer, account, created in conn.execute(
        select(leads.c.id, leads.c.account_id, leads.c.created_at).where(
            leads.c.account_id.in_(sorted(set(accounts.values()))), leads.c.erased_at.is_(None)
        )
    ):
        members[account].append((peer, created))
    ids = sorted({peer for people in members.values() for peer, _ in people})
    times: dict[int, list[datetime]] = defaultdict(list)
    qualified: dict[int, datetime] = {}
    opportunity: dict[int, datetime] = {}
    for part in chunks(ids, CHUNK):
        for peer, occurred in conn.execute(
            select(events.c.lead_id, events.c.occurred_at).where(
                events.c.lead_id.in_(part), events.c.type != BONUS_EVENT
            )
        ):
            times[peer].append(occurred)
        for peer, stage, at in conn.execute(
            select(h.c.lead_id, h.c.to_stage, func.min(h.c.at))
            .where(h.c.lead_id.in_(part), h.c.to_stage.in_(QUALIFIED))
            .group_by(h.c.lead_id, h.c.to_stage)
        ):
            qualified[peer] = min(at, qualified.get(peer, at))
            if stage in OPPORTUNITY:
                opportunity[peer] = min(at, opportunity.get(peer, at))
    return {
        lead_id: [
            Peer(created, tuple(times.get(peer, ())), qualified.get(peer), opportunity.get(peer))
            for peer, created in members[account]
            if peer != lead_id
        ]
        for lead_id, account in accounts.items()
    }


def number_pairs(conn: Any, pairs: Sequence[tuple[int, int]], names: tuple[str, str]) -> Any:
    """Pairs of integers as a table with columns `names`, read from one JSON parameter (as `_cuts`)."""
    first, second = names
    document = json.dumps([list(pair) for pair in pairs])
    if conn.dialect.name == "sqlite":
        each = func.json_each(bindparam("pairs", document, type_=Text)).table_valued("value")
        return select(
            cast(func.json_extract(each.c.value, "$[0]"), Integer).label(first),
            cast(func.json_extract(each.c.value, "$[1]"), Integer).label(second),
        ).cte(f"{first}_pairs")
    element = func.jsonb_array_elements(cast(bindparam("pairs", document, type_=Text), JSONB)).table_valued("value")
    return select(
        cast(element.c.value.op("->>")(0), Integer).label(first),
        cast(element.c.value.op("->>")(1), Integer).label(second),
    ).cte(f"{first}_pairs")


def _cuts(conn: Any, cuts: dict[int, datetime], recent_days: int) -> Any:
    """The leads and their instants as a table (cut_lead, cut_at, cut_since: `recent_days` before),
    read from one JSON parameter, so that the statement is the same for any number of leads."""
    rows = [(lead, at, at - timedelta(days=recent_days)) for lead, at in sorted(cuts.items())]
    if conn.dialect.name == "sqlite":  # times as the store's text, which sorts as time does
        document = json.dumps([[lead, schema.sqlite_time(at), schema.sqlite_time(since)] for lead, at, since in rows])
        each = func.json_each(bindparam("cuts", document, type_=Text)).table_valued("value")
        cut = select(
            cast(func.json_extract(each.c.value, "$[0]"), Integer).label("cut_lead"),
            func.json_extract(each.c.value, "$[1]").label("cut_at"),
            func.json_extract(each.c.value, "$[2]").label("cut_since"),
        ).cte("cut")
        # Read once, not once per event compared with it (a third of the roll-ups' time).
        return cut.prefix_with("MATERIALIZED") if sqlite3.sqlite_version_info >= (3, 35) else cut
    document = json.dumps(
        [{"cut_lead": lead, "cut_at": at.isoformat(), "cut_since": since.isoformat()} for lead, at, since in rows]
    )
    records = (
        func.jsonb_to_recordset(cast(bindparam("cuts", document, type_=Text), JSONB))
        .table_valued(
            column("cut_lead", Integer),
            column("cut_at", DateTime(timezone=True)),
            column("cut_since", DateTime(timezone=True)),
        )
        .render_derived(name="cut_rows", with_types=True)
    )
    return select(records.c.cut_lead, records.c.cut_at, records.c.cut_since).cte("cut")


def rollups_of(
    conn: Any, cuts: dict[int, datetime], recent_days: int, *, kept_as: str | None = None
) -> dict[int, dict[str, float]]:
    """The account roll-ups (recipe.py's `account_features`) of each lead as of its instant in
    `cuts`, counted by the database: what `peers_of` gives, without reading the other leads'
    events. Leads without an account (or none else at it) get zeros.

    With `kept_as` (the active model's version; its behaviour kept for every lead each change
    touches, in the change's transaction: `behaviour.py`), a colleague's events by the instant are
    its kept count less those that occurred after the instant, and the recent ones those since the
    window's start: only the colleagues' events of the last `recent_days` and later are read, not
    their histories. A colleague without a kept row of that version is counted from its events."""
    if not cuts:
        return {}
    leads, events, h = schema.leads, schema.events, schema.stage_history
    cut = _cuts(conn, cuts, recent_days)
    me, peer = leads.alias("me"), leads.alias("peer")
    pairs = (
        select(cut.c.cut_lead, cut.c.cut_at, cut.c.cut_since, peer.c.id.label("peer_id"), peer.c.created_at)
        .select_from(
            cut.join(me, me.c.id == cut.c.cut_lead).join(
                peer, (peer.c.account_id == me.c.account_id) & (peer.c.id != me.c.id) & peer.c.erased_at.is_(None)
            )
        )
        .cte("pairs")
    )
    firsts = {
        name: select(h.c.lead_id, func.min(h.c.at).label("first_at"))
        .where(h.c.to_stage.in_(stages), h.c.lead_id.in_(select(pairs.c.peer_id)))  # the peers', not every lead's
        .group_by(h.c.lead_id)
        .subquery(name)
        for name, stages in (("qualified", QUALIFIED), ("opportunity", OPPORTUNITY))
    }
    qualified, opportunity = firsts["qualified"], firsts["opportunity"]

    def reached(first: Any) -> Any:
        return func.sum(case((first.c.first_at <= pairs.c.cut_at, 1), else_=0))

    out = {lead: dict.fromkeys(ACCOUNT_COLUMNS, 0.0) for lead in cuts}
    people = (
        select(
            pairs.c.cut_lead,
            func.sum(case((pairs.c.created_at <= pairs.c.cut_at, 1), else_=0)),
            reached(qualified),
            reached(opportunity),
        )
        .select_from(
            pairs.outerjoin(qualified, qualified.c.lead_id == pairs.c.peer_id).outerjoin(
                opportunity, opportunity.c.lead_id == pairs.c.peer_id
            )
        )
        .group_by(pairs.c.cut_lead)
    )
    for lead, n, q, o in conn.execute(people):
        out[lead].update(
            account_other_leads=float(n or 0), account_other_qualified=float(q or 0),
            account_other_opportunities=float(o or 0),
        )  # fmt: skip
    occurred = events.c.occurred_at
    if kept_as is None:
        activity = (
            select(pairs.c.cut_lead, func.count(), func.sum(case((occurred >= pairs.c.cut_since, 1), else_=0)))
            .select_from(pairs.join(events, events.c.lead_id == pairs.c.peer_id))
            .where(occurred <= pairs.c.cut_at, events.c.type != BONUS_EVENT)
            .group_by(pairs.c.cut_lead)
        )
        for lead, n, recent in conn.execute(activity):
            out[lead]["account_other_events"] = float(n)
            out[lead]["account_other_recent_events"] = float(recent or 0)
        return out
    kb = schema.lead_behaviour
    kept = (
        select(kb.c.lead_id.label("kept_lead"), kb.c.events.label("kept_events")).where(kb.c.version == kept_as)
    ).subquery("kept")
    with_kept = pairs.outerjoin(kept, kept.c.kept_lead == pairs.c.peer_id)
    is_kept = kept.c.kept_lead.is_not(None)
    totals = (
        select(pairs.c.cut_lead, func.sum(kept.c.kept_events))
        .select_from(pairs.join(kept, kept.c.kept_lead == pairs.c.peer_id))
        .group_by(pairs.c.cut_lead)
    )
    for lead, n in conn.execute(totals):
        out[lead]["account_other_events"] = float(n or 0)
    # The colleagues' events since the window's start (and after the instant): an index range each.
    late = (
        select(
            pairs.c.cut_lead,
            func.sum(case(((occurred > pairs.c.cut_at) & is_kept, 1), else_=0)),
            func.sum(case((occurred <= pairs.c.cut_at, 1), else_=0)),
        )
        .select_from(with_kept.join(events, events.c.lead_id == pairs.c.peer_id))
        .where(occurred >= pairs.c.cut_since, events.c.type != BONUS_EVENT)
        .group_by(pairs.c.cut_lead)
    )
    for lead, after, recent in conn.execute(late):
        out[lead]["account_other_events"] -= float(after or 0)
        out[lead]["account_other_recent_events"] = float(recent or 0)
    unkept = (  # colleagues without a kept row: their events by the instant, counted
        select(pairs.c.cut_lead, func.count())
        .select_from(with_kept.join(events, events.c.lead_id == pairs.c.peer_id))
        .where(~is_kept, occurred <= pairs.c.cut_at, events.c.type != BONUS_EVENT)
        .group_by(pairs.c.cut_lead)
    )
    for lead, n in conn.execute(unkept):
        out[lead]["account_other_events"] += float(n)
    return out
