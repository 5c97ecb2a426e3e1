"""For the operator: `/readyz` (does the database answer?) and `/metrics` (Prometheus)."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from qualify.domain.access import Permission
from qualify.entrypoints.api.deps import PUBLIC_DOC, MetricsReader, WorkspaceDep, permission_doc
from qualify.entrypoints.observability import exposition
from qualify.entrypoints.problems import PROBLEM_RESPONSES
from qualify.service.reading.operations import database_answers

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get(
    "/readyz",
    summary="Readiness: the database answers (no key needed)",
    responses={503: {"description": "The database does not answer: take this process out of rotation"}},
    openapi_extra=PUBLIC_DOC,
)
async def readyz(workspace: WorkspaceDep) -> JSONResponse:
    """200 when a query on the database answers now, else 503 (why is logged, not answered)."""
    why = await run_in_threadpool(database_answers, workspace)
    if why is None:
        return JSONResponse({"status": "ready"})
    # A public route: the driver's words (host, port, user) go to the log, not to the caller.
    log.warning("not ready: the database does not answer (%s)", why)
    return JSONResponse({"status": "unavailable", "detail": "the database does not answer"}, status_code=503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
    responses={**PROBLEM_RESPONSES, 200: {"content": {"text/plain": {}}, "description": "Prometheus' text format"}},
    openapi_extra=permission_doc(Permission.READ_METRICS),
)
async def metrics(workspace: WorkspaceDep, caller: MetricsReader) -> Response:
    """Events accepted, duplicate and rejected; ingestion latency; the webhook outbox and its dead
    letters; the email queue; MQLs past their SLA; leads by stage (docs/operations.md)."""
    body = await run_in_threadpool(exposition, workspace)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
