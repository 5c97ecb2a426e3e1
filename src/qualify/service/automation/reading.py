"""Reading automation, for people: segments with their members and their counts over time,
workflows with their runs by status, and a lead's segments, tags, runs and every logged step.

What the API, the command line and the dashboard show; nothing here writes. Counts over time
are rebuilt from the segment history (written by history), so they hold for any past interval.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.automation import load_segment, load_workflow
from qualify.domain.errors import InvalidInput, NotFound
from qualify.service.unit_of_work import UnitOfWork, utcnow


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    name: str
    description: str | None
    definition: dict[str, Any]
    version: str
    members: int
    updated_at: datetime
    refreshed_at: datetime | None
    describe: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "definition": self.definition,
            "version": self.version,
            "members": self.members,
            "updated_at": self.updated_at.isoformat(),
            "refreshed_at": self.refreshed_at.isoformat() if self.refreshed_at else None,
            "tests": self.describe,
        }


def list_segments(uow: UnitOfWork) -> list[SegmentInfo]:
    conn = uow.connection
    s, m = schema.segments, schema.segment_members
    counts: dict[str, int] = dict(conn.execute(select(m.c.segment, func.count()).group_by(m.c.segment)).all())
    out = []
    for row in conn.execute(select(s).order_by(s.c.name)):
        definition = json.loads(row.document)
        out.append(
            SegmentInfo(
                row.name,
                row.description,
                definition,
                row.version,
                int(counts.get(row.name, 0)),
                row.updated_at,
                row.refreshed_at,
                load_segment(definition, f"segment {row.name}", stored=True).describe(),
            )
        )
    return out


def segment_info(uow: UnitOfWork, name: str) -> SegmentInfo:
    found = next((s for s in list_segments(uow) if s.name == name), None)
    if found is None:
        raise NotFound(f"no segment {name!r}")
    return found


def segment_members(uow: UnitOfWork, name: str, *, limit: int = 100, after_id: int = 0) -> list[dict[str, Any]]:
    """Members by lead id (a page after `after_id`), with when they entered and their scores now."""
    segment_info(uow, name)
    m, leads = schema.segment_members, schema.leads
    query = (
        select(
            leads.c.id,
            leads.c.email,
            leads.c.external_id,
            leads.c.stage,
            leads.c.fit_grade,
            leads.c.fit_score,
            leads.c.engagement_score,
            leads.c.owner,
            m.c.entered_at,
        )
        .join(leads, leads.c.id == m.c.lead_id)
        .where(m.c.segment == name, m.c.lead_id > after_id)
        .order_by(m.c.lead_id)
        .limit(limit)
    )
    return [
        {
            "id": row.id,
            "lead": row.email or f"ext:{row.external_id}",
            "stage": row.stage,
            "grade": row.fit_grade,
            "fit": row.fit_score,
            "engagement": round(row.engagement_score, 2),
            "owner": row.owner,
            "entered_at": row.entered_at.isoformat(),
        }
        for row in uow.connection.execute(query)
    ]


def segment_counts(
    uow: UnitOfWork, name: str, *, days: int = 90, every_days: int = 7, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Members at the end of every `every_days` over the last `days`, from the history, plus the
    entries and exits in each interval."""
    if every_days < 1 or days < every_days:
        raise InvalidInput("days must be at least every_days ≥ 1", field="days")
    segment_info(uow, name)
    now = now or utcnow()
    h = schema.segment_history
    rows = sorted(
        (row.at, 1 if row.change == "entered" else -1)
        for row in uow.connection.execute(select(h.c.at, h.c.change).where(h.c.segment == name))
    )
    ends = [now - timedelta(days=every_days * i) for i in range(days // every_days, -1, -1)]
    out, size, i = [], 0, 0
    previous: datetime | None = None
    for end in ends:
        entered = left = 0
        while i < len(rows) and rows[i][0] <= end:
            size += rows[i][1]
            if previous is not None and rows[i][0] > previous:
                entered += rows[i][1] > 0
                left += rows[i][1] < 0
            i += 1
        out.append({"at": end.astimezone(UTC).isoformat(), "members": size, "entered": entered, "left": left})
        previous = end
    return out


def lead_automation_of(uow: UnitOfWork, key: str) -> dict[str, Any]:
    """`lead_automation` of the lead named by `key` (email, `ext:<external id>` or `#<id>`)."""
    record = repo.find_lead(uow.connection, key[4:] if key.startswith("ext:") else key)
    if record is None or record.id is None:
        raise NotFound(f"no lead {key!r}")
    return lead_automation(uow, record.id)


def lead_automation(uow: UnitOfWork, lead_id: int) -> dict[str, Any]:
    """A lead's segments (now and their history), tags, workflow runs and every step of them."""
    conn = uow.connection
    m, h, t = schema.segment_members, schema.segment_history, schema.lead_tags
    e, log = schema.workflow_enrolments, schema.workflow_log
    return {
        "segments": [
            {"segment": row.segment, "entered_at": row.entered_at.isoformat()}
            for row in conn.execute(select(m).where(m.c.lead_id == lead_id).order_by(m.c.segment))
        ],
        "segment_history": [
            {"segment": row.segment, "change": row.change, "at": row.at.isoformat(), "by": row.by}
            for row in conn.execute(select(h).where(h.c.lead_id == lead_id).order_by(h.c.at, h.c.id))
        ],
        "tags": list(conn.execute(select(t.c.tag).where(t.c.lead_id == lead_id).order_by(t.c.tag)).scalars()),
        "workflows": [
            {
                "id": row.id,
                "workflow": row.workflow,
                "status": row.status,
                "next_step": row.step,
                "next_run_at": row.next_run_at.isoformat() if row.next_run_at else None,
                "waiting_for": row.waiting_for,
                "trigger": row.trigger,
                "enrolled_at": row.enrolled_at.isoformat(),
                "finished_at": row.finished_at.isoformat() if row.finished_at else None,
                "outcome": row.outcome,
            }
            for row in conn.execute(select(e).where(e.c.lead_id == lead_id).order_by(e.c.enrolled_at, e.c.id))
        ],
        "log": [
            {
                "enrolment": row.enrolment_id,
                "workflow": row.workflow,
                "step": row.step,
                "action": row.action,
                "outcome": row.outcome,
                "detail": row.detail,
                "at": row.at.isoformat(),
            }
            for row in conn.execute(select(log).where(log.c.lead_id == lead_id).order_by(log.c.at, log.c.id))
        ],
    }


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    name: str
    description: str | None
    definition: dict[str, Any]
    version: str
    active: bool
    runs: dict[str, int]  # by status
    steps: list[str]
    trigger: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "definition": self.definition,
            "version": self.version,
            "active": self.active,
            "runs": self.runs,
            "trigger": self.trigger,
            "steps": self.steps,
        }


def list_workflows(uow: UnitOfWork) -> list[WorkflowInfo]:
    conn = uow.connection
    w, e = schema.workflows, schema.workflow_enrolments
    runs: dict[str, dict[str, int]] = defaultdict(dict)
    for name, status, n in conn.execute(
        select(e.c.workflow, e.c.status, func.count()).group_by(e.c.workflow, e.c.status)
    ):
        runs[name][status] = int(n)
    out = []
    for row in conn.execute(select(w).order_by(w.c.name)):
        definition = json.loads(row.document)
        workflow = load_workflow(definition, f"workflow {row.name}", stored=True)
        out.append(
            WorkflowInfo(
                row.name,
                row.description,
                definition,
                row.version,
                row.active,
                runs.get(row.name, {}),
                [s.describe() for s in workflow.steps],
                workflow.trigger.describe(),
            )
        )
    return out


def workflow_info(uow: UnitOfWork, name: str) -> WorkflowInfo:
    found = next((w for w in list_workflows(uow) if w.name == name), None)
    if found is None:
        raise NotFound(f"no workflow {name!r}")
    return found
