"""The request body limit: an oversized body is answered 413 before it fills the memory; and the
batch limit of the routes that take one item or a list (`batch_items`).

A small ASGI middleware in front of every route. A request that declares a `Content-Length` over
the limit is refused before a byte of its body is read; a body sent without one (chunked) is
counted as it streams in and refused as soon as it passes the limit, whatever the route was
doing with it. The answer is a problem document like every other error (docs/api.md, "Limits").
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qualify.domain.errors import InvalidInput
from qualify.entrypoints.api.schemas import MAX_BATCH
from qualify.entrypoints.problems import TooLarge, body_too_deep, problem

MAX_BODY_BYTES = 16 << 20  # 16 MiB: a full batch of 10,000 events at about 1.6 KB each


class BodyTooLarge(TooLarge):
    """A request body over `MAX_BODY_BYTES`."""


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with a 413 problem document."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, f"the body is {declared:,} bytes")
            return

        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(self._detail(f"more than {received:,} bytes"))
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(self._detail(f"more than {received:,} bytes"))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the route made of the cut-off body, the answer is the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(scope, receive, send, f"more than {received:,} bytes were sent")

    def _detail(self, size: str) -> str:
        return f"{size}; the limit for a request body is {self.max_bytes:,} bytes: split the batch"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        response = problem(413, "too-large", "Request too large", self._detail(size))
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before the app sees it
    return None


def batch_items(body: bytes, what: str, *, wrapper: str | None = None) -> list[Any]:
    """The items of a JSON body that is one item or a list of them (or `{wrapper: [...]}`): at least
    one and at most `MAX_BATCH`, else a problem naming `what` the items are."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise body_too_deep() from None
    except ValueError as error:
        raise InvalidInput(f"the body is not JSON: {error}", field="body") from None
    if wrapper is not None and isinstance(data, dict) and set(data) == {wrapper}:
        data = data[wrapper]
    items = data if isinstance(data, list) else [data]
    if len(items) > MAX_BATCH:
        raise TooLarge(f"{len(items):,} {what} in one request; the limit is {MAX_BATCH:,}: split the batch")
    if not items:
        raise InvalidInput(f"no {what} in the request", field="body")
    return items
