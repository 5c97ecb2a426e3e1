"""Webhooks over HTTP: subscriptions, and the outbox's deliveries with their dead letters."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from qualify.adapters.schema import MAX_ID
from qualify.domain.access import Permission
from qualify.entrypoints.api.deps import WebhookManager, WorkspaceDep, permission_doc
from qualify.entrypoints.api.schemas import DeliveryOut, WebhookCreated, WebhookIn, WebhookOut
from qualify.entrypoints.problems import PROBLEM_RESPONSES
from qualify.service.integrations import webhooks

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
DOC = permission_doc(Permission.MANAGE_WEBHOOKS)
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
NOT_FOUND = {**PROBLEM_RESPONSES, 404: {"description": "No such subscription or delivery"}}


@router.get("", response_model=list[WebhookOut], responses=PROBLEM_RESPONSES, openapi_extra=DOC)
def get_webhooks(workspace: WorkspaceDep, caller: WebhookManager) -> list[WebhookOut]:
    """The active subscriptions, oldest first (never their secrets)."""
    with workspace.unit_of_work() as uow:
        return [WebhookOut(**asdict(s)) for s in webhooks.list_subscriptions(uow)]


@router.post("", status_code=201, response_model=WebhookCreated, responses=PROBLEM_RESPONSES, openapi_extra=DOC)
def post_webhook(body: WebhookIn, workspace: WorkspaceDep, caller: WebhookManager) -> WebhookCreated:
    """Subscribe a URL to kinds of announcement; the answer holds the signing secret, shown this once."""
    with workspace.unit_of_work() as uow:
        subscription, secret = webhooks.add_subscription(
            uow,
            body.url,
            body.kinds,
            secret=body.secret,
            description=body.description,
            by=caller.acts_as,
            key_id=caller.key_id,
        )
    return WebhookCreated(**asdict(subscription), secret=secret)


@router.delete("/{webhook_id}", status_code=204, responses=NOT_FOUND, openapi_extra=DOC)
def delete_webhook(webhook_id: RowId, workspace: WorkspaceDep, caller: WebhookManager) -> None:
    """Remove a subscription: nothing more is sent to it, and its pending deliveries become dead."""
    with workspace.unit_of_work() as uow:
        webhooks.remove_subscription(uow, webhook_id, by=caller.acts_as, key_id=caller.key_id)


@router.get("/deliveries", response_model=list[DeliveryOut], responses=PROBLEM_RESPONSES, openapi_extra=DOC)
def get_deliveries(
    workspace: WorkspaceDep,
    caller: WebhookManager,
    status: Literal["pending", "delivered", "dead"] | None = None,
    subscription_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="the smallest `id` of the previous page")
    ] = None,
) -> list[DeliveryOut]:
    """Deliveries newest first, with attempts and the last error; `status=dead` lists the dead letters."""
    with workspace.unit_of_work() as uow:
        found = webhooks.list_deliveries(
            uow, status=status, subscription_id=subscription_id, limit=limit, before_id=before_id
        )
    return [DeliveryOut(**asdict(d)) for d in found]


@router.post("/deliveries/{delivery_id}/retry", response_model=DeliveryOut, responses=NOT_FOUND, openapi_extra=DOC)
def post_retry(delivery_id: RowId, workspace: WorkspaceDep, caller: WebhookManager) -> DeliveryOut:
    """Queue a dead delivery again, due now, with a fresh set of attempts (the worker sends it)."""
    with workspace.unit_of_work() as uow:
        delivery = webhooks.retry_delivery(uow, delivery_id, by=caller.acts_as, key_id=caller.key_id)
    return DeliveryOut(**asdict(delivery))
