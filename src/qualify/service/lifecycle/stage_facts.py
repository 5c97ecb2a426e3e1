"""People's stage decisions kept as facts, a CRM's deals, and rebuilding a lead's history from them.

A lead's stage history is derived. The scoring model's moves follow from the lead's events; the
people's moves from its stage facts: an accept taken live, a CRM's "became SQL" date, a deal
opened, won or lost. When history arrives out of time order (stage dates after the events, events
older than a recorded decision), the lead is rebuilt: its events and facts replayed in time order
under the active model (`domain.replay`), its stage history, scores and stage written again. So
however the files arrive, a lead ends as one time-ordered replay of everything leaves it.

An imported fact may move a lead to any later stage at its date (a deal won from stage `lead`:
the CRM knows better than the model's thresholds); facts that contradict each other (a lead sold
to, then accepted as SQL a month later without going back to nurture) are refused, naming both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import bindparam, delete, func, select, update

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.adapters.repository import LeadRecord
from qualify.domain.errors import InvalidInput
from qualify.domain.evaluator import LeadState
from qualify.domain.lifecycle import FUNNEL, REASON_CODES, STAGE_ACTIONS, Actor, Stage
from qualify.domain.records import Lead, normalise_domain, normalise_email
from qualify.domain.replay import ReplayAction, ReplayEvent, replay_lead
from qualify.service.lifecycle.events import CLOCK_SKEW
from qualify.service.lifecycle.lead_batch import LeadBatch
from qualify.service.pipeline import of, react, reacting
from qualify.service.unit_of_work import UnitOfWork, Workspace, retrying

FactStatus = Literal["created", "updated", "unchanged", "rejected"]
OUTCOMES = ("open", "won", "lost")
_RANK = {stage: rank for rank, stage in enumerate(FUNNEL)} | {Stage.NURTURE: 0}
_CLOSED = (Stage.CUSTOMER, Stage.EVANGELIST)


@dataclass(frozen=True, slots=True)
class StageFact:
    """A person's decision: at `at` the lead went to `to_stage` (from `from_stage`, when known)."""

    at: datetime
    to_stage: Stage
    by: str = "import"
    action: str | None = None
    from_stage: Stage | None = None
    reason: str | None = None
    note: str | None = None

    def describe(self) -> str:
        return f"{self.to_stage.value} at {self.at.isoformat()}"


def imported_fact(
    *,
    at: datetime,
    stage: str | None = None,
    action: str | None = None,
    by: str | None = None,
    reason: str | None = None,
    note: str | None = None,
) -> StageFact:
    """A fact from a row of history: a stage entered or an action taken, with who, why and a note.

    A reason that is not one of the reason codes is kept as the note, under reason `other`, and a
    step back without a reason gets `other` too: history a CRM holds is kept, not refused for its
    vocabulary. Raises `InvalidInput` naming the field for what cannot be a fact.
    """
    if action is None and stage is None:
        raise InvalidInput("no value: a stage change needs its stage or its action", field="stage")
    target: Stage | None = None
    if action is not None:
        known = STAGE_ACTIONS.get(action.strip().lower())
        if known is None:
            raise InvalidInput(
                f"unknown action {action!r}; expected one of: {', '.join(STAGE_ACTIONS)}", field="action"
            )
        action, target = known.name, known.target
    if stage is not None:
        try:
            named = Stage(stage.strip().lower())
        except ValueError:
            choices = ", ".join(s.value for s in Stage if s is not Stage.LEAD)
            raise InvalidInput(f"unknown stage {stage!r}; expected one of: {choices}", field="stage") from None
        if target is not None and named is not target:
            raise InvalidInput(f"action {action} moves a lead to {target.value}, not {named.value}", field="stage")
        target = named
    assert target is not None
    if target is Stage.LEAD:
        raise InvalidInput("every lead starts in stage lead: name the stage it moved to", field="stage")
    note = (note or "").strip() or None
    reason = (reason or "").strip() or None
    if target in (Stage.NURTURE, Stage.DISQUALIFIED):
        if reason is None or reason.lower() not in REASON_CODES:
            note = "; ".join(part for part in (reason, note) if part) or None
            reason = "other"
        else:
            reason = reason.lower()
    elif reason is not None:
        note = "; ".join(part for part in (reason, note) if part)
        reason = None
    who = (by or "").strip() or "import"
    return StageFact(at, target, who[:200], action, None, reason, note)


def stage_change_of(data: Mapping[str, Any]) -> KeyedFact:
    """A row of stage history (a file's row or an API item, by field name) as a keyed fact, or
    `InvalidInput` naming the field."""
    if data.get("at") is None:
        raise InvalidInput("no value: a stage change needs its instant", field="at")
    email, external_id = _lead_keys(data, "a stage change needs the lead's email or external_id")
    fact = imported_fact(
        at=data["at"],
        stage=data.get("stage"),
        action=data.get("action"),
        by=data.get("by"),
        reason=data.get("reason"),
        note=data.get("note"),
    )
    return email, external_id, fact


def deal_of(data: Mapping[str, Any], extras: Mapping[str, Any] | None = None) -> Deal:
    """A deal from a file's row or an API item, by field name, checked (`Deal.checked`): with the
    lead's email or external id, or else its account's domain (`upsert_deals` picks the lead)."""
    account = None
    if data.get("account_domain"):
        try:
            account = normalise_domain(str(data["account_domain"]))
        except InvalidInput as error:
            raise InvalidInput(error.message, field="account_domain") from None
    if account is not None and not (data.get("email") or data.get("external_id")):
        email, external_id = None, None
    else:
        email, external_id = _lead_keys(data, "a deal needs its lead's email or external_id, or its account_domain")
    deal = Deal(
        email,
        external_id,
        data.get("deal_id"),
        data.get("opened_at"),
        data.get("closed_at"),
        data.get("outcome"),
        data.get("amount"),
        data.get("reason"),
        data.get("by"),
        {**(data.get("properties") or {}), **(extras or {})},
        account,
    )
    return deal.checked()


def _lead_keys(data: Mapping[str, Any], needed: str) -> tuple[str | None, str | None]:
    email = normalise_email(data["email"]) if data.get("email") else None
    external_id = str(data.get("external_id") or "").strip() or None
    if not (email or external_id):
        raise InvalidInput(f"no value: {needed}", field="email")
    return email, external_id


def contradiction(facts: Iterable[StageFact]) -> tuple[StageFact, StageFact] | None:
    """The first pair of facts, in time order, that cannot both be true of one lead, or None.

    A lead goes forward through the funnel, back to nurture (from any stage before customer) and
    out (disqualified, from any stage before customer); it does not go back up without nurture,
    nor anywhere once disqualified or after becoming a customer but forward.
    """
    stage, since = Stage.LEAD, None
    for fact in sorted(facts, key=lambda f: f.at):
        to = fact.to_stage
        if since is not None:
            if stage is Stage.DISQUALIFIED:
                return since, fact
            if to in (Stage.NURTURE, Stage.DISQUALIFIED) and stage in _CLOSED:
                return since, fact
            if to in _RANK and to is not Stage.NURTURE and _RANK[to] < _RANK[stage]:
                return since, fact
        stage, since = to, fact
    return None


@dataclass
class FactsOutcome:
    """One status per fact given, the problem of each refused one (field, reason), the leads to rebuild."""

    statuses: list[FactStatus] = field(default_factory=list)
    problems: dict[int, tuple[str, str]] = field(default_factory=dict)
    lead_ids: set[int] = field(default_factory=set)


KeyedFact = tuple[str | None, str | None, StageFact]  # email, external id, the fact


def record_facts(
    uow: UnitOfWork,
    facts: Sequence[KeyedFact],
    *,
    source: str,
    now: datetime,
    create_unknown: bool = True,
) -> FactsOutcome:
    """Store imported facts, each once (a fact already stored is `unchanged`), refusing those the
    lead's other facts contradict. The leads are not rebuilt here: see `rebuild_leads`."""
    outcome = FactsOutcome()
    batch = LeadBatch(uow, uow.active_model(), now)
    records = _leads_of(
        uow, batch, [(email, external_id, fact.at) for email, external_id, fact in facts], create_unknown
    )
    stored = _stored_facts(uow, {r.id for r in records if r is not None and r.id is not None})
    rows: list[dict[str, Any]] = []
    for index, ((email, external_id, fact), record) in enumerate(zip(facts, records, strict=True)):
        problem = _refusal(fact, record, email, external_id, now)
        if problem is None and record is not None:
            assert record.id is not None
            known = stored[record.id]
            if any(f.at == fact.at and f.to_stage is fact.to_stage for f in known):
                outcome.statuses.append("unchanged")
                continue
            problem = _contradicted(known, [fact])
            if problem is None:
                known.append(fact)
                rows.append(fact_row(record.id, fact, source, now))
                outcome.lead_ids.add(record.id)
                outcome.statuses.append("created")
                continue
        outcome.statuses.append("rejected")
        outcome.problems[index] = problem or ("email", "no lead")
    if rows:
        uow.connection.execute(schema.stage_facts.insert(), rows)
    _queue(uow, outcome.lead_ids, now)
    return outcome


def _queue(uow: UnitOfWork, lead_ids: Iterable[int], now: datetime) -> None:
    """Queue the leads whose facts changed for a rebuild, in the transaction that changed them."""
    repo.queue_rebuild(uow.connection, lead_ids, now=now, history_before=_history_cutoff(uow.workspace, now))


def _history_cutoff(workspace: Workspace, now: datetime) -> datetime:
    """Stage facts are history: dated before `now`, or before the workspace's own later cutoff."""
    cutoff = of(workspace).cutoff(now)
    return max(cutoff, now) if cutoff else now


def _leads_of(
    uow: UnitOfWork, batch: LeadBatch, keys: list[tuple[str | None, str | None, datetime]], create_unknown: bool
) -> list[LeadRecord | None]:
    """The lead each key names (aliases of merged leads included); unknown ones created when allowed,
    at the instant of their first fact, so that a later leads file fills in who they are."""
    batch.load({e for e, _, _ in keys if e}, {x for _, x, _ in keys if x}, profile=False)
    if create_unknown:
        batch.claim({e for e, _, _ in keys if e}, {x for _, x, _ in keys if x}, profile=False)
        unknown = [(e, x, at) for e, x, at in keys if (e or x) and batch.get(e, x) is None]
        batch.ensure_accounts(Lead(email=e, external_id=x).account_domain or "" for e, x, _ in unknown)
        for email, external_id, at in sorted(unknown, key=lambda k: k[2]):
            if batch.get(email, external_id) is None:
                batch.create(Lead(email=email, external_id=external_id, created_at=at), at=at, by="import")
        react(uow, batch.write(), batch)  # the new leads get their ids
    return [batch.get(e, x) for e, x, _ in keys]


def _account_leads(uow: UnitOfWork, deals: Sequence[Deal]) -> list[LeadRecord | None]:
    """The lead each deal keyed by its account goes to: of the account's leads (not erased) created
    by the deal's first date, the one most recently active by then (its newest event at or before
    it, else its creation); with none created by then, the account's first lead; None where the
    account has no lead."""
    if not deals:
        return []
    conn, leads, accounts, events = uow.connection, schema.leads, schema.accounts, schema.events
    domains = sorted({d.account_domain for d in deals if d.account_domain})
    members: dict[str, list[tuple[int, datetime]]] = defaultdict(list)
    for part in repo.chunks(domains):
        for domain, lead_id, created in conn.execute(
            select(accounts.c.domain, leads.c.id, leads.c.created_at)
            .join(leads, leads.c.account_id == accounts.c.id)
            .where(accounts.c.domain.in_(part), leads.c.erased_at.is_(None))
            .order_by(leads.c.created_at, leads.c.id)
        ):
            members[domain].append((lead_id, created))
    chosen: list[int | None] = []
    for deal in deals:
        people = members.get(deal.account_domain or "", [])
        at = deal.first_at
        before = [lead_id for lead_id, created in people if created <= at]
        if not before:
            chosen.append(people[0][0] if people else None)
            continue
        newest = dict(
            conn.execute(
                select(events.c.lead_id, func.max(events.c.occurred_at))
                .where(events.c.lead_id.in_(before), events.c.occurred_at <= at)
                .group_by(events.c.lead_id)
            ).all()
        )
        created_at = dict(people)
        chosen.append(max(before, key=lambda i: (newest.get(i) or created_at[i], created_at[i], i)))
    found = {r.id: r for r in repo.find_leads_by_id(conn, sorted({i for i in chosen if i is not None}))}
    return [found.get(i) if i is not None else None for i in chosen]


def _refusal(
    fact: StageFact, record: LeadRecord | None, email: str | None, external_id: str | None, now: datetime
) -> tuple[str, str] | None:
    if record is None:
        if not (email or external_id):
            return "email", "no value: a stage change needs the lead's email or external_id"
        return ("email" if email else "external_id"), f"no lead {email or external_id} (creating leads is off)"
    if fact.at > now + CLOCK_SKEW:
        return "at", f"{fact.at.isoformat()} is in the future"
    return None


def _contradicted(known: list[StageFact], new: list[StageFact]) -> tuple[str, str] | None:
    """Why `new` cannot join the lead's `known` facts, naming both sides, or None."""
    pair = contradiction([*known, *new])
    if pair is None:
        return None
    first, second = pair
    return "at", f"contradicts the lead's stage history: {first.describe()}, then {second.describe()}"


def _stored_facts(uow: UnitOfWork, ids: Iterable[int]) -> dict[int, list[StageFact]]:
    f = schema.stage_facts
    out: dict[int, list[StageFact]] = defaultdict(list)
    for part in repo.chunks(sorted(ids)):
        for row in uow.connection.execute(select(f).where(f.c.lead_id.in_(part)).order_by(f.c.at, f.c.id)):
            out[row.lead_id].append(fact_from_row(row))
    return out


def fact_from_row(row: Any) -> StageFact:
    return StageFact(
        row.at,
        Stage(row.to_stage),
        row.by,
        row.action,
        Stage(row.from_stage) if row.from_stage else None,
        row.reason,
        row.note,
    )


def fact_row(lead_id: int, fact: StageFact, source: str, now: datetime) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "at": fact.at,
        "from_stage": fact.from_stage.value if fact.from_stage else None,
        "to_stage": fact.to_stage.value,
        "action": fact.action,
        "by": fact.by,
        "reason": fact.reason,
        "note": fact.note,
        "source": source[:300],
        "recorded_at": now,
    }


def record_decision(uow: UnitOfWork, lead_id: int, fact: StageFact, now: datetime) -> None:
    """Keep a person's live stage action as a fact (once: a fact of that stage at that instant stays)."""
    f = schema.stage_facts
    same = select(f.c.id).where(f.c.lead_id == lead_id, f.c.at == fact.at, f.c.to_stage == fact.to_stage.value)
    if uow.connection.execute(same).first() is None:
        uow.connection.execute(f.insert().values(fact_row(lead_id, fact, "live", now)))


def merge_facts(uow: UnitOfWork, gone: int, kept: int) -> None:
    """A merged lead's deals, and the facts they gave, go to the lead kept; its other facts go with
    its stage history (dropped). A deal fact the kept lead already has at that instant is dropped."""
    conn, f = uow.connection, schema.stage_facts
    conn.execute(update(schema.deals).where(schema.deals.c.lead_id == gone).values(lead_id=kept))
    taken = {(row.at, row.to_stage) for row in conn.execute(select(f.c.at, f.c.to_stage).where(f.c.lead_id == kept))}
    moving = [
        row.id
        for row in conn.execute(
            select(f.c.id, f.c.at, f.c.to_stage).where(f.c.lead_id == gone, f.c.source.like("deal:%"))
        )
        if (row.at, row.to_stage) not in taken
    ]
    for part in repo.chunks(moving):
        conn.execute(update(f).where(f.c.id.in_(part)).values(lead_id=kept))
    conn.execute(delete(f).where(f.c.lead_id == gone))
    conn.execute(delete(schema.rebuild_queue).where(schema.rebuild_queue.c.lead_id == gone))


def forget_facts(uow: UnitOfWork, lead_id: int) -> None:
    """An erased person's notes and deal properties go; the dates stay, for the funnel's counts."""
    conn = uow.connection
    conn.execute(update(schema.stage_facts).where(schema.stage_facts.c.lead_id == lead_id).values(note=None))
    conn.execute(update(schema.deals).where(schema.deals.c.lead_id == lead_id).values(properties={}))


# --- deals ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deal:
    """A CRM's deal with one lead: opened, and closed won or lost (or still open)."""

    email: str | None
    external_id: str | None
    deal_id: str | None = None
    opened_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: str | None = None
    amount: float | None = None
    reason: str | None = None
    by: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    account_domain: str | None = None  # a deal keyed by its account: it goes to one of its leads (upsert_deals)

    def checked(self) -> Deal:
        """The deal with its outcome and id settled, or `InvalidInput` naming the field."""
        if self.opened_at is None and self.closed_at is None:
            raise InvalidInput("no value: a deal needs opened_at or closed_at", field="opened_at")
        outcome = (self.outcome or ("open" if self.closed_at is None else "")).strip().lower()
        if outcome not in OUTCOMES:
            wanted = "won or lost" if self.closed_at is not None else "open, won or lost"
            raise InvalidInput(f"outcome {self.outcome!r}: expected {wanted}", field="outcome")
        if outcome != "open" and self.closed_at is None:
            raise InvalidInput(f"a {outcome} deal needs its closed_at", field="closed_at")
        properties, closed_at = self.properties, self.closed_at
        if outcome == "open" and closed_at is not None:
            # A CRM's close date of an open deal is the date it is expected to close: not a fact.
            properties = {**properties, "expected_close_at": closed_at.isoformat()}
            closed_at = None
        if outcome == "open" and self.opened_at is None:
            raise InvalidInput("no value: an open deal needs its opened_at", field="opened_at")
        if self.opened_at and closed_at and closed_at < self.opened_at:
            raise InvalidInput(
                f"closed_at {closed_at.isoformat()} is before opened_at {self.opened_at.isoformat()}",
                field="closed_at",
            )
        if self.amount is not None and not (-1e15 < self.amount < 1e15):
            raise InvalidInput(f"amount {self.amount} is out of range", field="amount")
        key = self.email or self.external_id or self.account_domain
        deal_id = self.deal_id or f"{key}@{self.first_at.isoformat()}"
        return Deal(
            self.email, self.external_id, deal_id[:200], self.opened_at, closed_at, outcome, self.amount,
            self.reason, self.by, properties, self.account_domain,
        )  # fmt: skip

    @property
    def first_at(self) -> datetime:
        """When the deal is first known: opened, or else closed."""
        first = self.opened_at or self.closed_at
        if first is None:
            raise InvalidInput("no value: a deal needs opened_at or closed_at", field="opened_at")
        return first

    def facts(self) -> list[StageFact]:
        """Opened: opportunity; won: customer; lost: back to nurture, with the reason."""
        who = (self.by or "").strip() or "import"
        out = []
        if self.opened_at is not None:
            out.append(imported_fact(at=self.opened_at, stage="opportunity", by=who, note=f"deal {self.deal_id}"))
        if self.closed_at is not None and self.outcome == "won":
            out.append(imported_fact(at=self.closed_at, stage="customer", by=who, note=f"deal {self.deal_id} won"))
        if self.closed_at is not None and self.outcome == "lost":
            out.append(imported_fact(at=self.closed_at, action="lose", by=who, reason=self.reason or "deal lost"))
        return out


def upsert_deals(uow: UnitOfWork, deals: Sequence[Deal], *, now: datetime, create_unknown: bool = True) -> FactsOutcome:
    """Store deals by deal id (a deal imported again replaces its dates and outcome) and their facts.

    A deal whose facts the lead's other facts contradict is refused whole. Each status is
    `created`, `updated` (as `created`'s sibling, reported as updated) or `unchanged`.
    """
    outcome = FactsOutcome()
    conn = uow.connection
    d, f = schema.deals, schema.stage_facts
    checked: list[Deal | InvalidInput] = []
    for deal in deals:
        try:
            checked.append(deal.checked())
        except InvalidInput as error:
            checked.append(error)
    good = [deal for deal in checked if isinstance(deal, Deal)]
    by_lead = [x for x in good if x.email or x.external_id]
    batch = LeadBatch(uow, uow.active_model(), now)
    found = _leads_of(uow, batch, [(x.email, x.external_id, x.first_at) for x in by_lead], create_unknown)
    records: dict[int, LeadRecord | None] = dict(zip((id(x) for x in by_lead), found, strict=True))
    by_account = [x for x in good if not (x.email or x.external_id)]
    records.update(zip((id(x) for x in by_account), _account_leads(uow, by_account), strict=True))
    ids = {r.id for r in found if r is not None and r.id is not None}
    stored = _stored_facts(uow, ids)
    existing: dict[str | None, dict[str, Any]] = {
        row.deal_id: dict(row._mapping)
        for part in repo.chunks(sorted({x.deal_id for x in good if x.deal_id}))
        for row in conn.execute(select(d).where(d.c.deal_id.in_(part)))
    }
    for index, item in enumerate(checked):
        if isinstance(item, InvalidInput):
            outcome.statuses.append("rejected")
            outcome.problems[index] = (item.field or "(row)", item.message)
            continue
        deal = item
        record, facts = records[id(deal)], deal.facts()
        problem = _refusal(facts[-1], record, deal.email, deal.external_id, now)
        if record is None and deal.account_domain and not (deal.email or deal.external_id):
            problem = ("account_domain", f"no lead at the account {deal.account_domain}: import its people first")
        if problem is not None or record is None or record.id is None:
            outcome.statuses.append("rejected")
            outcome.problems[index] = problem or ("email", "no lead")
            continue
        source = f"deal:{deal.deal_id}"
        values = {
            "lead_id": record.id,
            "opened_at": deal.opened_at,
            "closed_at": deal.closed_at,
            "outcome": deal.outcome,
            "amount": deal.amount,
            "reason": deal.reason,
            "properties": deal.properties,
        }
        before = existing.get(deal.deal_id)
        if before is not None and all(before[k] == v for k, v in values.items()):
            outcome.statuses.append("unchanged")
            continue
        previous = [fact_from_row(row) for row in conn.execute(select(f).where(f.c.source == source))] if before else []
        if before is not None and before["lead_id"] != record.id:
            stored[before["lead_id"]] = [x for x in stored[before["lead_id"]] if x not in previous]
            outcome.lead_ids.add(before["lead_id"])
        known = [x for x in stored[record.id] if x not in previous]
        problem = _contradicted(known, facts)
        if problem is not None:
            outcome.statuses.append("rejected")
            outcome.problems[index] = ("closed_at" if deal.closed_at else "opened_at", problem[1])
            continue
        if before is None:
            conn.execute(d.insert().values(deal_id=deal.deal_id, created_at=now, updated_at=now, **values))
            outcome.statuses.append("created")
        else:
            conn.execute(update(d).where(d.c.deal_id == deal.deal_id).values(updated_at=now, **values))
            conn.execute(delete(f).where(f.c.source == source))
            outcome.statuses.append("updated")
        existing[deal.deal_id] = values  # a second row of the same deal in the batch updates it
        conn.execute(f.insert(), [fact_row(record.id, x, source, now) for x in facts])
        stored[record.id] = known + facts
        outcome.lead_ids.add(record.id)
    _queue(uow, outcome.lead_ids, now)
    return outcome


# --- importing history ---------------------------------------------------------------------------


def as_history(workspace: Workspace, now: datetime) -> Workspace:
    """The workspace for which everything dated before `now` (or before its own, later cutoff) is
    history: stage changes and deals start no SLA clock and send nothing."""
    return reacting(workspace, history_before=_history_cutoff(workspace, now))


def rebuild_pending(workspace: Workspace, now: datetime, size: int = 500) -> int:
    """Rebuild every lead queued for it, `size` leads a transaction, each batch with the history
    cutoff it was queued with; returns how many leads were rebuilt. An interrupted import leaves
    its leads queued: the next import, or the worker, finishes them."""
    q = schema.rebuild_queue
    done = 0
    while True:
        with workspace.unit_of_work(read_only=True) as uow:
            rows = uow.connection.execute(
                select(q.c.lead_id, q.c.history_before).order_by(q.c.lead_id).limit(max(1, size))
            ).all()
        if not rows:
            return done
        cutoff = max(row.history_before for row in rows)
        ids = [row.lead_id for row in rows]
        history = reacting(workspace, history_before=cutoff)
        done += retrying(history, lambda uow, ids=ids: rebuild_leads(uow, ids, now))  # type: ignore[misc]


# --- rebuilding -----------------------------------------------------------------------------------


def rebuild_leads(uow: UnitOfWork, ids: Iterable[int], now: datetime) -> int:
    """Replay these leads' events and stage facts in time order under the active model; write their
    stage history, scores and stage again; returns how many leads were rebuilt (erased ones are
    not). Only moves that were not in the history before reach the after-change pipeline (whose
    history cutoff keeps the past from firing the present)."""
    conn = uow.connection
    batch = LeadBatch(uow, uow.active_model(), now)
    wanted = sorted(set(ids))
    leads = schema.leads
    records: dict[int, LeadRecord] = {}
    for part in repo.chunks(wanted):
        for row in conn.execute(repo.locked_leads().where(leads.c.id.in_(part), leads.c.erased_at.is_(None))):
            records[row.id] = repo.lead_from_row(row)
    q = schema.rebuild_queue
    for part in repo.chunks(wanted):
        conn.execute(delete(q).where(q.c.lead_id.in_(part)))
    if not records:
        return 0
    for record in records.values():
        batch.remember(record)
    batch.accounts.update(repo.accounts_by_id(conn, {r.account_id for r in records.values() if r.account_id}))
    facts = _stored_facts(uow, records)
    events, before = _events_and_history(uow, list(records))
    awards: list[tuple[int, list[list[Any]]]] = []
    moved_back: list[dict[str, Any]] = []  # leads whose first event or fact is older than their creation
    for lead_id, record in records.items():
        lead_events = events[lead_id]
        lead_facts = facts[lead_id]
        start = min([record.created_at, *(r.occurred_at for r in lead_events[:1]), *(x.at for x in lead_facts[:1])])
        if start < record.created_at:
            record.created_at = start
            moved_back.append({"b_id": lead_id, "created": start})
        record.state = state = LeadState(stage=Stage.LEAD, stage_entered=start.timestamp())
        rule = batch.refit(record)
        batch.record_history(record, None, Stage.LEAD, start, Actor.SYSTEM, before[lead_id].creator, "created")
        newest = max([start, *(r.occurred_at for r in lead_events[-1:]), *(x.at for x in lead_facts[-1:])])
        run = replay_lead(
            batch.evaluator,
            state,
            events=[ReplayEvent(r.occurred_at.timestamp(), r.type, r.properties) for r in lead_events],
            actions=[ReplayAction(x.at.timestamp(), x.from_stage, x.to_stage) for x in lead_facts],
            until=newest.timestamp(),
            disqualified_by=rule,
            settle=False,  # as the online path leaves a lead after its newest change; timers run later
        )
        for position, row in enumerate(lead_events):
            new = [[a.rule, a.points] for a in run.awards.get(position, [])]
            if new != row.awards:
                awards.append((row.id, new))
        by_fact = {(x.at.timestamp(), x.to_stage): x for x in lead_facts}
        for move in run.moves:
            fact = by_fact.get((move.at, move.to_stage)) if move.actor is Actor.USER else None
            batch.record_moves(record, [move], by=fact.by if fact else None)
            if fact is not None:  # a person's move: their reason and note, as they gave them
                batch.history[-1].values.update(reason=fact.reason, note=fact.note)
    h = schema.stage_history
    for part in repo.chunks(list(records)):
        conn.execute(delete(h).where(h.c.lead_id.in_(part)))
    repo.update_awards(conn, awards)
    if moved_back:
        conn.execute(
            update(leads).where(leads.c.id == bindparam("b_id")).values(created_at=bindparam("created")), moved_back
        )
    changed = batch.write()
    # Only what the history did not hold before is news for the reactions.
    changed.moves = [m for m in changed.moves if _move_key(m.values) not in before[m.values["lead_id"]].moves]
    changed.judge_at = now.timestamp()
    react(uow, changed, batch)
    return len(records)


def _move_key(values: dict[str, Any]) -> tuple[Any, ...]:
    return (values["from_stage"], values["to_stage"], round(values["at"].timestamp(), 3), values["actor"])


@dataclass
class _Before:
    """A lead's stage history before its rebuild: who created it, and its moves (as `_move_key`s)."""

    creator: str = "import"
    moves: set[tuple[Any, ...]] = field(default_factory=set)


def _events_and_history(uow: UnitOfWork, ids: list[int]) -> tuple[dict[int, list[Any]], dict[int, _Before]]:
    conn = uow.connection
    e, h = schema.events, schema.stage_history
    events: dict[int, list[Any]] = defaultdict(list)
    history: dict[int, _Before] = defaultdict(_Before)
    for part in repo.chunks(sorted(ids)):
        for row in conn.execute(
            select(e.c.id, e.c.lead_id, e.c.type, e.c.occurred_at, e.c.properties, e.c.awards)
            .where(e.c.lead_id.in_(part))
            .order_by(e.c.occurred_at, e.c.id)
        ):
            events[row.lead_id].append(row)
        for row in conn.execute(
            select(h.c.lead_id, h.c.from_stage, h.c.to_stage, h.c.at, h.c.actor, h.c.by)
            .where(h.c.lead_id.in_(part))
            .order_by(h.c.id)
        ):
            known = history[row.lead_id]
            if row.from_stage is None and not known.moves:
                known.creator = row.by
            known.moves.add((row.from_stage, row.to_stage, round(row.at.timestamp(), 3), row.actor))
    return events, history
