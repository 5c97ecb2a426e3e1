"""Accounts kept up to date as their people change: scores, stage, owner and stage history.

Reaction `accounts` (after `handoff`): for every account whose people the change touched, the
account's row is locked and its roll-up (`domain.accounts.Rollup`) swaps each changed person's old
mark for the new one, in O(1) per person. The account's fit, engagement and covered roles are then
read as of the change, and the stage policy of the model's `accounts.stages` moves it
(`domain.account_stages`). An account whose roll-up was counted under another model, or whose role
holder fell back, is counted again from its people (one query for all such accounts).

An ingestion that leaves account upkeep to the worker (`Changed.accounts_later`: the HTTP API's,
the event streams' and the web tracker's) only marks the accounts it touched pending
(`accounts.pending_since`); the worker's pass keeps them (`keep_pending`): each counted again
from its people once, however many batches touched it meanwhile, scored as of their newest
change, and moved, its moves announced. An account whose people moved stage (into a deal, or out of one) is kept at once even
then, as is every account of an import of history.

A move to MQA that is not history gives the account an owner (its own, else the owner of its most
recently assigned lead, else the handoff's routing on the account's fields) and an SLA clock. The
moves go into the change (`Changed.account_moves`) for the announcements that follow; a person's
action on an account (`act_on_account`) runs the pipeline with its move, so that it is announced
and its people are tested again by segments and workflows, as the model's moves are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.adapters.repository import LeadRecord
from qualify.domain.account_stages import (
    SENT_BACK,
    AccountMove,
    AccountStage,
    check_account_action,
    decide_account,
    requalify_at,
)
from qualify.domain.accounts import Mark, Rollup, account_fit
from qualify.domain.engagement import EngagementState
from qualify.domain.errors import NotFound, NotYourLead
from qualify.domain.fit import account_fields, profile_values
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.records import Lead
from qualify.domain.routing import choose_route, sla_due
from qualify.domain.scoring_model import AccountSpec, ScoringModel
from qualify.service import pipeline
from qualify.service.lifecycle import handoff
from qualify.service.pipeline import Changed, Run
from qualify.service.unit_of_work import UnitOfWork, from_ts, utcnow

_accounts, _leads, _history = schema.accounts, schema.leads, schema.account_stage_history
_PEOPLE_STAGES = frozenset({Stage.OPPORTUNITY, Stage.CUSTOMER, Stage.EVANGELIST})
PENDING_PER_PASS = 5000  # pending accounts one worker pass keeps at most, so a pass stays short


@dataclass(slots=True)
class _Account:
    """One account as the reaction changes it."""

    id: int
    row: dict[str, Any]
    rollup: Rollup | None  # None: to be counted from its people
    swaps: list[tuple[Mark | None, Mark | None]] = field(default_factory=list)
    people: list[Stage] = field(default_factory=list)  # stages its changed people moved to
    lost_deal: bool = False  # one of its people's opportunities was just lost
    at: float | None = None  # its people's newest dated change (seconds since the epoch)


def react(run: Run) -> None:
    """Reaction `accounts`: the accounts of the leads the change touched, kept up to date; the
    people of every account moved (by them, or by a person's action) are tested again after."""
    _keep_touched(run)
    live = [m for m in run.changed.account_moves if not run.is_history(m["at"])]
    if live and run.configured.automation:  # segments and workflows test its people again
        run.changed.account_entries += _people_entering(run.uow.connection, live)


def _keep_touched(run: Run) -> None:
    model = run.changed.model
    spec = model.accounts if model is not None else None
    if model is None or spec is None:
        return
    touched: dict[int, list[tuple[LeadRecord, bool]]] = defaultdict(list)  # account -> (record, is its now)
    for record in run.changed.records:
        if record.id is None:
            continue
        before = record.account_before
        if record.account_id is not None:
            touched[record.account_id].append((record, True))
        if before is not None and before[0] is not None and before[0] != record.account_id:
            touched[before[0]].append((record, False))
    if run.changed.accounts_later and run.history_before is None:
        _leave_to_worker(run, touched)
    if not touched:
        return
    uow, now = run.uow, run.changed.now
    accounts = _lock(uow.connection, model, list(touched))
    held: list[tuple[LeadRecord, int, Mark]] = []  # what each roll-up holds of its people from now on
    for account_id, records in touched.items():
        account = accounts.get(account_id)
        if account is None:
            continue
        for record, current in records:
            assert record.id is not None
            state = record.state
            after = None
            if current:
                after = Mark.of_lead(spec, record.id, state)
                held.append((record, account_id, after))
            before = record.account_before
            if before is None:
                account.rollup = None  # not known what the lead added before: count the account again
            else:
                account.swaps.append((before[1] if before[0] == account_id else None, after))
            # As of its people's newest change: their latest event or stage move.
            newest = state.stage_entered if state.last_event is None else max(state.last_event, state.stage_entered)
            if account.at is None or newest > account.at:
                account.at = newest
    for record, account_id, mark in held:
        record.account_before = (account_id, mark)
    for move in run.changed.moves:
        of_account = accounts.get(move.record.account_id) if move.record.account_id is not None else None
        stage = Stage(move.to_stage)
        if of_account is not None and stage in _PEOPLE_STAGES:
            of_account.people.append(stage)
        elif of_account is not None and move.values["from_stage"] == Stage.OPPORTUNITY.value:
            of_account.lost_deal = True
    run.changed.account_moves += _keep(uow, model, spec, list(accounts.values()), now, run.is_history)


def _leave_to_worker(run: Run, touched: dict[int, list[tuple[LeadRecord, bool]]]) -> None:
    """Mark the touched accounts pending, and take them out of `touched`; keep those whose people
    moved into a deal or out of one (the policy reads those moves, which the worker cannot)."""
    now_too = set()
    for move in run.changed.moves:
        if move.record.account_id is not None and (
            Stage(move.to_stage) in _PEOPLE_STAGES or move.values["from_stage"] == Stage.OPPORTUNITY.value
        ):
            now_too.add(move.record.account_id)
    later = [account_id for account_id in touched if account_id not in now_too]
    repo.mark_accounts_pending(run.uow.connection, later, run.changed.now)
    for account_id in later:
        del touched[account_id]


def keep_pending(uow: UnitOfWork, now: datetime, *, limit: int = PENDING_PER_PASS) -> int:
    """Keep up to `limit` accounts an ingestion left to the worker, those waiting longest first:
    each counted again from its people, scored as of their newest change, moved where the policy
    says; the moves announced (webhooks, segments, workflows, CRM). Returns how many were kept."""
    conn = uow.connection
    ids = repo.pending_accounts(conn, limit)
    if not ids:
        return 0
    model = uow.active_model()
    spec = model.accounts
    if spec is None:  # the model scores accounts no more: nothing to keep
        conn.execute(update(_accounts).where(_accounts.c.id.in_(ids)).values(pending_since=None))
        return len(ids)
    # Locked, then read again: a transaction that kept one meanwhile has committed by now.
    accounts = [a for a in _lock(conn, model, ids).values() if a.row["pending_since"] is not None]
    moves = _keep(uow, model, spec, accounts, now, lambda at: False, as_of_people=True)
    if moves:
        pipeline.react(uow, Changed(now, model, account_moves=moves))
    return len(accounts)


def _people_entering(conn: Connection, moves: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(lead, stage) for each live person of each account moved, with the stage it entered."""
    entered: dict[int, list[str]] = defaultdict(list)
    for move in moves:
        entered[move["account_id"]].append(move["to_stage"])
    out: list[tuple[int, str]] = []
    for part in repo.chunks(sorted(entered)):
        for lead_id, account_id in conn.execute(
            select(_leads.c.id, _leads.c.account_id)
            .where(_leads.c.account_id.in_(part), _leads.c.erased_at.is_(None))
            .order_by(_leads.c.id)
        ):
            out += [(lead_id, stage) for stage in entered[account_id]]
    return out


def forget_person(uow: UnitOfWork, lead_id: int, now: datetime) -> None:
    """Take a lead out of its account's roll-up (it is erased, or merged into another lead):
    what the lead adds is read from its stored row, before the row changes."""
    model = uow.active_model()
    spec = model.accounts
    if spec is None:
        return
    row = uow.connection.execute(
        select(_leads.c.account_id, _leads.c.engagement_state, _leads.c.last_event_at, _leads.c.buying_roles).where(
            _leads.c.id == lead_id, _leads.c.erased_at.is_(None)
        )
    ).first()
    if row is None or row.account_id is None:
        return
    accounts = _lock(uow.connection, model, [row.account_id])
    account = accounts.get(row.account_id)
    if account is None:
        return
    account.swaps.append((_stored_mark(spec, lead_id, row.engagement_state, row.last_event_at, row.buying_roles), None))
    _keep(uow, model, spec, [account], now, lambda at: False, leaving=lead_id)


def recount_accounts(uow: UnitOfWork, account_ids: list[int] | None = None, *, now: datetime | None = None) -> int:
    """Count accounts again from their people under the active model (all of them by default),
    and move them where the policy says; returns how many were counted."""
    model = uow.active_model()
    spec = model.accounts
    if spec is None:
        return 0
    conn = uow.connection
    if account_ids is None:
        account_ids = list(conn.execute(select(_accounts.c.id).order_by(_accounts.c.id)).scalars())
    counted = 0
    for part in repo.chunks(account_ids):
        accounts = _lock(conn, model, list(part))
        for account in accounts.values():
            account.rollup = None
        _keep(uow, model, spec, list(accounts.values()), now or utcnow(), lambda at: False)
        counted += len(accounts)
    return counted


def _lock(conn: Connection, model: ScoringModel, ids: list[int]) -> dict[int, _Account]:
    """The accounts' state, their rows locked until commit in id order, with their roll-ups where
    they were counted under this model."""
    out: dict[int, _Account] = {}
    for row in repo.lock_account_states(conn, ids):
        kept = row["rollup"] is not None and row["model_version"] == model.version and row["pending_since"] is None
        out[row["id"]] = _Account(row["id"], row, Rollup.from_json(row["rollup"]) if kept else None)
    return out


def _keep(
    uow: UnitOfWork,
    model: ScoringModel,
    spec: AccountSpec,
    accounts: list[_Account],
    now: datetime,
    is_history: Callable[[datetime], bool],
    *,
    leaving: int | None = None,
    as_of_people: bool = False,
) -> list[dict[str, Any]]:
    """Swap the accounts' marks into their roll-ups (or count them again), score them as of their
    people's change (with `as_of_people`, an account counted again: as of its people's newest),
    move them where the policy says, and write them; return the moves."""
    conn = uow.connection
    for account in accounts:
        rollup = account.rollup
        if rollup is not None and not all(rollup.swap(before, after) for before, after in account.swaps):
            account.rollup = None
    recount = [a for a in accounts if a.rollup is None]
    if recount:
        marks, newest = _marks(conn, spec, [a.id for a in recount], leaving)
        for account in recount:
            account.rollup = Rollup.of(marks.get(account.id, []))
            if as_of_people and account.at is None:
                account.at = newest.get(account.id)
    # An account's fit changes with its fields (an upsert counts it again) or the model: scored
    # then, kept otherwise. Counted again because its people changed (`as_of_people`), its fields
    # did not.
    counted = {a.id for a in recount}
    refit = [
        a.id
        for a in accounts
        if (a.id in counted and not as_of_people)
        or a.row["fit_score"] is None
        or a.row["model_version"] != model.version
    ]
    fields = repo.accounts_by_id(conn, refit) if refit else {}
    dealing = _with_open_deals(
        conn, [a.id for a in accounts if a.lost_deal and a.row["stage"] == AccountStage.OPPORTUNITY.value]
    )
    moves: list[dict[str, Any]] = []
    scores = []
    for account in accounts:
        rollup = account.rollup
        assert rollup is not None
        row = account.row
        ts = min(account.at, now.timestamp()) if account.at is not None else now.timestamp()
        at = from_ts(ts)
        fit = account_fit(spec, account_fields(fields[account.id]))[0] if account.id in fields else row["fit_score"]
        engagement = rollup.engagement_at(ts)
        roles = rollup.covered_at(spec, ts)
        stage = AccountStage(row["stage"])
        requalify = row["requalify_at"].timestamp() if row["requalify_at"] else None
        scores.append((account.id, fit, spec.grade(fit), engagement, len(roles), rollup.to_json(), at, model.version))
        moved: dict[str, Any] = {}
        for move in decide_account(
            spec, stage, fit=fit, engagement=engagement, covered=len(roles), people=account.people, now=ts,
            requalify_at=requalify, lost=account.lost_deal and account.id not in dealing,
        ):  # fmt: skip
            moves.append(_history_row(account, stage, move, at, model, fit, engagement, roles))
            if stage is AccountStage.OPPORTUNITY and move.to_stage is AccountStage.ENGAGED:
                moved["requalify_at"] = from_ts(requalify_at(spec, ts))  # lost: waits as a rejected MQA does
            stage = move.to_stage
            moved.update(stage=stage.value, stage_entered_at=at)
            if stage is AccountStage.MQA and not is_history(at):
                moved.update(_route(conn, model, account, at))
            moves[-1]["owner"] = moved.get("owner", row["owner"])
        if moved:
            conn.execute(update(_accounts).where(_accounts.c.id == account.id).values(**moved))
    repo.update_account_scores(conn, scores)
    if moves:
        conn.execute(_history.insert(), [_stored(m) for m in moves])
    return moves


def _with_open_deals(conn: Connection, ids: list[int]) -> set[int]:
    """Of these accounts, those with a live person in opportunity still."""
    out: set[int] = set()
    for part in repo.chunks(sorted(ids)):
        out |= set(
            conn.execute(
                select(_leads.c.account_id).where(
                    _leads.c.account_id.in_(part),
                    _leads.c.stage == Stage.OPPORTUNITY.value,
                    _leads.c.erased_at.is_(None),
                )
            ).scalars()
        )
    return out


def _marks(
    conn: Connection, spec: AccountSpec, ids: list[int], leaving: int | None
) -> tuple[dict[int, list[Mark]], dict[int, float]]:
    """What each of the accounts' people adds to its roll-up, read from their stored rows, and
    each account's people's newest change (latest event or stage move, seconds since the epoch)."""
    out: dict[int, list[Mark]] = defaultdict(list)
    newest: dict[int, float] = {}
    for lead_id, account_id, state, last, roles, entered in repo.account_people(conn, ids, leaving):
        out[account_id].append(_stored_mark(spec, lead_id, state, last, roles))
        changed = max(entered, last).timestamp() if last is not None else entered.timestamp()
        newest[account_id] = max(newest.get(account_id, changed), changed)
    return out, newest


def _stored_mark(spec: AccountSpec, lead_id: int, state: Any, last: datetime | None, roles: Any) -> Mark:
    """What a lead adds to its account's roll-up, from its stored columns (`engagement_state`,
    `last_event_at`, `buying_roles`)."""
    last_at = last.timestamp() if last else None
    return Mark.of(spec, lead_id, EngagementState.from_json(state), last_at, tuple(roles or ()))


def _history_row(
    account: _Account,
    from_stage: AccountStage,
    move: AccountMove,
    at: datetime,
    model: ScoringModel,
    fit: float,
    engagement: float,
    roles: tuple[str, ...],
    *,
    by: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "account_id": account.id,
        "domain": account.row["domain"],
        "from_stage": from_stage.value,
        "to_stage": move.to_stage.value,
        "at": at,
        "actor": move.actor.value,
        "by": by or (model.version if move.actor is Actor.MODEL else "account roll-up"),
        "reason": move.reason[:300],
        "note": note,
        "fit_score": fit,
        "engagement_score": engagement,
        "covered_roles": len(roles),
        "roles": list(roles),
        "model_version": model.version,
    }


def _stored(move: dict[str, Any]) -> dict[str, Any]:
    """A move's history row, without what announcements add (the domain, the owner)."""
    return {k: v for k, v in move.items() if k in _history.c}


def _route(conn: Connection, model: ScoringModel, account: _Account, at: datetime) -> dict[str, Any]:
    """An account that became MQA: its owner (its own, else its most recently assigned lead's,
    else the handoff's routing on the account's fields) and its SLA clock."""
    spec = model.handoff
    if spec is None:
        return {}
    owner = account.row["owner"]
    if owner is None or not spec.knows_owner(owner):
        owner = handoff.account_owner(conn, spec, account.id, None)
    if owner is None:
        fields = repo.accounts_by_id(conn, [account.id])[account.id]
        route = choose_route(spec, profile_values(Lead.stored(country=fields.country), fields))
        owner = handoff.assign(conn, spec, route, None, at).owner
    due = sla_due(at, spec.sla) if spec.sla is not None else None
    assigned = at if owner is not None and owner != account.row["owner"] else account.row["owner_assigned_at"]
    return {"owner": owner, "owner_assigned_at": assigned, "sla_due_at": due, "sla_breached_at": None}


@dataclass(frozen=True, slots=True)
class AccountChange:
    """A person's action on an account, as recorded."""

    account: str  # its domain
    action: str
    from_stage: AccountStage
    to_stage: AccountStage
    at: datetime
    by: str
    reason: str | None
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "action": self.action,
            "from": self.from_stage.value,
            "to": self.to_stage.value,
            "at": self.at,
            "by": self.by,
            "reason": self.reason,
            "note": self.note,
        }


def act_on_account(
    uow: UnitOfWork,
    account_id: int,
    action_name: str,
    *,
    by: str,
    reason: str | None = None,
    note: str | None = None,
    now: datetime | None = None,
    owned_by: str | None = None,
) -> AccountChange:
    """A person's action on an account (`accept`, `reject`, `lose`, `win`), recorded in the
    account's history with its reason code and note. An account sent back (reject, lose) is not
    MQA again before `requalify_after_days`; one accepted is owned by who accepted it, where it
    had no owner. With `owned_by` (a sales rep acting), only an account they own, or nobody does."""
    now = now or utcnow()
    model = uow.active_model()
    accounts = _lock(uow.connection, model, [account_id])
    account = accounts.get(account_id)
    if account is None:
        raise NotFound(f"no account #{account_id}")
    row = account.row
    if owned_by is not None and row["owner"] not in (None, owned_by):
        raise NotYourLead(f"account {row['domain']} is owned by {row['owner']}, not {owned_by}")
    stage = AccountStage(row["stage"])
    note = note.strip() if note and note.strip() else None
    action = check_account_action(action_name, stage, reason, note)
    values: dict[str, Any] = {
        "stage": action.target.value, "stage_entered_at": now, "sla_due_at": None, "sla_breached_at": None,
    }  # fmt: skip
    if action.name in SENT_BACK and model.accounts is not None:
        values["requalify_at"] = from_ts(requalify_at(model.accounts, now.timestamp()))
    if action.name == "accept" and row["owner"] is None:
        values.update(owner=by, owner_assigned_at=now)
    uow.connection.execute(update(_accounts).where(_accounts.c.id == account_id).values(**values))
    move = AccountMove(action.target, Actor.USER, reason or action.name)
    # Its scores now, from the roll-up where it was counted under this model (else as last kept).
    rollup, spec, ts = account.rollup, model.accounts, now.timestamp()
    roles = rollup.covered_at(spec, ts) if rollup is not None and spec is not None else ()
    engagement = rollup.engagement_at(ts) if rollup is not None else row["engagement_score"] or 0.0
    history = _history_row(
        account, stage, move, now, model, row["fit_score"] or 0.0, engagement, roles, by=by, note=note
    )
    uow.connection.execute(_history.insert(), [_stored(history)])
    history["owner"] = values.get("owner", row["owner"])
    pipeline.react(uow, Changed(now, model, account_moves=[history]))
    return AccountChange(row["domain"], action.name, stage, action.target, now, by, reason, note)
