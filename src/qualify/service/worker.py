"""The background worker: decay-out sweeps, accounts left to it, SLA timers, segments, workflows,
email and webhook delivery, in passes.

One pass, in this order:

0. **history**: leads an interrupted import of history left waiting are rebuilt in time order
   (qualify.service.lifecycle.stage_facts), with the history cutoff they were queued with;
1. **decay-out**: every MQL whose engagement fell below the floor is moved to nurture at the
   instant it crossed it, with history and announcements, as if a timer had run all along;
2. **accounts**: every account an ingestion left to the worker (the HTTP API's, the event
   streams', the web tracker's) is counted again from its people, scored and moved, its moves
   announced (qualify.service.lifecycle.accounts.keep_pending), up to 5,000 accounts a pass;
3. **SLA**: every MQL still in `mql` past its `sla_due_at` gets its breach recorded once
   (`leads.sla_breached_at`, an audit entry `sla.breached`) and announced (`sla.breached`); so
   does every account still in `mqa` past its own (`accounts.sla_breached_at`, an audit entry
   `account.sla.breached`, announced as `account.sla.breached`);
4. **segments**: segments that time alone can change (windows, days in a stage, decaying
   scores) are tested again over every lead when their last refresh is older than an hour
   (qualify.service.automation.segments);
5. **workflows**: every due step runs, one transaction each (qualify.service.automation.runs);
6. **email**: every email due is sent through SMTP (qualify.service.email.sending);
7. **webhooks**: every delivery due is sent, retried later, or given up as dead;
8. **CRM**: each connected CRM's due pushes are written, and its changes pulled once the last
   pull is older than `QUALIFY_CRM_SYNC_INTERVAL` (qualify.service.connectors.crm).

Decay-out comes first so that an MQL that had decayed out before its due time is not counted
as a breach; delivery comes last so announcements and emails written by this pass leave in it.
`Worker.run` repeats passes until told to stop; `stop_on_signals` makes SIGTERM and SIGINT do
that after the pass in progress.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from types import FrameType, TracebackType
from typing import Any

import httpx
from sqlalchemy import Connection, Row, select, update

from qualify.adapters import repository as repo
from qualify.adapters import schema, webhook_client
from qualify.adapters.crm import open_client
from qualify.adapters.repository import LeadRecord
from qualify.domain.engagement import DAY
from qualify.domain.lifecycle import Stage
from qualify.domain.records import lead_key
from qualify.service import delivery
from qualify.service.audit import record_audit
from qualify.service.automation import runs as workflows
from qualify.service.automation import segments
from qualify.service.connectors import crm
from qualify.service.email import sending as email
from qualify.service.integrations import announcements as outbox
from qualify.service.integrations import webhooks
from qualify.service.lifecycle import accounts
from qualify.service.lifecycle.lead_batch import LeadBatch
from qualify.service.lifecycle.stage_facts import rebuild_pending
from qualify.service.pipeline import react
from qualify.service.unit_of_work import Workspace, utcnow

log = logging.getLogger(__name__)

CHUNK = 500  # leads per transaction in the sweeps: short transactions, bounded memory
SLA_ACTOR = "sla timer"
SEGMENT_REFRESH = timedelta(hours=1)  # how stale a segment that time can change may get
STEPS_PER_PASS = 2000  # workflow steps one pass runs at most, so a pass stays short


@dataclass(slots=True)
class PassSummary:
    """What one pass did."""

    at: datetime
    rebuilt: int = 0
    decayed: int = 0
    sla_breaches: int = 0
    segment_changes: int = 0
    workflow_steps: int = 0
    emails_sent: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    crm_records: int = 0  # written to Qualify or to a CRM by the sync
    accounts_kept: int = 0  # accounts an ingestion left to the worker, kept
    seconds: float = 0.0  # how long the pass took

    @property
    def busy(self) -> bool:
        return any(
            (
                self.rebuilt,
                self.decayed,
                self.sla_breaches,
                self.segment_changes,
                self.workflow_steps,
                self.emails_sent,
                self.delivered,
                self.retrying,
                self.dead,
                self.crm_records,
                self.accounts_kept,
            )
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- accounts left to the worker -----------------------------------------------------------------------


def keep_pending_accounts(workspace: Workspace, now: datetime, *, chunk: int = CHUNK) -> int:
    """Keep the accounts ingestion left to the worker, `chunk` at a time, each chunk in its own
    unit of work, at most `accounts.PENDING_PER_PASS` a pass; return how many were kept."""
    kept = 0
    while kept < accounts.PENDING_PER_PASS:
        with workspace.unit_of_work() as uow:
            done = accounts.keep_pending(uow, now, limit=min(chunk, accounts.PENDING_PER_PASS - kept))
        kept += done
        if done < chunk:
            return kept
    return kept


# --- decay-out ---------------------------------------------------------------------------------------


def sweep_decay(workspace: Workspace, now: datetime, *, chunk: int = CHUNK) -> int:
    """Run the decay-out timer of every MQL up to `now`; return how many were moved to nurture.

    Only MQLs that have been MQL for `min_days_in_mql` can decay out, so only those are read,
    `chunk` at a time, each chunk in its own unit of work.
    """
    moved, after_id = 0, 0
    while True:
        with workspace.unit_of_work() as uow:
            model = uow.active_model()
            if model.policy.decay_out_floor is None:
                return moved
            entered_before = now - timedelta(seconds=model.policy.min_days_in_mql * DAY)
            records = _mqls_entered_before(uow.connection, entered_before, after_id, chunk)
            batch = LeadBatch(uow, model, now)
            for record in records:
                batch.remember(record)
                moves = batch.evaluator.run_timers(record.state, now.timestamp())
                if moves:
                    batch.record_moves(record, moves)
                    moved += 1
            if batch.history:
                changed = batch.write()
                changed.judge = False  # the timer decided: not judged again on the probability
                react(uow, changed, batch)
        if len(records) < chunk:
            return moved
        after_id = records[-1].id or after_id


def _mqls_entered_before(conn: Connection, entered_before: datetime, after_id: int, limit: int) -> list[LeadRecord]:
    leads = schema.leads
    statement = (
        select(leads)
        .where(
            leads.c.stage == Stage.MQL.value,
            leads.c.stage_entered_at <= entered_before,
            leads.c.erased_at.is_(None),
            leads.c.id > after_id,
        )
        .order_by(leads.c.id)
        .limit(limit)
        # A lead another transaction is scoring is skipped, not waited for: that use case runs
        # the same timer itself before applying its event.
        .with_for_update(skip_locked=True)
    )
    return [repo.lead_from_row(row) for row in conn.execute(statement)]


# --- the SLA timer -----------------------------------------------------------------------------------


def record_sla_breaches(workspace: Workspace, now: datetime, *, chunk: int = CHUNK) -> int:
    """Record and announce, once each, the MQLs whose SLA ran out by `now`; return how many."""
    recorded = 0
    while True:
        with workspace.unit_of_work() as uow:
            overdue = _overdue_mqls(uow.connection, now, chunk)
            announcements = []
            for row in overdue:
                announcements.append(_record_breach(uow.connection, row, now))
                record_audit(
                    uow,
                    actor=SLA_ACTOR,
                    action="sla.breached",
                    target=lead_key(row.email, row.external_id),
                    at=now,
                    details={"lead_id": row.id, "due_at": row.sla_due_at.isoformat(), "owner": row.owner},
                )
            outbox.enqueue(uow.connection, announcements, now)
        recorded += len(overdue)
        if len(overdue) < chunk:
            return recorded


def record_account_sla_breaches(workspace: Workspace, now: datetime, *, chunk: int = CHUNK) -> int:
    """Record and announce, once each, the MQAs whose SLA ran out by `now`; return how many."""
    recorded = 0
    accounts = schema.accounts
    while True:
        with workspace.unit_of_work() as uow:
            overdue = list(
                uow.connection.execute(
                    select(accounts.c.id, accounts.c.domain, accounts.c.owner, accounts.c.stage_entered_at,
                           accounts.c.sla_due_at)
                    .where(
                        accounts.c.stage == "mqa",
                        accounts.c.sla_due_at <= now,
                        accounts.c.sla_breached_at.is_(None),
                    )
                    .order_by(accounts.c.sla_due_at, accounts.c.id)
                    .limit(chunk)
                    .with_for_update(skip_locked=True)
                )
            )  # fmt: skip
            announcements = []
            for row in overdue:
                uow.connection.execute(update(accounts).where(accounts.c.id == row.id).values(sla_breached_at=now))
                details = {"account_id": row.id, "due_at": row.sla_due_at.isoformat(), "owner": row.owner}
                record_audit(uow, actor=SLA_ACTOR, action="account.sla.breached", target=row.domain, at=now,
                             details=details)  # fmt: skip
                announcements.append(
                    outbox.Announcement(
                        outbox.ACCOUNT_SLA_BREACHED,
                        {
                            "account": {"id": row.id, "domain": row.domain},
                            "owner": row.owner,
                            "mqa_at": row.stage_entered_at.isoformat() if row.stage_entered_at else None,
                            "due_at": row.sla_due_at.isoformat(),
                            "recorded_at": now.isoformat(),
                        },
                    )
                )
            outbox.enqueue(uow.connection, announcements, now)
        recorded += len(overdue)
        if len(overdue) < chunk:
            return recorded


def _overdue_mqls(conn: Connection, now: datetime, limit: int) -> list[Row[Any]]:
    leads = schema.leads
    statement = (
        select(
            leads.c.id,
            leads.c.email,
            leads.c.external_id,
            leads.c.owner,
            leads.c.stage_entered_at,
            leads.c.sla_due_at,
        )
        .where(
            leads.c.stage == Stage.MQL.value,
            leads.c.sla_due_at <= now,
            leads.c.sla_breached_at.is_(None),
            leads.c.erased_at.is_(None),
        )
        .order_by(leads.c.sla_due_at, leads.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # two workers never record the same breach
    )
    return list(conn.execute(statement))


def _record_breach(conn: Connection, row: Row[Any], now: datetime) -> outbox.Announcement:
    leads = schema.leads
    conn.execute(update(leads).where(leads.c.id == row.id).values(sla_breached_at=now))
    return outbox.Announcement(
        outbox.SLA_BREACHED,
        {
            "lead": {"id": row.id, "email": row.email, "external_id": row.external_id},
            "owner": row.owner,
            "mql_at": row.stage_entered_at.isoformat(),
            "due_at": row.sla_due_at.isoformat(),
            "recorded_at": now.isoformat(),
        },
    )


def _guarded(what: str, part: Callable[..., int], *args: Any) -> int:
    try:
        return part(*args)
    except Exception:
        log.exception("worker: %s failed in this pass; trying again in the next", what)
        return 0


# --- the worker --------------------------------------------------------------------------------------


class Worker:
    """Runs passes over one workspace; `clock`, `rng` and `client` are seams for tests.

    >>> with Worker(workspace) as worker:  # doctest: +SKIP
    ...     worker.run_once()
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        client: httpx.Client | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
        crm_clients: crm.ClientFactory = open_client,
    ) -> None:
        self.workspace = workspace
        self.crm_clients = crm_clients
        self.policy = delivery.webhook_policy(workspace.settings)
        self.client = client or webhook_client.new_client(self.policy.timeout)
        self._owns_client = client is None
        self.rng = rng or random.Random()
        self.clock = clock

    def run_once(self, now: datetime | None = None) -> PassSummary:
        """One pass at `now` (default: the clock): history rebuilds, decay-out, accounts left to the
        worker, SLA, segments, workflows, email, webhooks, CRM."""
        now = now or self.clock()
        started = time.perf_counter()
        summary = PassSummary(now)
        summary.rebuilt = _guarded("history rebuild", rebuild_pending, self.workspace, now)
        summary.decayed = sweep_decay(self.workspace, now)
        summary.accounts_kept = _guarded("account upkeep", keep_pending_accounts, self.workspace, now)
        summary.sla_breaches = record_sla_breaches(self.workspace, now) + record_account_sla_breaches(
            self.workspace, now
        )
        # Each part on its own: a failure in one (a lock conflict, say) must not keep email and
        # webhooks from leaving in this pass. It is logged, and the next pass tries again.
        summary.segment_changes = _guarded(
            "segment refresh", segments.refresh_due, self.workspace, now, SEGMENT_REFRESH
        )
        summary.workflow_steps = _guarded(
            "workflow steps", lambda: workflows.run_due(self.workspace, now, limit=STEPS_PER_PASS).steps
        )
        summary.emails_sent = _guarded("email delivery", lambda: email.deliver_due(self.workspace, now).sent)
        sent = webhooks.deliver_due(
            self.workspace,
            now,
            client=self.client,
            policy=self.policy,
            rng=self.rng,
            concurrency=self.workspace.settings.webhook_concurrency,
        )
        summary.delivered, summary.retrying, summary.dead = sent.delivered, sent.failed, sent.dead
        summary.crm_records = _guarded("crm sync", lambda: crm.run_due(self.workspace, now, clients=self.crm_clients))
        summary.seconds = time.perf_counter() - started
        return summary

    def run(
        self,
        stop: threading.Event,
        *,
        interval: float,
        on_pass: Callable[[PassSummary], None] | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> int:
        """Pass after pass, `interval` seconds apart, until `stop` is set; return how many passes ran."""
        passes = 0
        while not stop.is_set():
            try:
                summary = self.run_once()
            except Exception:
                # A daemon outlives a database restart or a bad model: say so, and try again next pass.
                log.exception("worker pass failed; trying again in %g s", interval)
                if on_error is not None:
                    on_error()
            else:
                if on_pass is not None:
                    on_pass(summary)
            passes += 1
            stop.wait(interval)
        return passes

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop`, so the loop ends after the pass in progress; a second one interrupts."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("signal %d: stopping after this pass", signum)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
