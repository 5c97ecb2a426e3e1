"""Webhooks: subscriptions, and delivery of the outbox with signatures, retries and dead letters.

A delivery is a POST of JSON to the subscription's URL (docs/webhooks.md):

    {"id": 42, "kind": "stage.changed", "created_at": "2026-03-02T09:00:00+00:00", "data": {...}}

signed with the subscription's secret:

    Qualify-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
    Qualify-Delivery: 42
    Qualify-Kind: stage.changed

>>> header = signature("s3cret-s3cret-s3cret", b'{"id":1}', 1767225600)
>>> verify_signature("s3cret-s3cret-s3cret", b'{"id":1}', header, now=1767225630)
True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection, Row, select, update

from qualify.adapters import schema
from qualify.adapters.webhook_client import PUBLIC_ONLY, Allowed, Outcome, internal_host, post
from qualify.domain.errors import InvalidInput, NotFound
from qualify.service import delivery
from qualify.service.audit import record_audit
from qualify.service.delivery import RetryPolicy
from qualify.service.integrations.announcements import DEAD, DELIVERED, PENDING, STATUSES, normalise_kind
from qualify.service.unit_of_work import UnitOfWork, Workspace, utcnow
from qualify.settings import Settings

SIGNATURE_HEADER, DELIVERY_HEADER, KIND_HEADER = "Qualify-Signature", "Qualify-Delivery", "Qualify-Kind"
SECRET_PREFIX = "whsec_"
CLAIM_BATCH = 50  # deliveries claimed per short transaction

# The outbox as leased delivery sees it: a claim leaves a row `pending` and moves its due time a
# lease ahead, so a worker that dies mid-send leaves it due again (at least once).
QUEUE = delivery.Queue(schema.webhook_deliveries, pending=PENDING, done=DELIVERED, dead=DEAD)


# --- subscriptions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookSubscription:
    """Where announcements of some kinds are sent (never shows the secret)."""

    id: int
    url: str
    kinds: tuple[str, ...]
    description: str | None
    active: bool
    created_at: datetime


def _subscription(row: Row[Any]) -> WebhookSubscription:
    return WebhookSubscription(row.id, row.url, tuple(row.kinds), row.description, row.active, row.created_at)


def check_url(url: str, allowed: Allowed = PUBLIC_ONLY) -> str:
    """An absolute http(s) URL with a public host (adapters/webhook_client.py) and no user name or
    password in it, or `InvalidInput`."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
        raise InvalidInput(
            f"{url!r} is not an http:// or https:// URL with a host (at most 2,000 characters)", field="url"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(f"{url!r} holds a user name or password: sign with the secret instead", field="url")
    why = internal_host(parts.hostname, allowed)
    if why is not None:
        raise InvalidInput(
            f"{url!r}: {why}; webhooks reach public receivers only, unless QUALIFY_WEBHOOK_ALLOW names the host "
            "or its network",
            field="url",
        )
    return url


def allowed_receivers(settings: Settings) -> Allowed:
    return Allowed.parse(settings.webhook_allow)


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """The kinds, normalised, without repeats, in the order given; at least one."""
    checked = tuple(dict.fromkeys(normalise_kind(k) for k in kinds))
    if not checked:
        raise InvalidInput("name at least one kind to subscribe to", field="kinds")
    return checked


def add_subscription(
    uow: UnitOfWork,
    url: str,
    kinds: Iterable[str],
    *,
    secret: str | None = None,
    description: str | None = None,
    by: str = "cli",
    key_id: str | None = None,
    now: datetime | None = None,
) -> tuple[WebhookSubscription, str]:
    """Subscribe `url` to `kinds`; returns the subscription and its signing secret (made up if not given)."""
    url, checked = check_url(url, allowed_receivers(uow.workspace.settings)), check_kinds(kinds)
    if secret is not None and not 16 <= len(secret) <= 200:
        raise InvalidInput(
            "a secret must be 16 to 200 characters long (leave it out to get a random one)", field="secret"
        )
    secret = secret if secret is not None else SECRET_PREFIX + secrets.token_urlsafe(32)
    if description is not None and len(description) > 300:
        raise InvalidInput("at most 300 characters", field="description")
    now = now or utcnow()
    subs = schema.webhook_subscriptions
    new_id = uow.connection.execute(
        subs.insert()
        .values(url=url, secret=secret, kinds=list(checked), description=description, active=True, created_at=now)
        .returning(subs.c.id)
    ).scalar_one()
    record_audit(
        uow,
        actor=by,
        key_id=key_id,
        action="webhook.add",
        target=str(new_id),
        at=now,
        details={"url": url, "kinds": list(checked)},
    )
    return WebhookSubscription(new_id, url, checked, description, True, now), secret


def list_subscriptions(uow: UnitOfWork) -> list[WebhookSubscription]:
    """The active subscriptions, oldest first."""
    subs = schema.webhook_subscriptions
    rows = uow.connection.execute(select(subs).where(subs.c.active).order_by(subs.c.id))
    return [_subscription(row) for row in rows]


def remove_subscription(
    uow: UnitOfWork, subscription_id: int, *, by: str = "cli", key_id: str | None = None, now: datetime | None = None
) -> int:
    """Stop a subscription; its pending deliveries become dead. Returns how many were pending.

    The row stays (inactive) because its deliveries point at it and stay listed.
    """
    subs, deliveries = schema.webhook_subscriptions, schema.webhook_deliveries
    now = now or utcnow()
    done = uow.connection.execute(update(subs).where(subs.c.id == subscription_id, subs.c.active).values(active=False))
    if done.rowcount == 0:
        raise NotFound(f"no active webhook subscription {subscription_id}")
    given_up = uow.connection.execute(
        update(deliveries)
        .where(deliveries.c.subscription_id == subscription_id, deliveries.c.status == PENDING)
        .values(status=DEAD, last_error="subscription removed")
    ).rowcount
    record_audit(
        uow, actor=by, key_id=key_id, action="webhook.remove", target=str(subscription_id), at=now,
        details={"pending_given_up": given_up},
    )  # fmt: skip
    return int(given_up)


# --- deliveries: reading and re-queueing ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    """One row of the outbox as an operator sees it."""

    id: int
    subscription_id: int
    url: str
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None


def _delivery_query() -> Any:
    d, s = schema.webhook_deliveries, schema.webhook_subscriptions
    return select(
        d.c.id, d.c.subscription_id, s.c.url, d.c.kind, d.c.payload, d.c.created_at, d.c.status, d.c.attempts,
        d.c.next_attempt_at, d.c.last_status, d.c.last_error, d.c.delivered_at,
    ).join(s, s.c.id == d.c.subscription_id)  # fmt: skip


def list_deliveries(
    uow: UnitOfWork,
    *,
    status: str | None = None,
    subscription_id: int | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[DeliveryInfo]:
    """Deliveries, newest first; page with `before_id` (the smallest id of the previous page)."""
    d = schema.webhook_deliveries
    statement = _delivery_query().order_by(d.c.id.desc()).limit(limit)
    if status is not None:
        if status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}; expected one of: {', '.join(STATUSES)}", field="status")
        statement = statement.where(d.c.status == status)
    if subscription_id is not None:
        statement = statement.where(d.c.subscription_id == subscription_id)
    if before_id is not None:
        statement = statement.where(d.c.id < before_id)
    return [DeliveryInfo(*row) for row in uow.connection.execute(statement)]


def retry_delivery(
    uow: UnitOfWork, delivery_id: int, *, by: str = "cli", key_id: str | None = None, now: datetime | None = None
) -> DeliveryInfo:
    """Queue a dead (or pending) delivery again, due now, with a fresh set of attempts."""
    d, s = schema.webhook_deliveries, schema.webhook_subscriptions
    now = now or utcnow()
    row = uow.connection.execute(
        select(d.c.status, s.c.active).join(s, s.c.id == d.c.subscription_id).where(d.c.id == delivery_id)
    ).first()
    if row is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    if row.status == DELIVERED:
        raise InvalidInput(
            f"delivery {delivery_id} was delivered already; only dead or pending ones can be retried", field="id"
        )
    if not row.active:
        raise InvalidInput(f"the subscription of delivery {delivery_id} was removed; add it again first", field="id")
    delivery.requeue(uow.connection, QUEUE, delivery_id, now, statuses=(PENDING, DEAD))
    record_audit(uow, actor=by, key_id=key_id, action="webhook.retry", target=str(delivery_id), at=now)
    return DeliveryInfo(*uow.connection.execute(_delivery_query().where(d.c.id == delivery_id)).one())


# --- signatures ------------------------------------------------------------------------------------


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The `Qualify-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, body: bytes, header: str, *, now: float | None = None, tolerance: float = 300
) -> bool:
    """Whether `header` signs `body` with `secret`, made within `tolerance` seconds of `now`."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = signature(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


# --- delivery --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A due delivery this worker holds a lease on, with what it needs to send it."""

    id: int
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    url: str
    secret: str
    active: bool


@dataclass(slots=True)
class DeliverySummary:
    """What one round of delivery did."""

    delivered: int = 0
    failed: int = 0  # failed, to be retried
    dead: int = 0  # failed for the last time


def claim_due(conn: Connection, now: datetime, *, limit: int, lease: float) -> list[ClaimedDelivery]:
    """Take up to `limit` due deliveries by moving their next attempt `lease` seconds ahead.

    Until the lease runs out no other worker sees them as due; a worker killed mid-send loses
    its lease and the delivery is sent again (at least once). On PostgreSQL rows another worker
    is claiming are skipped, not waited for; on SQLite claims take turns (qualify.service.delivery).
    """
    ids = delivery.claim(conn, QUEUE, now, limit=limit, lease=lease)
    if not ids:
        return []
    d, s = schema.webhook_deliveries, schema.webhook_subscriptions
    rows = conn.execute(
        select(d.c.id, d.c.kind, d.c.payload, d.c.created_at, d.c.attempts, s.c.url, s.c.secret, s.c.active)
        .join(s, s.c.id == d.c.subscription_id)
        .where(d.c.id.in_(ids))
        .order_by(d.c.id)
    )
    return [ClaimedDelivery(*row) for row in rows]


def delivery_body(claim: ClaimedDelivery) -> bytes:
    """The JSON document sent: what the signature covers, byte for byte."""
    document = {"id": claim.id, "kind": claim.kind, "created_at": claim.created_at.isoformat(), "data": claim.payload}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def send(client: httpx.Client, claim: ClaimedDelivery, allowed: Allowed = PUBLIC_ONLY) -> Outcome:
    """POST one delivery, signed, to a public receiver (or an `allowed` one); any 2xx is delivered,
    anything else (3xx included) a failure."""
    if not claim.active:
        return Outcome(False, None, "subscription removed")
    body = delivery_body(claim)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(claim.secret, body, int(time.time())),
        DELIVERY_HEADER: str(claim.id),
        KIND_HEADER: claim.kind,
    }
    return post(client, claim.url, body, headers, allowed)


def record_outcome(
    conn: Connection, claim: ClaimedDelivery, outcome: Outcome, now: datetime, policy: RetryPolicy, rng: random.Random
) -> str:
    """Write the attempt's result; returns the delivery's new status. A removed subscription's
    delivery is dead at once: no retry can deliver it."""
    result: delivery.Result = "done" if outcome.delivered else "failed" if claim.active else "refused"
    return delivery.record_attempt(
        conn,
        QUEUE,
        claim.id,
        attempts=claim.attempts,
        result=result,
        now=now,
        policy=policy,
        rng=rng,
        values={"last_status": outcome.status, "last_error": outcome.error},
        done={"delivered_at": now},
    )


def deliver_due(
    workspace: Workspace,
    now: datetime,
    *,
    client: httpx.Client,
    policy: RetryPolicy,
    rng: random.Random,
    concurrency: int = 4,
) -> DeliverySummary:
    """Send every delivery due at `now`, `concurrency` at a time, each result in its own transaction."""
    summary = DeliverySummary()
    started = time.monotonic()
    # A lease outlasts the slowest batch: every send of it timing out, one wave after another.
    lease = policy.lease(CLAIM_BATCH, concurrency)
    allowed = allowed_receivers(workspace.settings)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="qualify-webhook") as pool:
        while True:
            with workspace.unit_of_work() as uow:
                claims = claim_due(uow.connection, now, limit=CLAIM_BATCH, lease=lease)
            sending = {pool.submit(send, client, claim, allowed): claim for claim in claims}
            for future in as_completed(sending):
                with workspace.unit_of_work() as uow:
                    status = record_outcome(
                        uow.connection, sending[future], future.result(), _at(now, started), policy, rng
                    )
                _count(summary, status)
            if len(claims) < CLAIM_BATCH:
                return summary


def _at(now: datetime, started: float) -> datetime:
    """When an attempt ended: the pass's `now` plus the time the pass has taken so far. Backoff
    counts from the attempt, not from the start of a pass that slow receivers made long
    (under a second is left out, so a pass is one instant, as tests and short passes expect)."""
    elapsed = time.monotonic() - started
    return now + timedelta(seconds=elapsed) if elapsed >= 1 else now


def _count(summary: DeliverySummary, status: str) -> None:
    if status == DELIVERED:
        summary.delivered += 1
    elif status == DEAD:
        summary.dead += 1
    else:
        summary.failed += 1
