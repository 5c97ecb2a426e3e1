"""Segment and workflow definitions: the parsed set a workspace runs on, and their editing.

`definitions` reads the segments and active workflows once per version (one small query for the
versions; parsed only when one changed, and cached on the workspace), so the reactions, the batch
refresh and the worker can ask for them on every change. Editing (`put_segments`,
`put_workflows`, which checks every template and segment a workflow needs, `delete_segment`,
`set_workflow_active`) is audited and keeps the history whole: a deleted segment's members are
recorded as leaving, and the runs of a workflow that is paused or changed are stopped, each with
its log line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import yaml
from sqlalchemy import Connection, delete, select, update

from qualify.adapters import schema
from qualify.domain.automation import (
    AutomationDocument,
    FactNeeds,
    Segment,
    Tests,
    Workflow,
    load_segment,
    load_workflow,
)
from qualify.domain.errors import InvalidInput, NotFound
from qualify.service.audit import record_audit
from qualify.service.automation.history import BATCH, finish, write_history
from qualify.service.unit_of_work import UnitOfWork, utcnow


@dataclass(frozen=True, slots=True)
class Definitions:
    """The segments and active workflows of a workspace, parsed once per version."""

    segments: tuple[Segment, ...] = ()
    workflows: tuple[Workflow, ...] = ()
    # What any test needs to know about a lead (fields, tags, events): merged once, not per batch.
    needs: FactNeeds = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", FactNeeds().merge(*(t.needs() for t in self._tests())))

    @property
    def empty(self) -> bool:
        return not self.segments and not self.workflows

    def workflow(self, name: str) -> Workflow | None:
        return next((w for w in self.workflows if w.name == name), None)

    def _tests(self) -> list[Tests]:
        return [s.tests for s in self.segments] + [t for w in self.workflows for t in (w.when, w.exit)]


def definitions(uow: UnitOfWork, versions: tuple[tuple[str, str, str], ...] | None = None) -> Definitions:
    """The current definitions: one small query for their versions (unless the caller read them:
    `pipeline.Configured.automation`), parsed only when they changed."""
    conn = uow.connection
    s, w = schema.segments, schema.workflows
    if versions is None:
        versions = tuple(
            [("s", name, version) for name, version in conn.execute(select(s.c.name, s.c.version).order_by(s.c.name))]
            + [
                ("w", name, version)
                for name, version in conn.execute(select(w.c.name, w.c.version).where(w.c.active).order_by(w.c.name))
            ]
        )
    cache = uow.workspace._automation
    found: Definitions | None = cache.get(versions)
    if found is None:
        segments = tuple(
            load_segment(json.loads(doc), f"segment {name}", stored=True)
            for name, doc in conn.execute(select(s.c.name, s.c.document).order_by(s.c.name))
        )
        workflows = tuple(
            load_workflow(json.loads(doc), f"workflow {name}", stored=True)
            for name, doc in conn.execute(select(w.c.name, w.c.document).where(w.c.active).order_by(w.c.name))
        )
        found = Definitions(segments, workflows)
        cache.clear()  # only the newest definitions are worth keeping; a reader elsewhere keeps its own
        cache[versions] = found
    return found


@dataclass(frozen=True, slots=True)
class Applied:
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"created": self.created, "changed": self.changed, "unchanged": self.unchanged}


def put_segments(uow: UnitOfWork, segments: Iterable[Segment], *, by: str, now: datetime | None = None) -> Applied:
    """Create or replace segments by name. A changed definition keeps its members until the
    next evaluation (run `refresh_segments` to re-test every lead now)."""
    now = now or utcnow()
    applied = Applied()
    for segment in segments:
        values = {"description": segment.description, "version": segment.version}
        _put_definition(uow, schema.segments, segment.name, segment.document, values, applied, by, now)
    return applied


def put_workflows(uow: UnitOfWork, document: AutomationDocument, *, by: str, now: datetime | None = None) -> Applied:
    """Create or replace the document's workflows (active) and save its templates.

    Every template a workflow sends must be in the document or already stored, and every
    segment it is triggered by must exist: a workflow that could never run is refused.
    """
    from qualify.service.email import templates as mail

    now = now or utcnow()
    conn = uow.connection
    templates = list(document.templates)
    problems = [f"template {t.name}: {p}" for t in templates for p in mail.template_problems(t)]
    known_templates = {t.name for t in templates} | {t.name for t in mail.list_templates(conn)}
    known_segments = {s.name for s in document.segments} | set(conn.execute(select(schema.segments.c.name)).scalars())
    for workflow in document.workflows:
        for name in sorted(workflow.templates() - known_templates):
            problems.append(f"workflow {workflow.name}: no email template {name!r}")
        for name in sorted(workflow.segments() - known_segments):
            problems.append(f"workflow {workflow.name}: no segment {name!r}")
    if problems:
        raise InvalidInput("; ".join(problems), field="workflows")
    if templates:
        mail.save_templates(conn, templates, now)
    applied = Applied()
    for workflow in document.workflows:
        values = {"description": workflow.description, "version": workflow.version, "active": True}
        if (
            _put_definition(uow, schema.workflows, workflow.name, workflow.document, values, applied, by, now)
            == "edited"
        ):
            _stop_runs(conn, workflow.name, "edit", "the workflow was changed; a new trigger starts it afresh", now)
    return applied


def _put_definition(
    uow: UnitOfWork,
    table: Any,
    name: str,
    document: dict[str, Any],
    values: dict[str, Any],
    applied: Applied,
    by: str,
    now: datetime,
) -> str:
    """Insert or replace one segment or workflow by name, record it in `applied` and the audit log.

    Returns "created", "edited" (a new version), "changed" (same version, other values, e.g. a
    paused workflow made active again) or "unchanged".
    """
    conn = uow.connection
    row = conn.execute(select(table).where(table.c.name == name)).first()
    values = values | {"document": json.dumps(document, sort_keys=True), "updated_at": now}
    if row is None:
        conn.execute(table.insert().values(name=name, created_at=now, **values))
        applied.created.append(name)
        outcome = "created"
    elif any(row._mapping[key] != value for key, value in values.items() if key not in ("document", "updated_at")):
        conn.execute(update(table).where(table.c.name == name).values(**values))
        applied.changed.append(name)
        outcome = "edited" if row.version != values["version"] else "changed"
    else:
        applied.unchanged.append(name)
        return "unchanged"
    kind = "segment" if table is schema.segments else "workflow"
    record_audit(uow, actor=by, action=f"{kind}.put", target=name, at=now, details={"version": values["version"]})
    return outcome


def delete_segment(uow: UnitOfWork, name: str, *, by: str, now: datetime | None = None) -> None:
    """Remove a segment; its members' exits are recorded, so the history stays whole."""
    now = now or utcnow()
    conn = uow.connection
    table, members = schema.segments, schema.segment_members
    if conn.execute(select(table.c.name).where(table.c.name == name)).first() is None:
        raise NotFound(f"no segment {name!r}")
    users = [w for w in definitions(uow).workflows if name in w.segments()]
    if users:
        raise InvalidInput(
            f"segment {name!r} triggers workflow(s) {', '.join(w.name for w in users)}: pause them first", field="name"
        )
    left = list(conn.execute(select(members.c.lead_id).where(members.c.segment == name)).scalars())
    write_history(conn, [(name, lead_id, "left") for lead_id in left], now, BATCH)
    conn.execute(delete(members).where(members.c.segment == name))
    conn.execute(delete(table).where(table.c.name == name))
    record_audit(uow, actor=by, action="segment.delete", target=name, at=now, details={"members": len(left)})


def _stop_runs(conn: Connection, workflow: str, action: str, why: str, now: datetime) -> int:
    """Stop a workflow's runs in progress, each with its log line; return how many.

    Runs follow their workflow by step number, so a run must not go on under a changed list of
    steps: it could repeat a step it did, or skip one."""
    e = schema.workflow_enrolments
    query = select(e.c.id, e.c.lead_id, e.c.step).where(e.c.workflow == workflow, e.c.status == "active")
    runs = list(conn.execute(query))
    for run in runs:
        finish(conn, run.id, run.lead_id, workflow, run.step, "stopped", action, why, now)
    return len(runs)


def set_workflow_active(uow: UnitOfWork, name: str, active: bool, *, by: str, now: datetime | None = None) -> int:
    """Pause or resume a workflow. Pausing stops its runs in progress (logged); returns how many."""
    now = now or utcnow()
    conn = uow.connection
    table = schema.workflows
    if conn.execute(select(table.c.name).where(table.c.name == name)).first() is None:
        raise NotFound(f"no workflow {name!r}")
    if active:
        document = conn.execute(select(table.c.document).where(table.c.name == name)).scalar_one()
        missing = load_workflow(json.loads(document), f"workflow {name}", stored=True).segments() - set(
            conn.execute(select(schema.segments.c.name)).scalars()
        )
        if missing:
            raise InvalidInput(
                f"workflow {name!r} is triggered by segment {missing.pop()!r}, which is gone", field="name"
            )
    conn.execute(update(table).where(table.c.name == name).values(active=active, updated_at=now))
    stopped = _stop_runs(conn, name, "pause", "the workflow was paused", now) if not active else 0
    record_audit(
        uow,
        actor=by,
        action="workflow.resume" if active else "workflow.pause",
        target=name,
        at=now,
        details={"stopped": stopped},
    )
    return stopped


def editor_document(uow: UnitOfWork) -> str:
    """Every segment and every active workflow as one YAML document, as `qualify workflows apply`
    reads it: what the dashboard's editor starts from."""
    s, w = schema.segments, schema.workflows
    conn = uow.connection
    document: dict[str, Any] = {
        "segments": [json.loads(doc) for doc in conn.execute(select(s.c.document).order_by(s.c.name)).scalars()],
        "workflows": [
            json.loads(doc) for doc in conn.execute(select(w.c.document).where(w.c.active).order_by(w.c.name)).scalars()
        ],
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
