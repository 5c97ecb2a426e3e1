"""Errors as problem details (RFC 9457): a type, a title, a status and what exactly was wrong."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from qualify.adapters.store import storage_failure
from qualify.domain.errors import (
    Conflict,
    IllegalTransition,
    InvalidInput,
    ModelError,
    NotFound,
    NotYourLead,
    QualifyError,
)
from qualify.domain.records import MAX_DOCUMENT_DEPTH
from qualify.service.admin.api_keys import AuthenticationFailed
from qualify.service.unit_of_work import StoreUnavailable

_log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
BASE = "https://qualify.dev/problems/"  # a stable identifier, not a page the API fetches


class Forbidden(QualifyError):
    """The key is valid but its role lacks the permission."""


class TooLarge(QualifyError):
    """A batch or field over the documented limits."""


_STATUS: list[tuple[type[Exception], int, str, str]] = [
    (AuthenticationFailed, 401, "unauthenticated", "Missing or invalid API key"),
    (Forbidden, 403, "forbidden", "The key's role does not allow this"),
    (NotYourLead, 403, "not-your-lead", "A sales key acts only on its rep's own leads"),
    (NotFound, 404, "not-found", "Not found"),
    (IllegalTransition, 409, "illegal-transition", "The lifecycle does not allow this stage change"),
    (StoreUnavailable, 503, "store-unavailable", "The database cannot store anything now"),
    (Conflict, 409, "conflict", "Concurrent changes: try again"),
    (TooLarge, 413, "too-large", "Request too large"),
    (ModelError, 422, "invalid-model", "The scoring model does not validate"),
    (InvalidInput, 422, "invalid-input", "Invalid input"),
    (QualifyError, 400, "bad-request", "Bad request"),
]


def problem(status: int, kind: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": BASE + kind, "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": 'Bearer realm="qualify"'} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _from_error(error: Exception) -> JSONResponse:
    for kind, status, slug, title in _STATUS:
        if isinstance(error, kind):
            extra: dict[str, Any] = {}
            if isinstance(error, ModelError):
                extra["problems"] = [p.as_dict() for p in error.problems]
                return problem(status, slug, title, f"{len(error.problems)} problem(s) in the scoring model", **extra)
            if isinstance(error, InvalidInput) and error.field:
                extra["field"] = error.field
                return problem(status, slug, title, error.message, **extra)
            return problem(status, slug, title, str(error), **extra)
    raise error


def install_problem_handlers(app: FastAPI) -> None:
    async def on_qualify_error(_: Request, error: Exception) -> JSONResponse:
        return _from_error(error)

    async def on_validation(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
            for e in error.errors()
        ]
        detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors[:5])
        return problem(422, "invalid-input", "Invalid input", detail, errors=errors)

    async def on_http(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, StarletteHTTPException)
        if error.status_code == 400 and isinstance(error.__cause__, RecursionError):
            # FastAPI answers a body too deeply nested for Python's JSON reader with a bare 400.
            return _from_error(body_too_deep())
        return problem(error.status_code, f"http-{error.status_code}", str(error.detail), str(error.detail))

    async def on_store_refusal(_: Request, error: Exception) -> JSONResponse:
        # A value the store refuses (a NUL, a number out of its range) that no check caught
        # first: bad input all the same, said without the statement. Logged, to add the check.
        assert isinstance(error, DataError)
        reason = _first_line(error.orig)
        _log.warning("the store refused a value: %s", reason)
        return problem(422, "invalid-input", "Invalid input", f"the store cannot hold a value sent: {reason}")

    async def on_unexpected(_: Request, error: Exception) -> JSONResponse:
        return unexpected(error)

    app.add_exception_handler(QualifyError, on_qualify_error)
    app.add_exception_handler(DataError, on_store_refusal)
    app.add_exception_handler(Exception, on_unexpected)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


def unexpected(error: Exception) -> JSONResponse:
    """The answer to an error no handler expected (the request-id middleware sends it, with the id)."""
    # A full disk or a read-only database is no bug: 503 naming it (and an error in the log).
    if isinstance(error, OperationalError) and (why := storage_failure(error)) is not None:
        return _from_error(StoreUnavailable(why))
    # A bug, not bad input: say so in the same shape, without internals in the answer.
    return problem(500, "internal-error", "Internal error", "something went wrong on the server; it is logged")


def body_too_deep() -> InvalidInput:
    """A request body nested too deeply for Python's JSON reader: refused as a whole."""
    return InvalidInput(
        "the body nests JSON objects or lists too deeply to read "
        f"(attributes and properties may nest {MAX_DOCUMENT_DEPTH} levels)",
        field="body",
    )


def _first_line(error: BaseException | None) -> str:
    """The database's own words, without the statement or parameters that follow them."""
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else "a value out of range or not storable"


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": title,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for status, title in (
        (401, "Missing or invalid API key"),
        (403, "The key's role does not allow this"),
        (413, "Request too large: over the body or batch limits (docs/api.md, Limits)"),
        (422, "Invalid input"),
    )
}
