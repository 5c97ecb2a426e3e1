"""What an operator watches, read from the store: queues waiting, dead letters, overdue MQLs, and
whether the database answers at all (`/metrics` and `/readyz`, docs/operations.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text

from qualify.adapters import schema
from qualify.domain.lifecycle import Stage
from qualify.service.unit_of_work import UnitOfWork, Workspace


@dataclass(frozen=True, slots=True)
class Backlog:
    webhook_outbox: int  # deliveries waiting to be sent (first try or a retry)
    webhook_dead: int  # deliveries that ran out of tries (dead letters)
    email_queue: int  # emails waiting to be sent
    email_failed: int  # emails that could not be sent
    sla_overdue: int  # MQLs still waiting for sales past their SLA due time
    leads_by_stage: dict[str, int]
    accounts_pending: int = 0  # accounts left to the worker, not kept yet
    accounts_pending_seconds: float = 0.0  # how long the oldest of them has waited (0: none)


def backlog(uow: UnitOfWork, now: datetime) -> Backlog:
    """The queues and counts now: one small query each, on indexed columns."""
    conn = uow.connection
    w, e, leads, a = schema.webhook_deliveries, schema.emails, schema.leads, schema.accounts

    def count(table: Any, *conditions: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(table).where(*conditions)).scalar_one())

    stages: dict[str, int] = {
        stage: int(n) for stage, n in conn.execute(select(leads.c.stage, func.count()).group_by(leads.c.stage))
    }
    oldest = conn.execute(select(func.min(a.c.pending_since))).scalar_one()
    return Backlog(
        webhook_outbox=count(w, w.c.status == "pending"),
        webhook_dead=count(w, w.c.status == "dead"),
        email_queue=count(e, e.c.status.in_(("pending", "sending"))),
        email_failed=count(e, e.c.status == "failed"),
        sla_overdue=count(leads, leads.c.stage == Stage.MQL.value, leads.c.sla_due_at < now),
        leads_by_stage={s.value: int(stages.get(s.value, 0)) for s in Stage},
        accounts_pending=count(a, a.c.pending_since.is_not(None)),
        accounts_pending_seconds=max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0,
    )


def database_answers(workspace: Workspace) -> str | None:
    """None when the database answers a query now, else why not (one line, no URL or secret)."""
    try:
        with workspace.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as error:  # any driver's error: the probe says not ready, and why
        cause = str(getattr(error, "orig", None) or error).strip().splitlines()
        return f"{type(error).__name__}: {cause[0][:200] if cause else ''}"
    return None
