"""The CRM sync's outbox, in the change's own transaction: the `crm` reaction queues a push for
each touched lead a connected CRM should hear of, and the keeper carries the leads' links to
their CRM records through merges and erasures. Kept apart from the sync (qualify.service.connectors.crm)
so that the pipeline loads no import machinery.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, update

from qualify.adapters import schema
from qualify.service import delivery
from qualify.service.pipeline import Run
from qualify.service.unit_of_work import UnitOfWork

PENDING, SENDING, PUSHED, DEAD = "pending", "sending", "pushed", "dead"
ERASED = "(erased)"  # the status of a CRM record whose lead was erased
# A claimed push is `sending`: a change to its lead meanwhile queues a new push, read after it.
QUEUE = delivery.Queue(schema.crm_pushes, pending=PENDING, done=PUSHED, dead=DEAD, leased=SENDING)


def react(run: Run) -> None:
    """Reaction `crm`: a push queued for each touched lead a connected CRM should hear of, and for
    the accounts of those leads where the CRM's companies hear of their accounts, unless one is
    pending already (a push reads its lead or account as it is when it leaves)."""
    touched = run.changed.touched()
    if not touched or not run.configured.crm_pushes:
        return
    conn = run.uow.connection
    c, links = schema.crm_connections, schema.crm_records
    targets = list(
        conn.execute(
            select(c.c.crm, c.c.push_to, c.c.push_accounts).where(
                or_(c.c.push_to != "none", c.c.push_accounts.is_not(None))
            )
        )
    )
    for crm, push_to, push_accounts in targets:
        wanted = set(touched) if push_to == "all" else set()
        if push_to == "linked":
            wanted = set(
                conn.execute(select(links.c.lead_id).where(links.c.crm == crm, links.c.lead_id.in_(touched))).scalars()
            )
        queue_pushes(conn, crm, wanted, run.changed.now)
        if push_accounts is not None:
            accounts = {r.account_id for r in run.changed.records if r.account_id is not None}
            if run.changed.lead_ids:
                leads = schema.leads
                accounts |= set(
                    conn.execute(
                        select(leads.c.account_id).where(
                            leads.c.id.in_(run.changed.lead_ids), leads.c.account_id.is_not(None)
                        )
                    ).scalars()
                )
            linked = set(
                conn.execute(
                    select(links.c.account_id).where(links.c.crm == crm, links.c.account_id.in_(accounts))
                ).scalars()
            )
            queue_pushes(conn, crm, linked, run.changed.now, column="account_id")


def queue_pushes(conn: Any, crm: str, ids: set[int], now: datetime, *, column: str = "lead_id") -> None:
    """A pending push for each of these leads (or accounts, by `column`) that has none waiting already."""
    pushes = schema.crm_pushes
    if not ids:
        return
    key = pushes.c[column]
    waiting = set(
        conn.execute(select(key).where(pushes.c.crm == crm, pushes.c.status == PENDING, key.in_(ids))).scalars()
    )
    rows = [
        {"crm": crm, column: i, "created_at": now, "status": PENDING, "attempts": 0, "next_attempt_at": now}
        for i in sorted(ids - waiting)
    ]
    if rows:
        conn.execute(pushes.insert(), rows)


def move_links(uow: UnitOfWork, gone: int, kept: int) -> None:
    """A merge: the CRM records of the lead merged away now name the kept lead; its pushes go."""
    links, pushes = schema.crm_records, schema.crm_pushes
    uow.connection.execute(update(links).where(links.c.lead_id == gone).values(lead_id=kept))
    uow.connection.execute(delete(pushes).where(pushes.c.lead_id == gone))


def forget_links(uow: UnitOfWork, lead_id: int) -> None:
    """An erasure: nothing more is written to the lead's CRM records, and the records are marked
    so that a pull does not bring the person back (`ERASED`: the record's id, and nothing of the person)."""
    links, pushes = schema.crm_records, schema.crm_pushes
    uow.connection.execute(
        update(links).where(links.c.lead_id == lead_id).values(lead_id=None, status=ERASED, pushed=None)
    )
    uow.connection.execute(delete(pushes).where(pushes.c.lead_id == lead_id))
