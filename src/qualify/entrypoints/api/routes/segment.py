"""Segment's HTTP tracking API, as its libraries and RudderStack's call it (docs/integrations.md).

`POST /v1/batch` (and `/v1/import`, `/v1/b`) takes a batch; `/v1/track`, `/v1/identify`,
`/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias` (and the browser library's `/v1/t`, `/v1/i`,
`/v1/p`, `/v1/s`, `/v1/g`, `/v1/a`) one message. The write key is a Qualify API key that may
ingest, sent as the HTTP Basic user name (the server libraries) or as `writeKey` in the body (the
browser's, whose text/plain body needs no CORS preflight). A message may be 32 KB, a batch 500 KB
(after gzip is undone, when the body is gzipped): over that, 400, as the spec says.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import zlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from qualify.domain.access import Permission, allows
from qualify.domain.errors import InvalidInput
from qualify.entrypoints.api.deps import WorkspaceDep, authorise, permission_doc
from qualify.entrypoints.api.routes.tracking import CorsRoute
from qualify.entrypoints.observability import EVENTS, INGEST_SECONDS
from qualify.entrypoints.problems import PROBLEM, PROBLEM_RESPONSES, problem
from qualify.entrypoints.ratelimit import RATE_LIMITED, check_ingest
from qualify.service.admin.api_keys import AuthenticationFailed, Identity
from qualify.service.connectors.segment import (
    EVENT_TYPES,
    KINDS,
    MAX_BATCH,
    MAX_MESSAGE,
    Kind,
    Message,
    Outcome,
    apply_messages,
    read_message,
    traits_mapping,
)
from qualify.service.unit_of_work import Workspace, retrying, utcnow

router = APIRouter(prefix="/v1", tags=["segment"], route_class=CorsRoute)
# Segment's answers to what it cannot take: 400 (not 413 or 422), with `code` and `message`.
_RESPONSES = {
    **PROBLEM_RESPONSES,
    **RATE_LIMITED,
    400: {
        "description": "Not JSON, over the spec's sizes (32 KB a message, 500 KB a batch), or a message rejected",
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    },
}

_SHORT = {"track": "t", "identify": "i", "page": "p", "screen": "s", "group": "g", "alias": "a"}
_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "object", "additionalProperties": True},
            "examples": {
                "track": {
                    "summary": "a track call",
                    "value": {
                        "type": "track",
                        "event": "Demo Requested",
                        "userId": "u-1042",
                        "messageId": "7f9c2a1e-4b8d-4c1f-9a0e-2d6b3c5e8f10",
                        "timestamp": "2026-11-20T14:27:00Z",
                        "context": {"traits": {"email": "jane.doe@acme.com"}},
                        "properties": {"plan": "team"},
                    },
                }
            },
        }
    },
}


@router.post(
    "/batch",
    summary="Segment spec: a batch of messages",
    responses=_RESPONSES,
    openapi_extra={**permission_doc(Permission.INGEST), "requestBody": _BODY},
)
async def post_batch(request: Request, workspace: WorkspaceDep) -> JSONResponse:
    """A batch as Segment's and RudderStack's libraries send it: `{"batch": [message, …], "sentAt": …}`;
    or one message with its `type`, as a webhook destination posts it.

    Each message is answered on its own (`accepted`, `duplicate`, `stored` for an anonymous
    visitor's event kept until it is identified, or `rejected` with the field); 200 with
    `success: true` when the batch was read, whatever its messages' fates.
    """
    return await _answer(request, workspace, None)


def _single(kind: Kind) -> Any:
    async def post_one(request: Request, workspace: WorkspaceDep) -> JSONResponse:
        return await _answer(request, workspace, kind)

    post_one.__doc__ = (
        f"One `{kind}` message of the Segment spec (the browser library posts it to `/v1/{_SHORT[kind]}`). "
        "400 with the field when it is rejected."
    )
    return post_one


for _kind in KINDS:
    for _path in (f"/{_kind}", f"/{_SHORT[_kind]}"):
        router.add_api_route(
            _path,
            _single(_kind),
            methods=["POST"],
            summary=f"Segment spec: {_kind}",
            responses=_RESPONSES,
            openapi_extra={**permission_doc(Permission.INGEST), "requestBody": _BODY},
            include_in_schema=_path == f"/{_kind}",
        )
for _path in ("/import", "/b"):  # the batch's other names
    router.add_api_route(_path, post_batch, methods=["POST"], include_in_schema=False)


async def preflight() -> Response:
    """A browser's CORS preflight: allowed from any origin (the write key is the credential)."""
    return Response(status_code=204)


for _path in ("/batch", "/import", "/b", *(f"/{k}" for k in KINDS), *(f"/{s}" for s in _SHORT.values())):
    router.add_api_route(_path, preflight, methods=["OPTIONS"], include_in_schema=False)


async def _answer(request: Request, workspace: WorkspaceDep, kind: Kind | None) -> JSONResponse:
    started = time.perf_counter()
    limit = MAX_BATCH if kind is None else MAX_MESSAGE
    try:
        raw = await _body(request, limit)
        body = _document(raw, kind)
        caller = await run_in_threadpool(authorise, workspace, _write_key(request, body), Permission.INGEST)
    except _Refused as refused:
        return refused.answer
    # A webhook destination posts one message, with its type, where a library posts a batch.
    single = kind is not None or ("batch" not in body and "type" in body)
    items = [body] if single else body.get("batch")
    if not isinstance(items, list):
        return _refusal(400, "invalid-input", "a batch needs `batch`, a list of messages", field="batch")
    if (limited := check_ingest(request, caller, len(items))) is not None:
        return limited
    # A request within 32 KB holds no message over it: each is measured only in a larger batch.
    measure = len(raw) > MAX_MESSAGE
    outcomes = await run_in_threadpool(_apply, workspace, items, kind, body.get("sentAt"), caller, measure)
    INGEST_SECONDS.observe(time.perf_counter() - started)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("accepted", "duplicate", "stored", "rejected")}
    EVENTS.labels("accepted").inc(counts["accepted"] + counts["stored"])
    EVENTS.labels("duplicate").inc(counts["duplicate"])
    EVENTS.labels("rejected").inc(counts["rejected"])
    if single and outcomes[0].status == "rejected":
        return _refusal(400, "invalid-input", outcomes[0].reason or "rejected", field=outcomes[0].field)
    results = [
        {"index": o.index, "messageId": o.message_id, "status": o.status}
        | ({"reason": o.reason, "field": o.field} if o.status == "rejected" else {})
        for o in outcomes
    ]
    return JSONResponse({"success": True, **counts, "results": results})


def _apply(
    workspace: Workspace, items: list[Any], kind: Kind | None, sent_at: Any, caller: Identity, measure: bool
) -> list[Outcome]:
    received_at = utcnow()
    events = {**EVENT_TYPES, **workspace.settings.segment_events}
    messages: list[Message] = []
    unread: list[Outcome] = []
    for index, item in enumerate(items):
        try:
            messages.append(
                read_message(
                    item,
                    index,
                    received_at=received_at,
                    kind=kind,
                    sent_at=sent_at,
                    event_types=events,
                    measure=measure,
                )
            )
        except InvalidInput as error:
            message_id = item.get("messageId") if isinstance(item, dict) else None
            unread.append(
                Outcome(index, str(message_id)[:200] if message_id else None, "rejected", str(error), error.field)
            )
    traits_file, traits = workspace.settings.segment_traits, None
    if traits_file:
        try:
            traits = traits_mapping(Path(traits_file))
        except InvalidInput as error:  # a bad mapping file costs the identify calls, not the events
            reason = f"QUALIFY_SEGMENT_TRAITS: {error}"
            unread += [
                Outcome(m.index, m.event_id, "rejected", reason, "traits") for m in messages if m.kind == "identify"
            ]
            messages = [m for m in messages if m.kind != "identify"]
    applied = retrying(
        workspace,
        lambda uow: apply_messages(
            uow, messages, create_unknown=workspace.settings.create_unknown_leads, now=received_at,
            by=f"segment:{caller.name}", traits=traits, may_merge=allows(caller.role, Permission.WRITE_LEADS),
        ),
    ) if messages else []  # fmt: skip
    return sorted([*applied, *unread], key=lambda o: o.index)


class _Refused(Exception):
    def __init__(self, answer: JSONResponse) -> None:
        self.answer = answer


def _refusal(status: int, kind: str, detail: str, field: str | None = None) -> JSONResponse:
    """A problem (RFC 9457) with Segment's `code` and `message` beside, which its libraries log."""
    extra: dict[str, Any] = {"code": kind, "message": detail, "success": False}
    if field is not None:
        extra["field"] = field
    title = {400: "Invalid input", 401: "Authentication required", 403: "Forbidden"}.get(status, "Refused")
    return problem(status, kind, title, detail, **extra)


async def _body(request: Request, limit: int) -> bytes:
    """The body, gzip undone where it says so, refused past `limit` bytes (undone, too: a small
    gzip bomb is refused as soon as its output passes the limit)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:  # gzipped or not: compressed, it is no larger than the limit either
            raise _Refused(_too_large(limit))
    if request.headers.get("content-encoding", "").lower() != "gzip":
        return bytes(raw)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflate.decompress(bytes(raw), limit + 1)
    except zlib.error:
        raise _Refused(_refusal(400, "invalid-input", "the body says gzip but is not gzip")) from None
    if len(body) > limit or inflate.unconsumed_tail:
        raise _Refused(_too_large(limit))
    return body


def _too_large(limit: int) -> JSONResponse:
    what = "a batch" if limit == MAX_BATCH else "a message"
    return _refusal(400, "too-large", f"{what} may be at most {limit // 1024} KB")


def _document(body: bytes, kind: Kind | None) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise _Refused(_refusal(400, "invalid-input", "the body is not JSON", field="body")) from None
    if not isinstance(document, dict):
        raise _Refused(_refusal(400, "invalid-input", "the body must be a JSON object", field="body"))
    return document


def _write_key(request: Request, body: dict[str, Any]) -> str:
    """The write key: the HTTP Basic user name, a bearer key, else `writeKey` in the body."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            user, _, _ = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationFailed("the Basic credentials are not base64 of 'write key:'") from None
        if user:
            return user
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = body.get("writeKey")
    if isinstance(key, str) and key:
        return key
    raise AuthenticationFailed("send the write key: a Qualify API key as the Basic user name, or writeKey")
