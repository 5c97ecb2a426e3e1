"""The record of what automation did: segment entries and exits (`segment_history`), the
workflow log (`workflow_log`), and the one way a run ends (`finish`, with its log line).

Every other part of automation writes through here: membership tested online or in batch
(segments), deleting a segment and stopping the runs of a paused or edited workflow
(definitions), enrolment, the worker's steps (runs), merges and erasures (lead_data). So it sits
below them all, and whoever moves a lead in or out of a segment or ends a run leaves the same
line: the counts over time and a lead's log stay whole. `by` in the history is ONLINE (in the
transaction of a change to leads), BATCH (a refresh, a deletion, a merge, an erasure) or PEOPLE
(a person or the API put a lead in a static segment or took it out).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, update

from qualify.adapters import schema

ONLINE, BATCH, PEOPLE = "online", "batch", "people"  # who wrote a history line: a change, a sweep, a person
SegmentChange = tuple[str, int, str]  # segment, lead id, "entered" | "left"


def write_history(conn: Connection, changes: list[SegmentChange], now: datetime, by: str) -> None:
    """Record segment entries and exits, as of `now`, written `by` ONLINE, BATCH or PEOPLE."""
    if changes:
        conn.execute(
            schema.segment_history.insert(),
            [
                {"segment": s, "lead_id": lead_id, "change": change, "at": now, "by": by}
                for s, lead_id, change in changes
            ],
        )


def log_step(
    conn: Connection,
    enrolment_id: int,
    lead_id: int,
    workflow: str,
    step: int,
    action: str,
    outcome: str,
    detail: str | None,
    now: datetime,
) -> None:
    """One line of a run's log: what `step` did (`action`) and how it went (`outcome`)."""
    log_steps(conn, [(enrolment_id, lead_id, workflow, step, action, outcome, detail)], now)


def log_steps(
    conn: Connection, lines: Sequence[tuple[int, int, str, int, str, str, str | None]], now: datetime
) -> None:
    """Lines of runs' logs, in one statement: (enrolment, lead, workflow, step, action, outcome, detail)."""
    if lines:
        conn.execute(
            schema.workflow_log.insert(),
            [
                {
                    "enrolment_id": enrolment_id,
                    "lead_id": lead_id,
                    "workflow": workflow,
                    "step": step,
                    "action": action,
                    "outcome": outcome,
                    "detail": (detail or "")[:2000] or None,
                    "at": now,
                }
                for enrolment_id, lead_id, workflow, step, action, outcome, detail in lines
            ],
        )


def finish(
    conn: Connection,
    enrolment_id: int,
    lead_id: int,
    workflow: str,
    step: int,
    status: str,
    action: str,
    detail: str,
    now: datetime,
) -> None:
    """End a run (completed, exited, stopped, failed), with its log line at `step`."""
    e = schema.workflow_enrolments
    conn.execute(
        update(e)
        .where(e.c.id == enrolment_id)
        .values(status=status, finished_at=now, outcome=detail[:300], next_run_at=None, waiting_for=None)
    )
    log_step(conn, enrolment_id, lead_id, workflow, step, action, status, detail, now)
