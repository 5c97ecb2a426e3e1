"""Web tracking: the snippet, page views of anonymous visitors, and their identification (public routes).

Tracked sites are other origins: the snippet posts with a text/plain body (a "simple" request,
no CORS preflight) and these routes answer every request, errors included, with permissive CORS
headers. No API key: the visitor id is the only thing a caller names, and nothing a caller could
learn about a lead is ever answered.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Coroutine
from functools import lru_cache
from importlib.resources import files
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from qualify.domain.errors import InvalidInput
from qualify.entrypoints.api.deps import PUBLIC_DOC, WorkspaceDep
from qualify.entrypoints.problems import PROBLEM, TooLarge
from qualify.entrypoints.ratelimit import RATE_LIMITED, check_visitor
from qualify.service.unit_of_work import retrying
from qualify.service.web_tracking import visitors as tracking

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Max-Age": "86400",
}
SNIPPET_MAX_AGE = 3600  # seconds a browser or CDN may keep the snippet before asking again (ETag then)


class CorsRoute(APIRoute):
    """A route whose every answer carries the CORS headers, problems included: the app's exception
    handlers run outside the route, where a header added by the route itself would be lost."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_cors(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as error:
                response = await _handled(request, error)
            response.headers.update(CORS_HEADERS)
            return response

        return with_cors


async def _handled(request: Request, error: Exception) -> Response:
    """The answer the app's own handler gives to `error` (a bug, with no handler but the catch-all,
    is raised on to be logged as one)."""
    for kind in type(error).__mro__:
        if kind is Exception:
            break
        handler = request.app.exception_handlers.get(kind)
        if handler is not None:
            response: Response = await handler(request, error)
            return response
    raise error


M = TypeVar("M", bound=BaseModel)

router = APIRouter(prefix="/t", tags=["tracking"], route_class=CorsRoute)


class PageViewIn(BaseModel):
    """A page view as the snippet sends it. Unknown keys are ignored (newer snippets may send more)."""

    model_config = ConfigDict(extra="ignore")

    visitor: str = Field(pattern=tracking.VISITOR_PATTERN, description="The random id the snippet keeps.")
    event_id: str = Field(pattern=tracking.EVENT_ID_PATTERN, description="Made in the browser: a replay is ignored.")
    url: str = Field(max_length=tracking.MAX_URL, description="The page's absolute http(s) URL.")
    title: str | None = Field(default=None, max_length=tracking.MAX_TITLE)
    referrer: str | None = Field(default=None, max_length=tracking.MAX_URL)


class IdentifyIn(BaseModel):
    """A form with an email was submitted on a tracked page."""

    model_config = ConfigDict(extra="ignore")

    visitor: str = Field(pattern=tracking.VISITOR_PATTERN)
    event_id: str = Field(pattern=tracking.EVENT_ID_PATTERN, description="Made in the browser for this submit.")
    email: str = Field(max_length=254)
    first_name: str | None = Field(default=None, max_length=tracking.MAX_NAME)
    last_name: str | None = Field(default=None, max_length=tracking.MAX_NAME)
    url: str | None = Field(default=None, max_length=tracking.MAX_URL, description="The page of the form.")
    title: str | None = Field(default=None, max_length=tracking.MAX_TITLE)
    form: str | None = Field(default=None, max_length=tracking.MAX_FORM, description="The form's id or name.")


class PageViewAnswer(BaseModel):
    status: Literal["stored", "ingested", "duplicate", "dropped"] = Field(
        description="stored: kept for the anonymous visitor; ingested: onto its lead; duplicate: "
        "the event id was seen before; dropped: not kept (the reason says why)."
    )
    reason: str | None = None


class IdentifyAnswer(BaseModel):
    status: Literal["identified", "unknown_lead"] = Field(
        description="unknown_lead: the email names no lead and this workspace does not create leads from events."
    )
    stitched: int = Field(description="Anonymous page views moved onto the lead by this call.")


def _body_doc(model: type[BaseModel], example: dict[str, Any]) -> dict[str, Any]:
    content = {
        "schema": model.model_json_schema(),
        "examples": {"snippet": {"summary": "as the snippet sends it", "value": example}},
    }
    return {
        **PUBLIC_DOC,
        "requestBody": {
            "required": True,
            "description": f"JSON, sent as text/plain (no CORS preflight) or application/json; "
            f"at most {tracking.MAX_BODY:,} bytes.",
            "content": {"text/plain": content, "application/json": content},
        },
    }


_VISITOR_EXAMPLE = "3f2a9c0d4b1e8f7a6c5d4e3f2a1b0c9d"
_PAGE_VIEW_EXAMPLE = {
    "visitor": _VISITOR_EXAMPLE,
    "event_id": "9b1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e",
    "url": "https://www.acme.com/pricing?utm_campaign=spring",
    "title": "Pricing | Acme",
    "referrer": "https://www.acme.com/",
}
_IDENTIFY_EXAMPLE = {
    "visitor": _VISITOR_EXAMPLE,
    "event_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "email": "jane.doe@acme.com",
    "first_name": "Jane",
    "last_name": "Doe",
    "form": "contact-sales",
    "url": "https://www.acme.com/contact",
    "title": "Contact sales | Acme",
}


_PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": title, "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    for status, title in ((413, "The body is larger than the limit"), (422, "Invalid input: the field is named"))
}
_PROBLEMS[429] = {
    **RATE_LIMITED[429],
    "description": "Too many calls from this address (QUALIFY_TRACKING_RATE, QUALIFY_TRACKING_BURST)",
}


@router.get(
    "/qualify.js",
    summary="The tracking snippet",
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}}, "description": "The snippet (cacheable, with an ETag)"}},
    openapi_extra=PUBLIC_DOC,
)
def snippet(request: Request) -> Response:
    """Our own few lines of JavaScript: page views, and identification on a form with an email.

    Include it with `<script src="https://QUALIFY/t/qualify.js" async></script>`; see docs/tracking.md.
    """
    body, etag = _snippet()
    headers = {"Cache-Control": f"public, max-age={SNIPPET_MAX_AGE}", "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)


@lru_cache(maxsize=1)
def _snippet() -> tuple[bytes, str]:
    """The packaged file and its ETag, read once per process (it changes only with a release)."""
    body = files("qualify.entrypoints.api").joinpath("static/qualify.js").read_bytes()
    return body, f'"{hashlib.sha256(body).hexdigest()[:16]}"'


@router.post(
    "/events",
    summary="Record a page view of a visitor",
    response_model=PageViewAnswer,
    responses=_PROBLEMS,
    openapi_extra=_body_doc(PageViewIn, _PAGE_VIEW_EXAMPLE),
)
async def post_page_view(request: Request, workspace: WorkspaceDep) -> PageViewAnswer | JSONResponse:
    """Kept for the visitor while it is anonymous; ingested onto its lead (`page_view`, id
    `web:<event_id>`) once it has identified. Timed by the server's clock when it arrives."""
    if (limited := check_visitor(request)) is not None:
        return limited
    data = _parse(PageViewIn, await _body(request))
    view = tracking.page_view(data.visitor, data.event_id, data.url, data.title, data.referrer)
    create = workspace.settings.create_unknown_leads
    outcome = await run_in_threadpool(
        retrying, workspace, lambda uow: tracking.record_page_view(uow, view, create_unknown=create)
    )
    return PageViewAnswer(status=outcome.status, reason=outcome.reason)


@router.post(
    "/identify",
    summary="Identify a visitor by email",
    response_model=IdentifyAnswer,
    responses=_PROBLEMS,
    openapi_extra=_body_doc(IdentifyIn, _IDENTIFY_EXAMPLE),
)
async def post_identify(request: Request, workspace: WorkspaceDep) -> IdentifyAnswer | JSONResponse:
    """Find or create the lead of the email, link the visitor to it, and stitch the visitor's
    anonymous page views onto it with their original times, with a `form_submit` event for the
    submit itself — all in one transaction, so a retry changes nothing."""
    if (limited := check_visitor(request)) is not None:
        return limited
    data = _parse(IdentifyIn, await _body(request))
    who = tracking.identification(
        data.visitor,
        data.event_id,
        data.email,
        first_name=data.first_name,
        last_name=data.last_name,
        url=data.url,
        title=data.title,
        form=data.form,
    )
    create = workspace.settings.create_unknown_leads
    outcome = await run_in_threadpool(
        retrying, workspace, lambda uow: tracking.identify(uow, who, create_unknown=create)
    )
    return IdentifyAnswer(status=outcome.status, stitched=outcome.stitched)


@router.options("/events", include_in_schema=False)
@router.options("/identify", include_in_schema=False)
def preflight() -> Response:
    """A CORS preflight (a site posting JSON with fetch sends one): allowed from anywhere."""
    return Response(status_code=204)


async def _body(request: Request) -> bytes:
    """The body, refused past `MAX_BODY` without reading more of it than that."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > tracking.MAX_BODY:
        raise TooLarge(f"the body is {int(declared):,} bytes; the limit is {tracking.MAX_BODY:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > tracking.MAX_BODY:
            raise TooLarge(f"the body is over the limit of {tracking.MAX_BODY:,} bytes")
    return bytes(body)


def _parse(model: type[M], body: bytes) -> M:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInput("the body is not JSON", field="body") from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(error.errors()) from None
