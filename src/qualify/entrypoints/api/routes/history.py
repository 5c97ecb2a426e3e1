"""PUT /v1/history/stages and /v1/history/deals: a CRM's past in batches, as `qualify import stages|deals`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from qualify.domain.access import Permission
from qualify.domain.errors import InvalidInput
from qualify.domain.records import check_document
from qualify.entrypoints.api.deps import LeadWriter, WorkspaceDep, permission_doc
from qualify.entrypoints.api.limits import batch_items
from qualify.entrypoints.api.schemas import MAX_BATCH, DealIn, HistoryResponse, StageChangeIn, UpsertResult
from qualify.entrypoints.problems import PROBLEM_RESPONSES
from qualify.entrypoints.ratelimit import RATE_LIMITED, check_ingest
from qualify.service.admin.api_keys import Identity
from qualify.service.lifecycle.stage_facts import (
    Deal,
    FactsOutcome,
    KeyedFact,
    as_history,
    deal_of,
    rebuild_pending,
    record_facts,
    stage_change_of,
    upsert_deals,
)
from qualify.service.unit_of_work import UnitOfWork, Workspace, retrying, utcnow

router = APIRouter(prefix="/v1/history", tags=["history"])
Item = TypeVar("Item", bound=BaseModel)


def _body(model: type[BaseModel]) -> dict[str, Any]:
    name = model.__name__
    one = {"$ref": f"#/components/schemas/{name}"}
    example = model.model_config.get("json_schema_extra", {})["examples"][0]  # type: ignore[index]
    return {
        **permission_doc(Permission.WRITE_LEADS),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [one, {"type": "array", "items": one, "maxItems": MAX_BATCH}]},
                    "examples": {"batch": {"summary": f"a batch (up to {MAX_BATCH:,})", "value": [example]}},
                }
            },
        },
    }


@router.put(
    "/stages",
    response_model=HistoryResponse,
    summary="Import stage changes of the past",
    responses={**PROBLEM_RESPONSES, **RATE_LIMITED},
    openapi_extra=_body(StageChangeIn),
)
async def put_stages(request: Request, workspace: WorkspaceDep, caller: LeadWriter) -> HistoryResponse | JSONResponse:
    """Stage changes people made in the past, as `qualify import stages` takes them: each may move
    its lead to any later stage at its date; one its lead's other stage changes contradict is
    rejected naming both. They are history: no SLA clock, no webhook, no workflow. The leads
    touched are rebuilt in time order from their events and stage changes before the answer."""
    items = batch_items(await request.body(), "stage changes")
    if (refused := check_ingest(request, caller, len(items), "stage changes")) is not None:
        return refused
    return await run_in_threadpool(_import, workspace, caller, items, StageChangeIn, _fact, _write_facts)


@router.put(
    "/deals",
    response_model=HistoryResponse,
    summary="Import deals",
    responses={**PROBLEM_RESPONSES, **RATE_LIMITED},
    openapi_extra=_body(DealIn),
)
async def put_deals(request: Request, workspace: WorkspaceDep, caller: LeadWriter) -> HistoryResponse | JSONResponse:
    """Deals by `deal_id`, as `qualify import deals` takes them: opened (the lead became an
    opportunity), won (customer) or lost (nurture). A deal sent again is updated. History, as
    stage changes are; the leads touched are rebuilt in time order before the answer."""
    items = batch_items(await request.body(), "deals")
    if (refused := check_ingest(request, caller, len(items), "deals")) is not None:
        return refused
    return await run_in_threadpool(_import, workspace, caller, items, DealIn, _deal, _write_deals)


def _fact(item: StageChangeIn) -> KeyedFact:
    return stage_change_of(item.model_dump())


def _deal(item: DealIn) -> Deal:
    return deal_of({**item.model_dump(), "properties": check_document(item.properties, "properties")})


def _write_facts(uow: UnitOfWork, records: list[Any], source: str, now: datetime) -> FactsOutcome:
    create = uow.workspace.settings.create_unknown_leads
    return record_facts(uow, records, source=source, now=now, create_unknown=create)


def _write_deals(uow: UnitOfWork, records: list[Any], source: str, now: datetime) -> FactsOutcome:
    return upsert_deals(uow, records, now=now, create_unknown=uow.workspace.settings.create_unknown_leads)


def _import(
    workspace: Workspace,
    caller: Identity,
    items: list[Any],
    model: type[Item],
    convert: Callable[[Any], Any],
    write: Callable[[UnitOfWork, list[Any], str, datetime], FactsOutcome],
) -> HistoryResponse:
    results: dict[int, UpsertResult] = {}
    good: list[tuple[int, Any]] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise InvalidInput("an item must be a JSON object", field="")
            good.append((index, convert(model.model_validate(item))))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            results[index] = UpsertResult(
                index=index, status="rejected", reason=f"{where}: {first['msg']}", field=where
            )
        except InvalidInput as error:
            results[index] = UpsertResult(index=index, status="rejected", reason=error.message, field=error.field)
    now = utcnow()
    history = as_history(workspace, now)
    done = FactsOutcome()
    if good:
        done = retrying(history, lambda uow: write(uow, [record for _, record in good], f"api:{caller.name}", now))
        for position, (index, _) in enumerate(good):
            problem = done.problems.get(position)
            results[index] = UpsertResult(
                index=index,
                status=done.statuses[position],
                field=problem[0] if problem else None,
                reason=problem[1] if problem else None,
            )
    rebuilt = rebuild_pending(history, now) if done.lead_ids else 0
    ordered = [results[i] for i in range(len(items))]
    return HistoryResponse(
        created=sum(r.status == "created" for r in ordered),
        updated=sum(r.status == "updated" for r in ordered),
        unchanged=sum(r.status == "unchanged" for r in ordered),
        rejected=sum(r.status == "rejected" for r in ordered),
        leads_rebuilt=rebuilt,
        results=ordered,
    )
