"""Per-key rate limiting of ingestion: a token bucket per API key, counted in records.

Events, leads and accounts sent to POST /v1/events, PUT /v1/leads and PUT /v1/accounts draw
from one bucket per key: a request of 500 events costs 500 tokens, so batching cannot get round
the limit. Each key's bucket holds at most `burst` tokens and refills at `rate` tokens per
second; a request that needs more than the bucket holds is refused whole (nothing of it is
applied) with 429 and a `Retry-After` saying when it would pass. The public tracking posts are
limited the same way per client address, and failed dashboard sign-ins per address and name.

The buckets live in the memory of one server process: with `qualify serve --workers N` every
process keeps its own, so a key that spreads its requests over the processes gets up to N times
the limit (docs/security.md). A restart refills every bucket.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from qualify.entrypoints.problems import PROBLEM, problem
from qualify.service.admin.api_keys import Identity
from qualify.settings import Settings

# Keys idle this long have full buckets again: their entries are dropped, so memory stays bounded
# by the keys active in the last hour (and a full bucket is what a fresh entry starts with anyway).
_IDLE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Decision:
    """What the bucket says about one request: admitted, or how long to wait before it would be."""

    allowed: bool
    retry_after: float = 0.0  # seconds; 0 when allowed; inf when the request can never pass
    remaining: float = 0.0  # tokens left after the request (allowed) or now (refused)


class TokenBucket:
    """Buckets of `burst` tokens, refilled at `rate` per second, one per key; thread-safe.

    `clock` returns seconds (monotonic); tests inject their own so that nothing sleeps.
    """

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("a token bucket needs a rate and a burst above 0")
        self.rate, self.burst, self._clock = float(rate), float(burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()
        self._swept = clock()

    def take(self, key: str, cost: float) -> Decision:
        """Take `cost` tokens from `key`'s bucket if it holds them; else take nothing."""
        with self._lock:
            now = self._clock()
            self._sweep(now)
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
            if cost <= tokens:
                self._buckets[key] = (tokens - cost, now)
                return Decision(True, 0.0, tokens - cost)
            self._buckets[key] = (tokens, now)
            if cost > self.burst:
                return Decision(False, math.inf, tokens)
            return Decision(False, (cost - tokens) / self.rate, tokens)

    def _sweep(self, now: float) -> None:
        if now - self._swept < _IDLE_SECONDS:
            return
        self._swept = now
        for key in [k for k, (_, at) in self._buckets.items() if now - at >= _IDLE_SECONDS]:
            del self._buckets[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": (
            "The key sent more records than its ingestion rate limit allows (QUALIFY_INGEST_RATE, QUALIFY_INGEST_BURST)"
        ),
        "headers": {
            "Retry-After": {
                "description": "Whole seconds after which the same request would be admitted",
                "schema": {"type": "integer", "minimum": 1},
            }
        },
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
}


def app_bucket(request: Request, name: str, limits: Callable[[Settings], tuple[float, float]]) -> TokenBucket | None:
    """The app's bucket `name`, made on first use from `limits` of the workspace's settings (rate,
    burst; None when the rate is 0: off)."""
    state = request.app.state
    if not hasattr(state, name):
        rate, burst = limits(state.workspace.settings)
        setattr(state, name, TokenBucket(rate, burst) if rate > 0 else None)
    limiter: TokenBucket | None = getattr(state, name)
    return limiter


def ingest_limiter(request: Request) -> TokenBucket | None:
    """The app's per-key ingestion bucket (None: off)."""
    return app_bucket(request, "ingest_limiter", lambda s: (s.ingest_rate, s.ingest_burst))


def check_visitor(request: Request) -> JSONResponse | None:
    """None when the client address may post one more tracking call now; else the 429 to answer.

    The tracking routes have no key: a flood from one address is what is bounded."""
    limiter = app_bucket(request, "tracking_limiter", lambda s: (s.tracking_rate, s.tracking_burst))
    if limiter is None:
        return None
    address = request.client.host if request.client else ""
    decision = limiter.take(address, 1)
    if decision.allowed:
        return None
    wait = max(1, math.ceil(decision.retry_after))
    detail = (
        f"more than {limiter.rate:g} tracking calls a second (bursts of {limiter.burst:,.0f}) from this "
        f"address; retry after {wait} s"
    )
    return _refused("Too many tracking calls from this address", detail, wait)


def check_ingest(request: Request, caller: Identity, events: int, what: str = "events") -> JSONResponse | None:
    """None when `caller` may ingest `events` records (`what`: events, leads, accounts) now; else the
    429 problem to answer."""
    limiter = ingest_limiter(request)
    if limiter is None:
        return None
    decision = limiter.take(caller.key_id, events)
    if decision.allowed:
        return None
    return too_many(limiter, caller, events, decision, what)


def too_many(limiter: TokenBucket, caller: Identity, events: int, decision: Decision, what: str) -> JSONResponse:
    limit = f"{limiter.rate:g} records per second with bursts of up to {limiter.burst:,.0f}"
    who = f"key {caller.key_id} ({caller.name})"
    if math.isinf(decision.retry_after):
        detail = (
            f"{who}: a request of {events:,} {what} is more than the burst allowed to one key "
            f"({limit}): split the batch"
        )
        wait = 60
    else:
        wait = max(1, math.ceil(decision.retry_after))
        detail = (
            f"{who} is over its ingestion rate limit of {limit}: {events:,} {what} asked, "
            f"{math.floor(decision.remaining):,} available now; retry after {wait} s. Nothing of this request was applied"
        )
    return _refused("Too many records for this key", detail, wait, key_id=caller.key_id)


def _refused(title: str, detail: str, wait: int, **extra: Any) -> JSONResponse:
    """The 429 problem, with the wait in its body and in `Retry-After`."""
    response = problem(429, "rate-limited", title, detail, **extra, retry_after=wait)
    response.headers["Retry-After"] = str(wait)
    return response
