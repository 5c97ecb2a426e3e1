"""Webhook subscriptions and the outbox's bookkeeping against a real store: claims, leases, dead letters."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from qualify.adapters import schema
from qualify.adapters.webhook_client import Outcome
from qualify.domain.errors import InvalidInput, NotFound
from qualify.service.delivery import RetryPolicy
from qualify.service.integrations import announcements as outbox
from qualify.service.integrations.webhooks import (
    ClaimedDelivery,
    add_subscription,
    claim_due,
    list_deliveries,
    list_subscriptions,
    record_outcome,
    remove_subscription,
    retry_delivery,
    signature,
    verify_signature,
)
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "a-secret-of-16-chars"


def subscribe(workspace: Workspace, *kinds: str) -> int:
    with workspace.unit_of_work() as uow:
        subscription, _ = add_subscription(uow, "https://crm.example.com/hook", kinds, secret=SECRET, now=T0)
    return subscription.id


def announce(workspace: Workspace, count: int, kind: str = "stage.changed") -> None:
    with workspace.unit_of_work() as uow:
        outbox.enqueue(uow.connection, [outbox.Announcement(kind, {"n": n}) for n in range(count)], T0)


def claim(workspace: Workspace, now: datetime, limit: int = 10, lease: float = 60) -> list[ClaimedDelivery]:
    with workspace.unit_of_work() as uow:
        return claim_due(uow.connection, now, limit=limit, lease=lease)


def test_subscriptions_check_their_url_kinds_and_secret(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        made, secret = add_subscription(uow, " https://crm.example.com/hook ", ["lead.mql", "score.crossed:80.0"])
    assert made.url == "https://crm.example.com/hook" and made.kinds == ("lead.mql", "score.crossed:80")
    assert secret.startswith("whsec_") and len(secret) > 32
    for url, kinds, given, field in (
        ("ftp://crm.example.com", ["lead.mql"], None, "url"),
        ("https://", ["lead.mql"], None, "url"),
        ("https://crm.example.com", ["lead.qualified"], None, "kinds"),
        ("https://crm.example.com", ["score.crossed:lots"], None, "kinds"),
        ("https://crm.example.com", [], None, "kinds"),
        ("https://crm.example.com", ["lead.mql"], "short", "secret"),
    ):
        with pytest.raises(InvalidInput) as refused, workspace.unit_of_work() as uow:
            add_subscription(uow, url, kinds, secret=given)
        assert refused.value.field == field
    with workspace.unit_of_work() as uow:
        assert [s.id for s in list_subscriptions(uow)] == [made.id]
        entry = uow.connection.execute(select(schema.audit_log).order_by(schema.audit_log.c.id.desc())).first()
    assert entry is not None and (entry.action, entry.target) == ("webhook.add", str(made.id))


def test_a_normalised_threshold_receives_the_crossings_announced(workspace: Workspace) -> None:
    subscribe(workspace, "score.crossed:50.0")
    with workspace.unit_of_work() as uow:
        subscriptions = outbox.active_subscriptions(uow.connection)
        crossings = outbox.score_crossings(subscriptions, {"id": 1}, 10.0, 60.0, T0)
        assert outbox.enqueue(uow.connection, crossings, T0, subscriptions) == 1


def test_a_claimed_delivery_is_leased_until_its_lease_runs_out(workspace: Workspace) -> None:
    subscribe(workspace, "stage.changed")
    announce(workspace, 3)
    first = claim(workspace, T0, limit=2, lease=60)
    second = claim(workspace, T0, limit=2, lease=60)
    assert [c.payload["n"] for c in first] == [0, 1] and [c.payload["n"] for c in second] == [2]
    assert claim(workspace, T0 + timedelta(seconds=30)) == []
    # A worker that died mid-send leaves its lease behind: after it, the deliveries are due again.
    assert len(claim(workspace, T0 + timedelta(seconds=61))) == 3


def test_two_workers_on_postgresql_never_claim_the_same_delivery(workspace: Workspace) -> None:
    if workspace.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: the second claim waits for the first (covered above)")
    subscribe(workspace, "stage.changed")
    announce(workspace, 6)
    with workspace.unit_of_work() as one, workspace.unit_of_work() as two:
        mine = claim_due(one.connection, T0, limit=4, lease=60)
        theirs = claim_due(two.connection, T0, limit=4, lease=60)  # skips the rows `one` holds, does not wait
    assert len(mine) == 4 and len(theirs) == 2
    assert not {c.id for c in mine} & {c.id for c in theirs}


def test_failures_are_retried_on_a_growing_schedule_then_given_up_as_dead(workspace: Workspace) -> None:
    subscribe(workspace, "stage.changed")
    announce(workspace, 1)
    policy, rng, now, waits = RetryPolicy(max_attempts=4, base=10, cap=25), random.Random(3), T0, []
    while claimed := claim(workspace, now):
        with workspace.unit_of_work() as uow:
            record_outcome(uow.connection, claimed[0], Outcome(False, 503, "HTTP 503"), now, policy, rng)
        [row] = _all(workspace)
        if row.status == outbox.DEAD:
            break
        waits.append((row.next_attempt_at - now).total_seconds())
        now = row.next_attempt_at
    assert len(waits) == 3 and all(1 <= wait <= ceiling for wait, ceiling in zip(waits, (10, 20, 25), strict=True))
    assert (row.status, row.attempts, row.last_status, row.last_error) == ("dead", 4, 503, "HTTP 503")
    assert claim(workspace, now + timedelta(days=1)) == []


def test_the_retry_ceilings_double_up_to_the_cap() -> None:
    policy = RetryPolicy(base=10, cap=3600)
    assert [policy.ceiling(n) for n in range(1, 11)] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    rng = random.Random(1)
    assert all(1 <= policy.delay(n, rng) <= policy.ceiling(n) for n in range(1, 50) for _ in range(20))


def test_dead_deliveries_are_listed_and_can_be_queued_again(workspace: Workspace) -> None:
    subscribe(workspace, "stage.changed")
    announce(workspace, 2)
    policy = RetryPolicy(max_attempts=1)
    delivered, dead = claim(workspace, T0)
    with workspace.unit_of_work() as uow:
        record_outcome(uow.connection, delivered, Outcome(True, 200, None), T0, policy, random.Random())
        record_outcome(uow.connection, dead, Outcome(False, None, "timeout"), T0, policy, random.Random())
    with workspace.unit_of_work() as uow:
        assert [d.id for d in list_deliveries(uow, status="dead")] == [dead.id]
        assert [d.id for d in list_deliveries(uow)] == [dead.id, delivered.id]  # newest first
        assert [d.id for d in list_deliveries(uow, before_id=dead.id)] == [delivered.id]
        again = retry_delivery(uow, dead.id, by="ops", now=T0 + timedelta(hours=1))
    assert (again.status, again.attempts, again.next_attempt_at) == ("pending", 0, T0 + timedelta(hours=1))
    assert [c.id for c in claim(workspace, T0 + timedelta(hours=1))] == [dead.id]
    with pytest.raises(InvalidInput, match="delivered already"), workspace.unit_of_work() as uow:
        retry_delivery(uow, delivered.id)
    with pytest.raises(NotFound), workspace.unit_of_work() as uow:
        retry_delivery(uow, 999_999)
    with pytest.raises(InvalidInput, match="unknown status"), workspace.unit_of_work() as uow:
        list_deliveries(uow, status="lost")


def test_removing_a_subscription_gives_up_its_pending_deliveries(workspace: Workspace) -> None:
    kept, removed = subscribe(workspace, "lead.mql"), subscribe(workspace, "lead.mql")
    announce(workspace, 2, "lead.mql")
    with workspace.unit_of_work() as uow:
        assert remove_subscription(uow, removed, by="ops") == 2
    with workspace.unit_of_work() as uow:
        assert [s.id for s in list_subscriptions(uow)] == [kept]
        gone = list_deliveries(uow, subscription_id=removed)
        assert {(d.status, d.last_error) for d in gone} == {("dead", "subscription removed")}
        with pytest.raises(InvalidInput, match="removed"):
            retry_delivery(uow, gone[0].id)
    with pytest.raises(NotFound), workspace.unit_of_work() as uow:
        remove_subscription(uow, removed)
    announce(workspace, 1, "lead.mql")
    claimed = claim(workspace, T0, limit=10)
    assert len(claimed) == 3 and all(c.url == "https://crm.example.com/hook" and c.active for c in claimed)


def test_a_signature_verifies_only_with_the_secret_the_body_and_a_fresh_time() -> None:
    body = b'{"id":1,"kind":"lead.mql"}'
    header = signature(SECRET, body, 1_767_225_600)
    assert header.startswith("t=1767225600,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature(SECRET, body, header, now=1_767_225_600 + 299)
    assert not verify_signature("another-secret-of-16", body, header, now=1_767_225_600)
    assert not verify_signature(SECRET, body + b" ", header, now=1_767_225_600)
    assert not verify_signature(SECRET, body, header, now=1_767_225_600 + 301)
    assert not verify_signature(SECRET, body, "v1=deadbeef", now=1_767_225_600)


def _all(workspace: Workspace) -> list[Any]:
    with workspace.unit_of_work() as uow:
        return list(uow.connection.execute(select(schema.webhook_deliveries)))
