"""Automation's share of merges and erasures: the keeper that bootstrap.py registers with the
after-change pipeline (service/pipeline.py) for a lead's tags, segment memberships and history,
workflow runs and log.

A merge moves them to the kept lead (stopping a run the kept lead runs or ran too, so nothing
runs twice for one person); an erasure records the lead leaving its segments, drops its tags and
stops its runs. Either way the exits are written to the history, so the counts stay whole.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, select, update

from qualify.adapters import schema
from qualify.service.automation.history import BATCH, finish, write_history


def move_lead(conn: Connection, gone: int, kept: int, now: datetime) -> None:
    """A merge: the duplicate's tags, segment history and memberships, workflow runs and log move
    to the kept lead (which is tested again after the merge), and a run of a workflow the kept lead is running too is stopped rather than run twice."""
    e, t = schema.workflow_enrolments, schema.lead_tags
    # Whatever the kept lead runs or ran is not run again for the same person.
    running = set(conn.execute(select(e.c.workflow).where(e.c.lead_id == kept)).scalars())
    for run in conn.execute(
        select(e.c.id, e.c.workflow, e.c.step).where(
            e.c.lead_id == gone, e.c.status == "active", e.c.workflow.in_(running)
        )
    ).all():
        finish(
            conn,
            run.id,
            gone,
            run.workflow,
            run.step,
            "stopped",
            "merge",
            f"merged into lead #{kept}, which runs or ran it",
            now,
        )
    kept_tags = set(conn.execute(select(t.c.tag).where(t.c.lead_id == kept)).scalars())
    conn.execute(delete(t).where(t.c.lead_id == gone, t.c.tag.in_(sorted(kept_tags))))
    for table in (t, schema.segment_history, e, schema.workflow_log):
        conn.execute(update(table).where(table.c.lead_id == gone).values(lead_id=kept))
    # A membership the kept lead lacks moves to it with its history (a static segment's members
    # are whoever people put in it; a dynamic one is tested again); a double one leaves, recorded.
    m = schema.segment_members
    kept_in = set(conn.execute(select(m.c.segment).where(m.c.lead_id == kept)).scalars())
    left = [name for name in conn.execute(select(m.c.segment).where(m.c.lead_id == gone)).scalars() if name in kept_in]
    write_history(conn, [(name, kept, "left") for name in left], now, BATCH)  # the counts stay whole
    conn.execute(delete(m).where(m.c.lead_id == gone, m.c.segment.in_(left)))
    conn.execute(update(m).where(m.c.lead_id == gone).values(lead_id=kept))


def forget_lead(conn: Connection, lead_id: int, now: datetime) -> None:
    """An erasure: the lead leaves its segments (recorded), loses its tags, and its runs stop (its
    emails are cleared by `email.forget_lead_emails`)."""
    m, e = schema.segment_members, schema.workflow_enrolments
    left = list(conn.execute(select(m.c.segment).where(m.c.lead_id == lead_id)).scalars())
    write_history(conn, [(name, lead_id, "left") for name in left], now, BATCH)
    conn.execute(delete(m).where(m.c.lead_id == lead_id))
    conn.execute(delete(schema.lead_tags).where(schema.lead_tags.c.lead_id == lead_id))
    for run in conn.execute(
        select(e.c.id, e.c.workflow, e.c.step).where(e.c.lead_id == lead_id, e.c.status == "active")
    ).all():
        finish(conn, run.id, lead_id, run.workflow, run.step, "stopped", "erase", "the lead was erased", now)
