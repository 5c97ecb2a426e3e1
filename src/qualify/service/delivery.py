"""Leased delivery: the one mechanism email and webhooks go out by.

Both keep an outbox table whose rows have `status`, `attempts`, `next_attempt_at` and
`last_error`. A worker pass:

1. **claims** due rows (`pending`, `next_attempt_at <= now`) in a short transaction of its own,
   moving their `next_attempt_at` a *lease* ahead (and, for a queue with a `leased` status,
   changing their status to it). On PostgreSQL rows another worker is claiming are skipped, not
   waited for (`FOR UPDATE SKIP LOCKED`); on SQLite a writing transaction takes the write lock
   before it reads (BEGIN IMMEDIATE), so claims take turns;
2. sends each claim (the channel's business: SMTP, HTTP) and **records** the attempt in its own
   transaction: done; failed, and due again after a backoff; or given up (**dead**) after
   `max_attempts`, or at once when the failure can never succeed (refused);
3. when a worker dies mid-pass its leases run out: a queue without a `leased` status sees the
   rows due again (at least once: webhooks); one with it marks them `abandoned` instead (at
   most once: email, where a second copy in someone's inbox is worse than a lost one).

An operator can **requeue** a dead row by hand: due now, with a fresh set of attempts.

The backoff after failure n has the ceiling min(cap, base·2^(n-1)); with `jitter` the wait is drawn
uniformly below it ("full jitter", at least `MIN_RETRY_DELAY`), which spreads the retries of many
rows that failed together (a receiver that was down) instead of sending them back as one wave;
without it the wait is the ceiling itself. Each channel's settings become one `RetryPolicy`
(`email_policy`, `webhook_policy`), under their documented `QUALIFY_*` names.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, Table, func, select, update

from qualify.settings import Settings

MIN_RETRY_DELAY = 1.0  # seconds: full jitter may draw 0, and a retry must not come back in the same pass

Result = Literal["done", "failed", "refused"]  # refused: failed in a way no retry can change
_RANDOM = random.Random()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a channel retries: attempts before giving up, the backoff, and how long a claim is leased.

    A lease outlasts the slowest batch a worker can claim: every attempt of it taking `timeout`
    seconds `lease_factor` times over (a few round trips each), `concurrency` at a time, plus
    `lease_margin`.
    """

    max_attempts: int = 15  # with the 1 h cap: about 8.6 hours of retries before a delivery is dead
    base: float = 10.0
    cap: float = 3600.0
    timeout: float = 10.0
    jitter: bool = True
    lease_factor: float = 2.0
    lease_margin: float = 60.0

    def ceiling(self, failures: int) -> float:
        """The longest wait after the `failures`-th failed attempt."""
        return float(min(self.cap, self.base * 2.0 ** min(failures - 1, 60)))

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after the `failures`-th failed attempt: drawn below the ceiling with `jitter`,
        the ceiling itself without."""
        if not self.jitter:
            return self.ceiling(failures)
        return max(MIN_RETRY_DELAY, (rng or _RANDOM).uniform(0, self.ceiling(failures)))

    def lease(self, claims: int, concurrency: int = 1) -> float:
        """Seconds a batch of `claims` sent `concurrency` at a time stays claimed."""
        waves = math.ceil(max(claims, 1) / max(concurrency, 1))
        return self.timeout * self.lease_factor * waves + self.lease_margin


def webhook_policy(settings: Settings) -> RetryPolicy:
    """Webhooks: `QUALIFY_WEBHOOK_*` (docs/webhooks.md), full jitter, a lease of two timeouts a wave."""
    return RetryPolicy(
        max_attempts=settings.webhook_max_attempts,
        base=settings.webhook_backoff_base,
        cap=settings.webhook_backoff_cap,
        timeout=settings.webhook_timeout,
        jitter=True,
        lease_factor=2.0,
        lease_margin=60.0,
    )


def email_policy(settings: Settings) -> RetryPolicy:
    """Email: `QUALIFY_EMAIL_*` (docs/email.md). No jitter: the documented waits are the ceilings
    themselves (60 s, 120 s, ...), and one SMTP server, not many receivers, takes the retries.
    A lease of four `QUALIFY_SMTP_TIMEOUT`s an email (a few commands each) plus five minutes."""
    return RetryPolicy(
        max_attempts=settings.email_max_attempts,
        base=settings.email_backoff_base,
        cap=settings.email_backoff_cap,
        timeout=settings.smtp_timeout,
        jitter=False,
        lease_factor=4.0,
        lease_margin=300.0,
    )


@dataclass(frozen=True, slots=True)
class Queue:
    """An outbox table and the statuses its rows go through.

    `leased`: the status of a claimed row, or None when a claim leaves it `pending` and only its
    due time says it is taken. `abandoned`: the status a claim whose lease ran out gets, or None
    when such a row is simply due again.
    """

    table: Table
    pending: str
    done: str
    dead: str
    leased: str | None = None
    abandoned: str | None = None

    @property
    def held(self) -> str:
        """The status a claimed row has while its worker sends it."""
        return self.leased or self.pending


def claim(
    conn: Connection, queue: Queue, now: datetime, *, limit: int, lease: float, where: ColumnElement[bool] | None = None
) -> list[int]:
    """Take up to `limit` due rows (of those `where` selects), oldest due first, until `now + lease`;
    their ids, ascending.

    Commit before sending: the claim is what keeps other workers off these rows.
    """
    t = queue.table
    # Two statements, not an UPDATE over a LIMITed subquery: PostgreSQL may run such a subquery
    # more than once and claim more than `limit` rows. The SELECT locks what it returns, so the
    # UPDATE cannot lose a row to another worker; on SQLite a writing unit begins IMMEDIATE.
    ids = list(
        conn.execute(
            select(t.c.id)
            .where(t.c.status == queue.pending, t.c.next_attempt_at <= now, *([] if where is None else [where]))
            .order_by(t.c.next_attempt_at, t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not ids:
        return []
    values: dict[str, Any] = {"next_attempt_at": now + timedelta(seconds=lease)}
    if queue.leased is not None:
        values["status"] = queue.leased
    # The ids the UPDATE changed, not those selected: a row that stopped being pending between
    # the two statements (it cannot while locked, but SQLite locks no rows) is not claimed.
    claimed = conn.execute(
        update(t).where(t.c.id.in_(ids), t.c.status == queue.pending).values(**values).returning(t.c.id)
    ).scalars()
    return sorted(claimed)


def expire_leases(conn: Connection, queue: Queue, now: datetime, **values: Any) -> int:
    """Rows whose claim ran out while held by a `leased` status: `abandoned` (with `values`) when
    the queue has one, otherwise `pending` again (due at once: their due time is the lease's end).
    Returns how many; always 0 for a queue without a `leased` status, whose rows are due again
    by themselves once the lease has passed."""
    if queue.leased is None:
        return 0
    t = queue.table
    if queue.abandoned is not None:
        values = {"status": queue.abandoned, **values}
    else:
        values = {"status": queue.pending, **values}
    return int(
        conn.execute(update(t).where(t.c.status == queue.leased, t.c.next_attempt_at <= now).values(**values)).rowcount
    )


def release(conn: Connection, queue: Queue, ids: Sequence[int], now: datetime) -> int:
    """Claims that never reached the receiver go back to `pending`, due now (after an error
    mid-pass, so they need not wait for their lease to run out)."""
    if not ids:
        return 0
    t = queue.table
    return int(
        conn.execute(
            update(t)
            .where(t.c.id.in_(list(ids)), t.c.status == queue.held)
            .values(status=queue.pending, next_attempt_at=now)
        ).rowcount
    )


def record_attempt(
    conn: Connection,
    queue: Queue,
    row_id: int,
    *,
    attempts: int,
    result: Result,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random | None = None,
    values: Mapping[str, Any] | None = None,
    done: Mapping[str, Any] | None = None,
    refused: Mapping[str, Any] | None = None,
    exhausted: Callable[[int], Mapping[str, Any]] | None = None,
) -> str:
    """Write one attempt of a claimed row (`attempts`: its count before this one); returns the
    row's status now. `values` are written whatever the result (e.g. `last_error`); `done`,
    `refused` and `exhausted(attempts)` too when it was delivered, refused or tried for the last time.

    A failure is written only while the claim still holds the row; a success also over
    `abandoned`, since the truth is that it went out.
    """
    t = queue.table
    attempts += 1
    row: dict[str, Any] = {"attempts": attempts, **(values or {})}
    held: ColumnElement[bool] = t.c.status == queue.held
    if result == "done":
        row.update(status=queue.done, **(done or {}))
        if queue.abandoned is not None:
            held = t.c.status.in_((queue.held, queue.abandoned))
    elif result == "refused":
        row.update(status=queue.dead, **(refused or {}))
    elif attempts >= policy.max_attempts:
        row.update(status=queue.dead, **(exhausted(attempts) if exhausted else {}))
    else:
        row.update(status=queue.pending, next_attempt_at=now + timedelta(seconds=policy.delay(attempts, rng)))
    conn.execute(update(t).where(t.c.id == row_id, held).values(**row))
    return str(row["status"])


def requeue(conn: Connection, queue: Queue, row_id: int, now: datetime, *, statuses: Sequence[str]) -> bool:
    """Retry by hand: a row in one of `statuses` becomes `pending`, due now, with a fresh set of
    attempts (its last error is kept until the next one). False when it was in none of them."""
    t = queue.table
    changed = conn.execute(
        update(t)
        .where(t.c.id == row_id, t.c.status.in_(list(statuses)))
        .values(status=queue.pending, attempts=0, next_attempt_at=now)
    ).rowcount
    return bool(changed)


def count_due(conn: Connection, queue: Queue, now: datetime) -> int:
    """How many rows are due at `now` (and not claimed)."""
    t = queue.table
    statement = select(func.count()).select_from(t).where(t.c.status == queue.pending, t.c.next_attempt_at <= now)
    return int(conn.execute(statement).scalar_one())
