"""The CRM sync's outbox, in the change's own transaction: the `crm` reaction queues a push for
each touched lead a connected CRM should hear of, and the keeper carries the leads' links to
their CRM records through merges and erasures. Kept apart from the sync (qualify.service.connectors.crm)
so that the pipeline loads no import machinery.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from qualify.adapters import schema
from qualify.service import delivery
from qualify.service.pipeline import Run
from qualify.service.unit_of_work import UnitOfWork

PENDING, SENDING, PUSHED, DEAD = "pending", "sending", "pushed", "dead"
ERASED = "(erased)"  # the status of a CRM record whose lead was erased
# A claimed push is `sending`: a change to its lead meanwhile queues a new push, read after it.
QUEUE = delivery.Queue(schema.crm_pushes, pending=PENDING, done=PUSHED, dead=DEAD, leased=SENDING)


def react(run: Run) -> None:
    """Reaction `crm`: a push queued for each touched lead a connected CRM should hear of, unless
    one is pending already (the push reads the lead as it is when it leaves)."""
    touched = run.changed.touched()
    if not touched:
        return
    conn = run.uow.connection
    c, links = schema.crm_connections, schema.crm_records
    targets = [
        (row.crm, row.push_to) for row in conn.execute(select(c.c.crm, c.c.push_to).where(c.c.push_to != "none"))
    ]
    for crm, push_to in targets:
        wanted = set(touched)
        if push_to == "linked":
            wanted = set(
                conn.execute(select(links.c.lead_id).where(links.c.crm == crm, links.c.lead_id.in_(touched))).scalars()
            )
        if not wanted:
            continue
        queue_pushes(conn, crm, wanted, run.changed.now)


def queue_pushes(conn: Any, crm: str, lead_ids: set[int], now: datetime) -> None:
    """A pending push for each of these leads that has none waiting already."""
    pushes = schema.crm_pushes
    if not lead_ids:
        return
    waiting = set(
        conn.execute(
            select(pushes.c.lead_id).where(
                pushes.c.crm == crm, pushes.c.status == PENDING, pushes.c.lead_id.in_(lead_ids)
            )
        ).scalars()
    )
    rows = [
        {"crm": crm, "lead_id": lead_id, "created_at": now, "status": PENDING, "attempts": 0, "next_attempt_at": now}
        for lead_id in sorted(lead_ids - waiting)
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
