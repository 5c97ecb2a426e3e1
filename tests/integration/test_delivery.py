"""The one leased-delivery mechanism email and webhooks share, against a real store: claims and
their leases, full-jitter backoff, dead letters and retry by hand, on both outbox tables."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from qualify.adapters import schema
from qualify.service import delivery
from qualify.service.delivery import Queue, RetryPolicy
from qualify.service.email import sending
from qualify.service.integrations import announcements as outbox
from qualify.service.integrations import webhooks
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def webhook_rows(workspace: Workspace, count: int) -> list[int]:
    with workspace.unit_of_work() as uow:
        webhooks.add_subscription(uow, "https://crm.example.com/hook", ["stage.changed"], now=T0)
        outbox.enqueue(uow.connection, [outbox.Announcement("stage.changed", {"n": n}) for n in range(count)], T0)
        return list(uow.connection.execute(select(schema.webhook_deliveries.c.id)).scalars())


def email_rows(workspace: Workspace, count: int) -> list[int]:
    leads, emails = schema.leads, schema.emails
    with workspace.unit_of_work() as uow:
        lead_id = uow.connection.execute(
            leads.insert()
            .values(email="jane@acme.com", created_at=T0, updated_at=T0, stage="new", stage_entered_at=T0)
            .returning(leads.c.id)
        ).scalar_one()
        return [
            uow.connection.execute(
                emails.insert()
                .values(
                    token=f"token-{n}", lead_id=lead_id, template="welcome", to_address="jane@acme.com",
                    subject="Hi", body_text="Hello", status="pending", created_at=T0, attempts=0,
                    next_attempt_at=T0,
                )
                .returning(emails.c.id)
            ).scalar_one()
            for n in range(count)
        ]  # fmt: skip


def rows(workspace: Workspace, queue: Queue) -> dict[int, Any]:
    with workspace.unit_of_work(read_only=True) as uow:
        return {row.id: row for row in uow.connection.execute(select(queue.table))}


def claim(workspace: Workspace, queue: Queue, now: datetime, limit: int = 10, lease: float = 60) -> list[int]:
    with workspace.unit_of_work() as uow:
        return delivery.claim(uow.connection, queue, now, limit=limit, lease=lease)


# The same email table, as a queue whose run-out claims are due again rather than abandoned.
AT_LEAST_ONCE_EMAILS = Queue(schema.emails, pending="pending", done="sent", dead="failed", leased="sending")


@pytest.mark.parametrize("jitter", [True, False])
def test_the_backoff_has_full_jitter_below_a_doubling_capped_ceiling(jitter: bool) -> None:
    policy = RetryPolicy(base=10, cap=300, jitter=jitter)
    assert [policy.ceiling(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
    rng = random.Random(7)
    waits = [policy.delay(n, rng) for n in range(1, 8) for _ in range(200)]
    ceilings = [policy.ceiling(n) for n in range(1, 8) for _ in range(200)]
    assert all(delivery.MIN_RETRY_DELAY <= w <= c for w, c in zip(waits, ceilings, strict=True))
    if jitter:  # spread over the whole window, not bunched at the ceiling
        assert min(waits[-200:]) < 30 and max(waits[-200:]) > 270
    else:
        assert waits == ceilings
    assert policy.ceiling(10_000) == 300  # no overflow however many failures


def test_each_channel_builds_its_policy_from_its_own_settings() -> None:
    settings = Settings(
        webhook_max_attempts=5, webhook_backoff_base=2, webhook_backoff_cap=50, webhook_timeout=3,
        email_max_attempts=7, email_backoff_base=30, email_backoff_cap=900, smtp_timeout=20,
    )  # fmt: skip
    assert delivery.webhook_policy(settings) == RetryPolicy(5, 2, 50, 3, jitter=True, lease_factor=2, lease_margin=60)
    assert delivery.email_policy(settings) == RetryPolicy(
        7, 30, 900, 20, jitter=False, lease_factor=4, lease_margin=300
    )
    defaults = Settings()
    assert delivery.webhook_policy(defaults).lease(webhooks.CLAIM_BATCH, 4) == 10 * 2 * 13 + 60
    assert delivery.email_policy(defaults).lease(100) == 30 * 4 * 100 + 300  # about 3½ hours (docs/email.md)


@pytest.mark.parametrize("channel", ["webhooks", "email"])
def test_a_lease_that_runs_out_makes_the_claim_claimable_again(workspace: Workspace, channel: str) -> None:
    queue = webhooks.QUEUE if channel == "webhooks" else AT_LEAST_ONCE_EMAILS
    ids = webhook_rows(workspace, 3) if channel == "webhooks" else email_rows(workspace, 3)
    assert claim(workspace, queue, T0, limit=2) == ids[:2]
    assert claim(workspace, queue, T0, limit=2) == ids[2:]
    assert claim(workspace, queue, T0 + timedelta(seconds=59)) == []  # all leased
    with workspace.unit_of_work() as uow:
        assert delivery.expire_leases(uow.connection, queue, T0 + timedelta(seconds=59)) == 0
        expired = delivery.expire_leases(uow.connection, queue, T0 + timedelta(seconds=60))
    assert expired == (0 if queue.leased is None else 3)  # webhooks: the due time alone says it
    assert claim(workspace, queue, T0 + timedelta(seconds=60)) == ids


def test_an_email_whose_lease_runs_out_is_abandoned_not_claimed_again(workspace: Workspace) -> None:
    ids = email_rows(workspace, 2)
    assert claim(workspace, sending.QUEUE, T0, limit=1) == ids[:1]
    with workspace.unit_of_work() as uow:
        assert delivery.expire_leases(uow.connection, sending.QUEUE, T0 + timedelta(seconds=60), reason="gone") == 1
    found = rows(workspace, sending.QUEUE)
    assert (found[ids[0]].status, found[ids[0]].reason) == ("unknown", "gone")
    assert claim(workspace, sending.QUEUE, T0 + timedelta(days=1)) == ids[1:]


@pytest.mark.parametrize("channel", ["webhooks", "email"])
def test_failures_back_off_then_become_dead_and_a_hand_retry_queues_again(workspace: Workspace, channel: str) -> None:
    queue = webhooks.QUEUE if channel == "webhooks" else sending.QUEUE
    [row_id] = webhook_rows(workspace, 1) if channel == "webhooks" else email_rows(workspace, 1)
    policy, rng, now, waits, attempts = RetryPolicy(max_attempts=3, base=10, cap=15), random.Random(5), T0, [], 0
    while claim(workspace, queue, now):
        with workspace.unit_of_work() as uow:
            status = delivery.record_attempt(
                uow.connection, queue, row_id, attempts=attempts, result="failed", now=now, policy=policy, rng=rng,
                values={"last_error": f"try {attempts + 1}"},
            )  # fmt: skip
        attempts += 1
        row = rows(workspace, queue)[row_id]
        assert (row.status, row.attempts, row.last_error) == (status, attempts, f"try {attempts}")
        if status == queue.dead:
            break
        waits.append((row.next_attempt_at - now).total_seconds())
        now = row.next_attempt_at
    assert attempts == 3 and status == queue.dead
    assert len(waits) == 2 and all(1 <= w <= c for w, c in zip(waits, (10, 15), strict=True))
    assert claim(workspace, queue, now + timedelta(days=1)) == []  # a dead letter is not sent again by itself
    later = now + timedelta(hours=1)
    with workspace.unit_of_work() as uow:
        assert not delivery.requeue(uow.connection, queue, row_id, later, statuses=(queue.done,))
        assert delivery.requeue(uow.connection, queue, row_id, later, statuses=(queue.dead,))
    row = rows(workspace, queue)[row_id]
    assert (row.status, row.attempts, row.next_attempt_at, row.last_error) == ("pending", 0, later, "try 3")
    assert claim(workspace, queue, later) == [row_id]
    with workspace.unit_of_work() as uow:
        done = delivery.record_attempt(
            uow.connection,
            queue,
            row_id,
            attempts=0,
            result="done",
            now=later,
            policy=policy,
            values={"last_error": None},
        )
    assert done == queue.done and rows(workspace, queue)[row_id].attempts == 1


def test_a_refused_attempt_is_dead_at_once_and_a_success_wins_over_an_abandoned_claim(workspace: Workspace) -> None:
    refused, late = email_rows(workspace, 2)
    policy = RetryPolicy(max_attempts=10)
    assert claim(workspace, sending.QUEUE, T0) == [refused, late]
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        status = delivery.record_attempt(
            conn, sending.QUEUE, refused, attempts=0, result="refused", now=T0, policy=policy, refused={"reason": "no"}
        )
        assert status == "failed"
        assert delivery.expire_leases(conn, sending.QUEUE, T0 + timedelta(minutes=5)) == 1  # `late` is abandoned
        delivery.record_attempt(conn, sending.QUEUE, late, attempts=0, result="done", now=T0, policy=policy)
        # A failure recorded after the claim was lost changes nothing: the row is no longer held.
        delivery.record_attempt(conn, sending.QUEUE, refused, attempts=1, result="failed", now=T0, policy=policy)
    found = rows(workspace, sending.QUEUE)
    assert (found[refused].status, found[refused].reason, found[refused].attempts) == ("failed", "no", 1)
    assert found[late].status == "sent"


def test_release_puts_untouched_claims_back_due_now(workspace: Workspace) -> None:
    ids = email_rows(workspace, 2)
    assert claim(workspace, sending.QUEUE, T0, lease=3600) == ids
    with workspace.unit_of_work() as uow:
        assert delivery.release(uow.connection, sending.QUEUE, ids[1:], T0 + timedelta(seconds=5)) == 1
        assert delivery.count_due(uow.connection, sending.QUEUE, T0 + timedelta(seconds=5)) == 1
    assert claim(workspace, sending.QUEUE, T0 + timedelta(seconds=5)) == ids[1:]


def test_two_workers_on_postgresql_claim_disjoint_rows_of_both_tables(workspace: Workspace) -> None:
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: the second claim waits for the first")
    for queue, ids in ((webhooks.QUEUE, webhook_rows(workspace, 5)), (sending.QUEUE, email_rows(workspace, 5))):
        with workspace.unit_of_work() as one, workspace.unit_of_work() as two:
            mine = delivery.claim(one.connection, queue, T0, limit=3, lease=60)
            theirs = delivery.claim(two.connection, queue, T0, limit=3, lease=60)
        assert (len(mine), len(theirs)) == (3, 2) and sorted(mine + theirs) == ids
