"""Administration: API keys (created with the CLI) and the audit log."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query

from qualify.adapters.schema import MAX_ID
from qualify.domain.access import Permission
from qualify.entrypoints.api.deps import AuditReader, KeyManager, WorkspaceDep, permission_doc
from qualify.entrypoints.api.schemas import KeyOut
from qualify.entrypoints.problems import PROBLEM_RESPONSES
from qualify.service.admin.api_keys import list_keys, revoke_key
from qualify.service.audit import audit_entries

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get(
    "/keys",
    response_model=list[KeyOut],
    responses=PROBLEM_RESPONSES,
    openapi_extra=permission_doc(Permission.MANAGE_KEYS),
)
def get_keys(workspace: WorkspaceDep, caller: KeyManager) -> list[KeyOut]:
    """Every key with its role and when it was last used (never the secret)."""
    with workspace.unit_of_work(read_only=True) as uow:
        return [KeyOut(**asdict(k)) for k in list_keys(uow)]


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    responses={**PROBLEM_RESPONSES, 404: {"description": "No such active key"}},
    openapi_extra=permission_doc(Permission.MANAGE_KEYS),
)
def delete_key(key_id: str, workspace: WorkspaceDep, caller: KeyManager) -> None:
    """Revoke a key: it stops working at once."""
    with workspace.unit_of_work() as uow:
        revoke_key(uow, key_id, by=caller.acts_as)


@router.get("/audit", responses=PROBLEM_RESPONSES, openapi_extra=permission_doc(Permission.READ_AUDIT))
def get_audit(
    workspace: WorkspaceDep,
    caller: AuditReader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="the smallest `id` of the previous page")
    ] = None,
) -> list[dict[str, Any]]:
    """Who did what, when, through which key: newest first."""
    with workspace.unit_of_work(read_only=True) as uow:
        return audit_entries(uow, limit=limit, before_id=before_id)
