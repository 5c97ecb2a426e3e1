"""POST /v1/events: one event or a batch, validated one by one, answered one by one."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from qualify.domain.access import Permission, allows
from qualify.domain.errors import InvalidInput
from qualify.domain.records import Event, check_event_keys, make_event
from qualify.entrypoints.api.deps import Ingester, WorkspaceDep, permission_doc
from qualify.entrypoints.api.limits import batch_items
from qualify.entrypoints.api.schemas import EVENT_EXAMPLE, MAX_BATCH, EventIn, EventResult, IngestResponse
from qualify.entrypoints.observability import EVENTS, INGEST_SECONDS
from qualify.entrypoints.problems import PROBLEM_RESPONSES
from qualify.entrypoints.ratelimit import RATE_LIMITED, check_ingest
from qualify.service.admin.api_keys import Identity
from qualify.service.lifecycle.events import ingest_events, sender_refusal
from qualify.service.unit_of_work import Workspace, retrying, utcnow

router = APIRouter(prefix="/v1", tags=["events"])

_BODY_SCHEMA = {
    "oneOf": [
        {"$ref": "#/components/schemas/EventIn"},
        {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}, "maxItems": MAX_BATCH},
        {
            "type": "object",
            "properties": {
                "events": {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}, "maxItems": MAX_BATCH}
            },
            "required": ["events"],
        },
    ]
}


_ONE = EVENT_EXAMPLE
_BODY_EXAMPLES = {
    "one": {"summary": "one event", "value": _ONE},
    "batch": {
        "summary": "a batch (up to 10,000)",
        "value": [_ONE, {**_ONE, "event_id": "web-7f3aa0", "type": "page_view", "properties": {"url": "/pricing"}}],
    },
}


@router.post(
    "/events",
    response_model=IngestResponse,
    summary="Ingest one event or a batch",
    responses={**PROBLEM_RESPONSES, **RATE_LIMITED},
    openapi_extra={
        **permission_doc(Permission.INGEST),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _BODY_SCHEMA, "examples": _BODY_EXAMPLES}},
        },
    },
)
async def post_events(request: Request, workspace: WorkspaceDep, caller: Ingester) -> IngestResponse | JSONResponse:
    """Apply events through the same use case as `qualify import events`.

    Each event is validated on its own: a bad one is answered `rejected` with the field and the
    reason, the good rest is applied. Replaying a batch answers `duplicate` and changes nothing.
    The answer comes after the commit: an acknowledged event survives a crash.
    Each key may send so many records per second (a batch counts each event): over that, 429.
    """
    started = time.perf_counter()
    items = batch_items(await request.body(), "events", wrapper="events")
    if (refused := check_ingest(request, caller, len(items))) is not None:
        return refused
    # The store is synchronous: keep the event loop free while it works.
    answer = await run_in_threadpool(_ingest, workspace, items, caller)
    INGEST_SECONDS.observe(time.perf_counter() - started)  # answered batches only, not refusals
    for status in ("accepted", "duplicate", "rejected"):
        EVENTS.labels(status).inc(getattr(answer, status))
    return answer


def _ingest(workspace: Workspace, items: list[Any], caller: Identity) -> IngestResponse:
    results: list[EventResult | None] = [None] * len(items)
    valid: list[tuple[int, Event]] = []
    received_at = utcnow()
    for index, item in enumerate(items):
        checked = _check(index, item, received_at)
        if isinstance(checked, Event) and (refused := sender_refusal(caller.role, checked)) is not None:
            checked = EventResult(
                index=index, event_id=refused.event_id, status=refused.status, reason=refused.reason,
                field=refused.field,
            )  # fmt: skip
        if isinstance(checked, EventResult):
            results[index] = checked
        else:
            valid.append((index, checked))
    # The lead each event went to is personal data (an email): only a key that may read leads
    # is told it; an ingest key writes blind.
    may_read = allows(caller.role, Permission.READ_LEADS)
    if valid:
        # Idempotent by event_id, so a batch that lost a race (two requests creating the same
        # new lead, a deadlock) is simply applied again.
        outcomes = retrying(
            workspace,
            lambda uow: ingest_events(
                uow,
                [e for _, e in valid],
                create_unknown=workspace.settings.create_unknown_leads,
                create_from_external_id=workspace.settings.create_leads_from_external_ids,
                by=f"api:{caller.name}",
                accounts_later=True,  # the worker keeps the accounts: docs/accounts.md
            ),
            size=len(valid),
        )
        for (index, event), outcome in zip(valid, outcomes, strict=True):
            results[index] = EventResult(
                index=index,
                event_id=event.event_id,
                status=outcome.status,
                reason=outcome.reason,
                field=outcome.field,
                lead=outcome.lead if may_read else None,
            )
    done = [r for r in results if r is not None]
    return IngestResponse(
        accepted=sum(r.status == "accepted" for r in done),
        duplicate=sum(r.status == "duplicate" for r in done),
        rejected=sum(r.status == "rejected" for r in done),
        results=done,
    )


def _check(index: int, item: Any, received_at: datetime) -> Event | EventResult:
    event_id = str(item.get("event_id"))[:200] if isinstance(item, dict) and item.get("event_id") is not None else None
    if not isinstance(item, dict):
        return EventResult(
            index=index, event_id=None, status="rejected", reason="an event must be a JSON object", field=""
        )
    try:
        check_event_keys(item, item.get("event_id"))
        parsed = EventIn.model_validate(item)
        return make_event(
            parsed.event_id,
            parsed.type,
            parsed.occurred_at,
            email=parsed.email,
            external_id=parsed.external_id,
            properties=parsed.all_properties(),
            received_at=received_at,
        )
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return EventResult(
            index=index, event_id=event_id, status="rejected", reason=f"{where}: {first['msg']}", field=where
        )
    except InvalidInput as error:
        return EventResult(index=index, event_id=event_id, status="rejected", reason=str(error), field=error.field)
