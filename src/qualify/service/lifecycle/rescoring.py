"""Rescore every lead with the active model: fit, engagement replayed from the events, policy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select, update

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.engagement import DayTotals, EngagementState, apply_event
from qualify.service.lifecycle.accounts import recount_accounts
from qualify.service.lifecycle.lead_batch import LeadBatch
from qualify.service.pipeline import react
from qualify.service.unit_of_work import UnitOfWork, Workspace, utcnow


@dataclass
class RescoreSummary:
    leads: int = 0
    events: int = 0
    moves: int = 0
    model_version: str = ""


def rescore_all(
    workspace: Workspace,
    *,
    now: datetime | None = None,
    chunk: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> RescoreSummary:
    """Recompute every lead's scores from its profile and events, one transaction per chunk.

    Stage history is not rewritten: after the scores, the policy moves leads as of `now`.
    """
    now = now or utcnow()
    summary = RescoreSummary()
    with workspace.unit_of_work() as uow:
        total = int(uow.connection.execute(select(func.count()).select_from(schema.leads)).scalar_one())
        ids = list(uow.connection.execute(select(schema.leads.c.id).order_by(schema.leads.c.id)).scalars())
    for part in repo.chunks(ids, chunk):
        with workspace.unit_of_work() as uow:
            moved, events = rescore_leads(uow, list(part), now)
            summary.model_version = uow.active_model().version
        summary.leads += len(part)
        summary.events += events
        summary.moves += moved
        if progress:
            progress(summary.leads, total)
    # Accounts with no people the chunks touched are counted again too (their fit under this model).
    with workspace.unit_of_work() as uow:
        recount_accounts(uow, now=now)
    return summary


def rescore_leads(uow: UnitOfWork, ids: list[int], now: datetime) -> tuple[int, int]:
    """Rescore these leads from their profiles and events; returns (stage moves, events replayed)."""
    conn = uow.connection
    model = uow.active_model()
    batch = LeadBatch(uow, model, now)
    rows = conn.execute(repo.locked_leads().where(schema.leads.c.id.in_(ids))).all()
    records = {r.id: repo.lead_from_row(r) for r in rows}
    for record in records.values():
        batch.remember(record)
    batch.accounts.update(repo.accounts_by_id(conn, [r.account_id for r in records.values() if r.account_id]))
    for record in records.values():
        record.state.engagement = EngagementState()
        record.state.last_event = None
    e = schema.events
    changed_awards = []
    count = 0
    day_totals: dict[int, DayTotals] = defaultdict(DayTotals)
    event_rows = conn.execute(
        select(e.c.id, e.c.lead_id, e.c.type, e.c.occurred_at, e.c.properties, e.c.awards)
        .where(e.c.lead_id.in_(ids))
        .order_by(e.c.id)
    )
    for row in event_rows:
        count += 1
        state = records[row.lead_id].state
        ts = row.occurred_at.timestamp()
        totals = day_totals[row.lead_id]
        awards = apply_event(model, state.engagement, row.type, row.properties, ts, totals)
        totals.add(awards, ts)
        if state.last_event is None or ts > state.last_event:
            state.last_event = ts
        new = [[a.rule, a.points] for a in awards]
        if new != row.awards:
            changed_awards.append({"b_id": row.id, "awards": new})
    if changed_awards:
        conn.execute(update(e).where(e.c.id == bindparam("b_id")), changed_awards)
    moved = 0
    for record in records.values():
        rule = batch.refit(record)
        moves = batch.evaluator.sweep(record.state, now.timestamp(), rule)
        batch.record_moves(record, moves)
        moved += len(moves)
    changed = batch.write()
    # Fit and engagement are features: the probability follows them, and the policy is judged again.
    changed.judge_at = now.timestamp()
    react(uow, changed, batch)
    return moved, count
