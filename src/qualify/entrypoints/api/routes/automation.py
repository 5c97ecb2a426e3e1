"""Segments and workflows over HTTP: define them, read their members, counts, runs and a lead's log.

Definitions are sent as JSON in the same shape as the YAML of docs/automation.md (one segment or
one workflow per request); problems come back as 422 with the field of each.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from qualify.adapters.schema import MAX_ID
from qualify.domain.access import Permission
from qualify.domain.automation import AutomationDocument, Template, load_segment, load_workflow
from qualify.domain.errors import InvalidInput
from qualify.entrypoints.api.deps import Automator, LeadReader, WorkspaceDep, permission_doc
from qualify.entrypoints.problems import PROBLEM_RESPONSES
from qualify.service.automation import definitions, reading, segments
from qualify.service.unit_of_work import UnitOfWork, retrying

router = APIRouter(prefix="/v1", tags=["automation"])
READ, WRITE = permission_doc(Permission.READ_LEADS), permission_doc(Permission.AUTOMATION)
NOT_FOUND = {**PROBLEM_RESPONSES, 404: {"description": "No such segment, workflow or lead"}}
Name = Annotated[
    str,
    Path(max_length=100, pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="lower-case letters, digits, '-', '_', '.'"),
]
SegmentBody = Annotated[
    dict[str, Any],
    Body(
        description="The segment, as in the YAML of docs/automation.md (its `name` is the path's).",
        openapi_examples={
            "pricing readers": {
                "value": {
                    "description": "read the pricing guide lately, not yet a customer",
                    "when": [
                        {"event": "content_download", "where": {"title": {"regex": "pricing"}}, "within_days": 30},
                        {"field": "stage", "not_in": ["customer", "evangelist"]},
                    ],
                }
            }
        },
    ),
]
WorkflowBody = Annotated[
    dict[str, Any],
    Body(
        description="The workflow, as in the YAML of docs/automation.md (its `name` is the path's).",
        openapi_examples={
            "recycle": {
                "value": {
                    "trigger": {"entered_stage": "nurture"},
                    "exit": [{"field": "stage", "in": ["sql", "opportunity", "customer"]}],
                    "steps": [{"add_tag": "recycled"}, {"wait": {"days": 3}}, {"notify_owner": "back in nurture"}],
                }
            }
        },
    ),
]


class Counts(BaseModel):
    at: str
    members: int
    entered: int
    left: int


class Refreshed(BaseModel):
    leads: int = Field(description="leads tested")
    entered: int
    left: int


class MembersIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"add": [12, 40], "remove": [7]}]})

    add: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default=[], max_length=1000)
    remove: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default=[], max_length=1000)


class MembersChanged(BaseModel):
    added: list[int] = Field(description="lead ids put in the segment")
    removed: list[int] = Field(description="lead ids taken out")
    skipped: dict[int, str] = Field(description="lead id → why it was left as it was")


class TemplateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"subject": "{{ first_name or 'Hello' }}, a note", "text": "Hi {{ first_name }}, ..."}]
        },
    )

    subject: str = Field(min_length=1, max_length=500)
    text: str = Field(min_length=1, max_length=100_000)
    html: str | None = Field(default=None, max_length=200_000)


@router.get("/segments", responses=PROBLEM_RESPONSES, openapi_extra=READ)
def get_segments(workspace: WorkspaceDep, caller: LeadReader) -> list[dict[str, Any]]:
    """Every segment with its definition, members now and what it tests, in words."""
    with workspace.unit_of_work(read_only=True) as uow:
        return [s.as_dict() for s in reading.list_segments(uow)]


@router.put("/segments/{name}", responses=PROBLEM_RESPONSES, openapi_extra=WRITE)
def put_segment(name: Name, definition: SegmentBody, workspace: WorkspaceDep, caller: Automator) -> dict[str, Any]:
    """Create or replace a segment; every lead is tested against it at once (the answer says how many entered)."""
    segment = load_segment({**definition, "name": name}, f"segment {name}")
    with workspace.unit_of_work() as uow:
        applied = definitions.put_segments(uow, [segment], by=caller.acts_as)
    moved = segments.refresh_segments(workspace, names=[name]) if not applied.unchanged else None
    with workspace.unit_of_work(read_only=True) as uow:
        return reading.segment_info(uow, name).as_dict() | {"applied": applied.as_dict(), "refresh": moved}


@router.get("/segments/{name}", responses=NOT_FOUND, openapi_extra=READ)
def get_segment(name: Name, workspace: WorkspaceDep, caller: LeadReader) -> dict[str, Any]:
    with workspace.unit_of_work(read_only=True) as uow:
        return reading.segment_info(uow, name).as_dict()


@router.delete("/segments/{name}", status_code=204, responses=NOT_FOUND, openapi_extra=WRITE)
def delete_segment(name: Name, workspace: WorkspaceDep, caller: Automator) -> None:
    """Delete a segment (refused while a workflow is triggered by it); its members' exits are recorded."""
    with workspace.unit_of_work() as uow:
        definitions.delete_segment(uow, name, by=caller.acts_as)


@router.get("/segments/{name}/members", responses=NOT_FOUND, openapi_extra=READ)
def get_segment_members(
    name: Name,
    workspace: WorkspaceDep,
    caller: LeadReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[int, Query(ge=0, le=MAX_ID, description="the largest `id` of the previous page")] = 0,
) -> list[dict[str, Any]]:
    """Members by lead id, a page at a time, with when they entered and their scores now."""
    with workspace.unit_of_work(read_only=True) as uow:
        return reading.segment_members(uow, name, limit=limit, after_id=after_id)


@router.post("/segments/{name}/members", response_model=MembersChanged, responses=NOT_FOUND, openapi_extra=WRITE)
def change_segment_members(name: Name, change: MembersIn, workspace: WorkspaceDep, caller: Automator) -> dict[str, Any]:
    """Put leads in a static segment (`static: true`) and take others out, by lead id, in one
    transaction; entries and exits are recorded and trigger workflows as any segment's do. A
    dynamic segment's members are whoever its tests hold for: 422."""
    if not change.add and not change.remove:
        raise InvalidInput("name leads to `add` or `remove`", field="add")

    def apply(uow: UnitOfWork) -> dict[str, Any]:  # retried whole: a concurrent change of the same members
        added: list[int] = []
        removed: list[int] = []
        skipped: dict[int, str] = {}
        for ids, add, into in ((change.add, True, added), (change.remove, False, removed)):
            if ids:
                done = segments.set_members(uow, name, ids, add=add, by=caller.acts_as)
                into.extend(done.changed)
                skipped |= done.skipped
        return {"added": added, "removed": removed, "skipped": skipped}

    return retrying(workspace, apply)


@router.get("/segments/{name}/counts", response_model=list[Counts], responses=NOT_FOUND, openapi_extra=READ)
def get_segment_counts(
    name: Name,
    workspace: WorkspaceDep,
    caller: LeadReader,
    days: Annotated[int, Query(ge=1, le=3660)] = 84,
    every_days: Annotated[int, Query(ge=1, le=366)] = 7,
) -> list[dict[str, Any]]:
    """Members at the end of every `every_days` over the last `days`, with the entries and exits in between."""
    with workspace.unit_of_work(read_only=True) as uow:
        return reading.segment_counts(uow, name, days=max(days, every_days), every_days=every_days)


@router.post("/segments/{name}/refresh", response_model=Refreshed, responses=NOT_FOUND, openapi_extra=WRITE)
def refresh_segment(name: Name, workspace: WorkspaceDep, caller: Automator) -> dict[str, int]:
    """Test every lead against the segment now (the batch evaluation) and record who entered and left."""
    return segments.refresh_segments(workspace, names=[name])


@router.get("/workflows", responses=PROBLEM_RESPONSES, openapi_extra=READ)
def get_workflows(workspace: WorkspaceDep, caller: LeadReader) -> list[dict[str, Any]]:
    """Every workflow: definition, trigger and steps in words, and its runs by status."""
    with workspace.unit_of_work(read_only=True) as uow:
        return [w.as_dict() for w in reading.list_workflows(uow)]


@router.put("/workflows/{name}", responses=PROBLEM_RESPONSES, openapi_extra=WRITE)
def put_workflow(name: Name, definition: WorkflowBody, workspace: WorkspaceDep, caller: Automator) -> dict[str, Any]:
    """Create or replace a workflow (active). The templates it sends and the segment that triggers it must exist."""
    workflow = load_workflow({**definition, "name": name}, f"workflow {name}")
    with workspace.unit_of_work() as uow:
        applied = definitions.put_workflows(uow, AutomationDocument(workflows=(workflow,)), by=caller.acts_as)
        return reading.workflow_info(uow, name).as_dict() | {"applied": applied.as_dict()}


@router.get("/workflows/{name}", responses=NOT_FOUND, openapi_extra=READ)
def get_workflow(name: Name, workspace: WorkspaceDep, caller: LeadReader) -> dict[str, Any]:
    with workspace.unit_of_work(read_only=True) as uow:
        return reading.workflow_info(uow, name).as_dict()


@router.post("/workflows/{name}/pause", responses=NOT_FOUND, openapi_extra=WRITE)
def pause_workflow(name: Name, workspace: WorkspaceDep, caller: Automator) -> dict[str, int]:
    """Pause: nobody new is enrolled and the runs in progress stop (each logged)."""
    with workspace.unit_of_work() as uow:
        return {"stopped": definitions.set_workflow_active(uow, name, False, by=caller.acts_as)}


@router.post("/workflows/{name}/resume", status_code=204, responses=NOT_FOUND, openapi_extra=WRITE)
def resume_workflow(name: Name, workspace: WorkspaceDep, caller: Automator) -> None:
    with workspace.unit_of_work() as uow:
        definitions.set_workflow_active(uow, name, True, by=caller.acts_as)


@router.put("/templates/{name}", status_code=204, responses=PROBLEM_RESPONSES, openapi_extra=WRITE)
def put_template(name: Name, body: TemplateIn, workspace: WorkspaceDep, caller: Automator) -> None:
    """Create or replace an email template (Jinja2; docs/email.md lists what it may use)."""
    document = AutomationDocument(templates=(Template(name, body.subject, body.text, body.html),))
    with workspace.unit_of_work() as uow:
        definitions.put_workflows(uow, document, by=caller.acts_as)


@router.get("/leads/{key}/automation", responses=NOT_FOUND, openapi_extra=READ)
def get_lead_automation(
    key: Annotated[str, Path(max_length=254)], workspace: WorkspaceDep, caller: LeadReader
) -> dict[str, Any]:
    """A lead's segments now and their history, its tags, workflow runs and every step they took."""
    with workspace.unit_of_work(read_only=True) as uow:
        return reading.lead_automation_of(uow, key)
