"""Leads and accounts: upsert, list with filters and cursors, one lead with its explanation, stage actions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from qualify.adapters.row_files import csv_lines, json_lines
from qualify.domain.access import Permission, Role
from qualify.domain.account_stages import ACCOUNT_ACTIONS
from qualify.domain.errors import InvalidInput, NotYourLead
from qualify.domain.lifecycle import STAGE_ACTIONS
from qualify.domain.records import Account, Lead, normalise_domain
from qualify.entrypoints.api.deps import (
    Eraser,
    LeadReader,
    LeadWriter,
    StageActor,
    WorkspaceDep,
    acting,
    permission_doc,
)
from qualify.entrypoints.api.schemas import (
    MAX_BATCH,
    AccountIn,
    AccountOut,
    AccountPage,
    AccountStageChangeOut,
    AccountSummary,
    LeadIn,
    LeadPage,
    LeadProfileOut,
    LeadSummary,
    StageActionIn,
    StageChangeOut,
    UpsertResponse,
    UpsertResult,
)
from qualify.entrypoints.problems import PROBLEM_RESPONSES, TooLarge
from qualify.entrypoints.ratelimit import RATE_LIMITED, check_ingest
from qualify.service.admin.api_keys import Identity
from qualify.service.lifecycle.accounts import act_on_account
from qualify.service.lifecycle.lead_admin import erase_lead, export_lead, merge_leads
from qualify.service.lifecycle.leads import upsert_accounts, upsert_leads
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.reading.accounts import (
    ACCOUNT_SORTS,
    ACCOUNT_STAGES,
    account_id_of,
    account_view,
    list_accounts,
)
from qualify.service.reading.lead_export import COLUMNS, exported_leads
from qualify.service.reading.lead_list import LeadFilter, list_page
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import retrying

router = APIRouter(prefix="/v1", tags=["leads"])


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"duplicate": "j.doe@acme.com"}]})

    duplicate: str = Field(max_length=254, description="the lead to fold into this one: email, external id or #id")
    by: str | None = Field(
        default=None, max_length=200, description="who merges; default: the key's user, else its name"
    )


class MergeOut(BaseModel):
    kept: str
    merged: str
    events_moved: int


KeyPath = Annotated[str, Path(description="the lead's email, external id, or #id", max_length=254)]
Action = Literal["accept", "reject", "disqualify", "open-opportunity", "win", "lose", "advocate"]
assert set(Action.__args__) == set(STAGE_ACTIONS)  # type: ignore[attr-defined]
AccountSort = Literal["engagement", "leads", "activity", "name", "fit", "coverage"]
assert set(AccountSort.__args__) == set(ACCOUNT_SORTS)  # type: ignore[attr-defined]
AccountStageName = Literal["target", "engaged", "mqa", "opportunity", "customer"]
assert set(AccountStageName.__args__) == set(ACCOUNT_STAGES)  # type: ignore[attr-defined]
AccountAction = Literal["accept", "reject", "lose", "win"]
assert set(AccountAction.__args__) == set(ACCOUNT_ACTIONS)  # type: ignore[attr-defined]
AccountKey = Annotated[str, Path(description="the account's domain, or #id", max_length=254)]


@router.get(
    "/leads", response_model=LeadPage, responses=PROBLEM_RESPONSES, openapi_extra=permission_doc(Permission.READ_LEADS)
)
def get_leads(
    workspace: WorkspaceDep,
    caller: LeadReader,
    stage: str | None = None,
    grade: str | None = None,
    persona: str | None = None,
    owner: str | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    created_from: AwareDatetime | None = None,
    created_to: AwareDatetime | None = None,
    updated_from: AwareDatetime | None = None,
    updated_to: AwareDatetime | None = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="words to find in the name, email, external id, title or company"),
    ] = None,
    segment: Annotated[str | None, Query(max_length=100, description="members of this segment")] = None,
    source: Annotated[str | None, Query(max_length=200)] = None,
    campaign: Annotated[
        str | None, Query(max_length=200, description="the `campaign` of the lead's first event that has one")
    ] = None,
    min_probability: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_probability: Annotated[float | None, Query(ge=0, le=1)] = None,
    active_from: Annotated[AwareDatetime | None, Query(description="newest event at or after")] = None,
    active_to: Annotated[AwareDatetime | None, Query(description="newest event before")] = None,
    sort: Literal["score", "fit", "engagement", "probability", "created", "updated", "activity"] = "score",
    order: Literal["desc", "asc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=400, description="`next_cursor` of the previous page")] = None,
) -> LeadPage:
    """Leads matching every filter given, best first (or `order=asc`); page with `cursor`."""
    wanted = LeadFilter(
        search=q,
        segment=segment,
        source=source,
        campaign=campaign,
        min_probability=min_probability,
        max_probability=max_probability,
        active_from=active_from,
        active_to=active_to,
        ascending=order == "asc",
        stage=stage,
        grade=grade,
        persona=persona,
        owner=owner,
        min_score=min_score,
        max_score=max_score,
        created_from=created_from,
        created_to=created_to,
        updated_from=updated_from,
        updated_to=updated_to,
        sort=sort,
        limit=limit,
        cursor=cursor,
    )
    with workspace.unit_of_work(read_only=True) as uow:
        rows, following = list_page(uow, wanted)
    return LeadPage(items=[LeadSummary(**row) for row in rows], next_cursor=following)


@router.get(
    "/leads/export",
    response_class=StreamingResponse,
    responses={
        **PROBLEM_RESPONSES,
        200: {
            "description": "Every lead the filters match, best first, as CSV or JSON Lines",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        },
    },
    openapi_extra=permission_doc(Permission.READ_LEADS),
)
def export_leads(
    workspace: WorkspaceDep,
    caller: LeadReader,
    format: Literal["csv", "jsonl"] = "csv",
    stage: Annotated[str | None, Query(max_length=20)] = None,
    grade: Annotated[str | None, Query(max_length=1)] = None,
    owner: Annotated[str | None, Query(max_length=200)] = None,
    segment: Annotated[str | None, Query(max_length=100)] = None,
) -> StreamingResponse:
    """Every lead with its scores, probability, stage, owner and the reason of its stage, oldest
    first: the columns of `qualify export leads` (docs/cli.md), streamed a page at a time."""
    wanted = LeadFilter(stage=stage, grade=grade, owner=owner, segment=segment)
    with workspace.unit_of_work(read_only=True) as uow:
        list_page(uow, replace(wanted, limit=1))  # a bad filter is a 422 before the download starts

    def lines() -> Iterator[str]:
        write = csv_lines if format == "csv" else json_lines
        yield from write(list(COLUMNS), exported_leads(workspace, wanted))

    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(
        lines(), media_type=media, headers={"Content-Disposition": f'attachment; filename="leads.{format}"'}
    )


@router.get(
    "/leads/{key}",
    response_model=LeadProfileOut,
    responses={**PROBLEM_RESPONSES, 404: {"description": "No such lead"}},
    openapi_extra=permission_doc(Permission.READ_LEADS),
)
def get_lead(
    key: KeyPath,
    workspace: WorkspaceDep,
    caller: LeadReader,
    timeline_limit: Annotated[int, Query(ge=0, le=1000)] = 20,
    timeline_offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> LeadProfileOut:
    """Profile, account, scores with their explanations, owner, stage history and a page of the timeline."""
    with workspace.unit_of_work(read_only=True) as uow:
        profile = lead_profile(uow, key, timeline_limit=timeline_limit, timeline_offset=timeline_offset)
    return LeadProfileOut.model_validate(profile.as_dict())


@router.put(
    "/leads",
    response_model=UpsertResponse,
    responses={**PROBLEM_RESPONSES, **RATE_LIMITED},
    openapi_extra=permission_doc(Permission.WRITE_LEADS),
)
def put_leads(
    request: Request, body: LeadIn | list[LeadIn], workspace: WorkspaceDep, caller: LeadWriter
) -> UpsertResponse | JSONResponse:
    """Create or update leads (by email, then external id) and their accounts (by domain).

    Each lead counts against the key's ingestion rate limit, as an event does: over it, 429.
    """
    items = body if isinstance(body, list) else [body]
    if len(items) > MAX_BATCH:
        raise TooLarge(f"{len(items):,} leads in one request; the limit is {MAX_BATCH:,}")
    if (limited := check_ingest(request, caller, len(items), "leads")) is not None:
        return limited
    results: dict[int, UpsertResult] = {}
    leads: list[tuple[int, Lead]] = []
    accounts: list[Account] = []
    for index, item in enumerate(items):
        try:
            account = _account(item.account) if item.account is not None else None
        except InvalidInput as error:  # the lead is refused with its account: half a lead is not kept
            results[index] = UpsertResult(
                index=index, status="rejected", reason=error.message, field=f"account.{error.field}"
            )
            continue
        try:
            leads.append((index, Lead(**item.model_dump(exclude={"account"}))))
        except InvalidInput as error:
            results[index] = UpsertResult(index=index, status="rejected", reason=error.message, field=error.field)
            continue
        if account is not None:
            accounts.append(account)
    outcome = retrying(
        workspace,
        lambda uow: upsert_leads(uow, [lead for _, lead in leads], accounts=accounts, by=f"api:{caller.name}"),
    )
    for position, (index, _) in enumerate(leads):
        refused = outcome.errors.get(position)
        results[index] = UpsertResult(
            index=index,
            status=outcome.statuses[position],
            reason=refused.message if refused else None,
            field=refused.field if refused else None,
        )
    return _answer([results[i] for i in range(len(items))])


@router.put(
    "/accounts",
    response_model=UpsertResponse,
    responses={**PROBLEM_RESPONSES, **RATE_LIMITED},
    openapi_extra=permission_doc(Permission.WRITE_LEADS),
)
def put_accounts(
    request: Request, body: AccountIn | list[AccountIn], workspace: WorkspaceDep, caller: LeadWriter
) -> UpsertResponse | JSONResponse:
    """Create or update accounts by domain; the fit of their leads is rescored.

    Each account counts against the key's ingestion rate limit, as an event does: over it, 429.
    """
    items = body if isinstance(body, list) else [body]
    if len(items) > MAX_BATCH:
        raise TooLarge(f"{len(items):,} accounts in one request; the limit is {MAX_BATCH:,}")
    if (limited := check_ingest(request, caller, len(items), "accounts")) is not None:
        return limited
    results: dict[int, UpsertResult] = {}
    accepted: list[tuple[int, Account]] = []
    for index, item in enumerate(items):
        try:
            accepted.append((index, _account(item)))
        except InvalidInput as error:
            results[index] = UpsertResult(index=index, status="rejected", reason=error.message, field=error.field)
    outcome = retrying(workspace, lambda uow: upsert_accounts(uow, [a for _, a in accepted], by=f"api:{caller.name}"))
    for (index, _), status in zip(accepted, outcome.statuses, strict=True):
        results[index] = UpsertResult(index=index, status=status)
    return _answer([results[i] for i in range(len(items))])


@router.get(
    "/accounts",
    response_model=AccountPage,
    responses=PROBLEM_RESPONSES,
    openapi_extra=permission_doc(Permission.READ_LEADS),
)
def get_accounts(
    workspace: WorkspaceDep,
    caller: LeadReader,
    q: Annotated[str | None, Query(max_length=200, description="words to find in the name or domain")] = None,
    owner: Annotated[
        str | None, Query(max_length=200, description="accounts this rep owns, or where they own a lead")
    ] = None,
    stage: AccountStageName | None = None,
    sort: AccountSort = "engagement",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AccountPage:
    """Accounts with their people and pipeline counted and, where the active model has an
    `accounts` section, their scores explained; the most engaged first (or by `sort`)."""
    with workspace.unit_of_work(read_only=True) as uow:
        rows, total = list_accounts(uow, search=q, owner=owner, stage=stage, sort=sort, limit=limit, offset=offset)
    return AccountPage(items=[AccountSummary.model_validate(row.as_dict()) for row in rows], total=total)


@router.get(
    "/accounts/{key}",
    response_model=AccountOut,
    responses={**PROBLEM_RESPONSES, 404: {"description": "No such account"}},
    openapi_extra=permission_doc(Permission.READ_LEADS),
)
def get_account(key: AccountKey, workspace: WorkspaceDep, caller: LeadReader) -> AccountOut:
    """An account with its scores explained (fit, its people's engagement, its buying group's
    coverage: where the active model has an `accounts` section), its people and open deals."""
    with workspace.unit_of_work(read_only=True) as uow:
        view = account_view(uow, account_id_of(uow, key))
    return AccountOut.model_validate(view.as_dict())


@router.post(
    "/accounts/{key}/actions/{action}",
    response_model=AccountStageChangeOut,
    response_model_by_alias=True,
    responses={
        **PROBLEM_RESPONSES,
        404: {"description": "No such account"},
        409: {"description": "The account's stage does not allow it"},
    },
    openapi_extra=permission_doc(Permission.STAGE_ACTIONS),
)
def post_account_action(
    key: AccountKey, action: AccountAction, body: StageActionIn, workspace: WorkspaceDep, caller: StageActor
) -> AccountStageChangeOut:
    """A person's action on an account (accept or reject an MQA, lose or win its opportunity),
    with the same rules and errors as `qualify account-stage ACTION`. A sales key acts only on
    the accounts its user owns, or that nobody owns yet."""
    by, owned_by = _acting_rep(caller, body.by)
    with workspace.unit_of_work() as uow:
        change = act_on_account(
            uow, account_id_of(uow, key), action, by=by, reason=body.reason, note=body.note, now=body.at,
            owned_by=owned_by,
        )  # fmt: skip
    return AccountStageChangeOut.model_validate(change.as_dict())


def _answer(ordered: list[UpsertResult]) -> UpsertResponse:
    """The counts and the per-item results of an upsert, in request order."""
    return UpsertResponse(
        created=sum(r.status == "created" for r in ordered),
        updated=sum(r.status == "updated" for r in ordered),
        unchanged=sum(r.status == "unchanged" for r in ordered),
        rejected=sum(r.status == "rejected" for r in ordered),
        results=ordered,
    )


def _acting_rep(caller: Identity, by: str | None) -> tuple[str, str | None]:
    """Who acts for a key that takes stage actions, and the rep whose leads (and accounts) it may
    act on: a sales key's user (one bound to nobody may read but not act), None for the others."""
    if caller.role is Role.SALES and caller.user is None:
        raise NotYourLead(
            "this sales key is bound to no user, so it may read but not act; make one that acts for a rep "
            "with `qualify keys create NAME --role sales --user REP`"
        )
    return acting(caller, by), caller.user if caller.role is Role.SALES else None


def _account(item: AccountIn) -> Account:
    data = item.model_dump()
    data["domain"] = normalise_domain(data["domain"])
    return Account(**data)


@router.post(
    "/leads/{key}/actions/{action}",
    response_model=StageChangeOut,
    response_model_by_alias=True,
    responses={
        **PROBLEM_RESPONSES,
        404: {"description": "No such lead"},
        409: {"description": "The lead's stage does not allow it"},
    },
    openapi_extra=permission_doc(Permission.STAGE_ACTIONS),
)
def post_stage_action(
    key: KeyPath, action: Action, body: StageActionIn, workspace: WorkspaceDep, caller: StageActor
) -> StageChangeOut:
    """A person's stage action, with the same rules and errors as `qualify stage ACTION`.

    A key bound to a user acts as that user (`by`, if sent, must name them); a sales key acts
    only on the leads its user owns (403 `not-your-lead` otherwise), as in the dashboard."""
    by, owned_by = _acting_rep(caller, body.by)
    with workspace.unit_of_work() as uow:
        change = apply_stage_action(
            uow,
            key,
            action,
            by=by,
            reason=body.reason,
            note=body.note,
            at=body.at,
            key_id=caller.key_id,
            owned_by=owned_by,
        )
    return StageChangeOut.model_validate(change.as_dict(action))


@router.post(
    "/leads/{key}/merge",
    response_model=MergeOut,
    responses={**PROBLEM_RESPONSES, 404: {"description": "No such lead"}},
    openapi_extra=permission_doc(Permission.WRITE_LEADS),
)
def post_merge(key: KeyPath, body: MergeIn, workspace: WorkspaceDep, caller: LeadWriter) -> MergeOut:
    """Fold the duplicate into this lead: all events kept, the duplicate's keys redirected here."""
    with workspace.unit_of_work() as uow:
        result = merge_leads(uow, key, body.duplicate, by=acting(caller, body.by), key_id=caller.key_id)
    return MergeOut(kept=result.kept, merged=result.merged, events_moved=result.events_moved)


@router.get(
    "/leads/{key}/export",
    responses={**PROBLEM_RESPONSES, 404: {"description": "No such lead"}},
    openapi_extra=permission_doc(Permission.READ_LEADS),
)
def get_export(key: KeyPath, workspace: WorkspaceDep, caller: LeadReader) -> dict[str, Any]:
    """Everything held about the person (GDPR access and portability): profile, account, every
    event, stage history, assignments, aliases and the audit entries about them."""
    with workspace.unit_of_work(read_only=True) as uow:
        document = export_lead(uow, key)
    encoded: dict[str, Any] = jsonable_encoder(document)
    return encoded


@router.delete(
    "/leads/{key}",
    status_code=204,
    responses={**PROBLEM_RESPONSES, 404: {"description": "No such lead"}},
    openapi_extra=permission_doc(Permission.ERASE),
)
def delete_lead(key: KeyPath, workspace: WorkspaceDep, caller: Eraser) -> None:
    """Erase the person (GDPR): events and personal data deleted; the nameless row stays so the
    funnel's counts do not change. The audit log names the lead by id only."""
    with workspace.unit_of_work() as uow:
        erase_lead(uow, key, by=caller.acts_as, key_id=caller.key_id)
