"""Accounts as the dashboard, `qualify account` and the API show them: a list with each
account's people and pipeline, and one account's page (its leads, stages, engagement week by week
across its people, open deals) with its scores where the active model has an `accounts` section:
fit, the people's engagement rolled up, and the buying group's coverage, each explained.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.account_stages import AccountStage
from qualify.domain.accounts import AccountScore, Person, score_account
from qualify.domain.errors import InvalidInput, NotFound
from qualify.domain.fit import account_fields, profile_values
from qualify.domain.lifecycle import Stage
from qualify.service.reading.lead_list import search_conditions
from qualify.service.unit_of_work import UnitOfWork, utcnow

_accounts, _leads = schema.accounts, schema.leads
_live = and_(_leads.c.account_id == _accounts.c.id, _leads.c.erased_at.is_(None))
ACCOUNT_SORTS = ("engagement", "leads", "activity", "name", "fit", "coverage")
ACCOUNT_STAGES = tuple(s.value for s in AccountStage)
WEEKS = 12


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: int
    domain: str
    name: str | None
    industry: str | None
    employees: int | None
    country: str | None
    leads: int
    engaged: float  # the sum of its leads' engagement, as last scored
    mqls: int  # leads in MQL now
    pipeline: int  # leads in SQL or opportunity now
    customers: int
    last_activity: datetime | None
    stage: str = AccountStage.TARGET.value
    owner: str | None = None  # the account's own owner (routed when it became MQA, or who accepted it)
    scores: AccountScore | None = None  # where the active model scores accounts

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "scores"}
        out["scores"] = None if self.scores is None else self.scores.as_dict()
        return out


def _conditions(search: str | None, owner: str | None, stage: str | None, dialect: str) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if search and search.strip():
        out += search_conditions(search, (_accounts.c.name, _accounts.c.domain), dialect)
    if owner is not None:  # a sales rep: the accounts they own, or where they own a lead
        out.append(or_(_accounts.c.owner == owner, exists().where(_live, _leads.c.owner == owner)))
    if stage is not None:
        if stage not in ACCOUNT_STAGES:
            raise InvalidInput(
                f"unknown account stage {stage!r}; expected one of: {', '.join(ACCOUNT_STAGES)}", field="stage"
            )
        out.append(_accounts.c.stage == stage)
    return out


def list_accounts(
    uow: UnitOfWork,
    *,
    search: str | None = None,
    owner: str | None = None,
    stage: str | None = None,
    sort: str = "engagement",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[AccountRow], int]:
    """A page of accounts with their people and pipeline counted, and how many match in all."""
    if sort not in ACCOUNT_SORTS:
        raise InvalidInput(f"unknown sort {sort!r}; expected one of: {', '.join(ACCOUNT_SORTS)}", field="sort")
    counts = (
        select(
            _leads.c.account_id,
            func.count().label("leads"),
            func.sum(_leads.c.engagement_score).label("engaged"),
            func.sum(case((_leads.c.stage == Stage.MQL.value, 1), else_=0)).label("mqls"),
            func.sum(case((_leads.c.stage.in_([Stage.SQL.value, Stage.OPPORTUNITY.value]), 1), else_=0)).label(
                "pipeline"
            ),
            func.sum(case((_leads.c.stage.in_([Stage.CUSTOMER.value, Stage.EVANGELIST.value]), 1), else_=0)).label(
                "customers"
            ),
            func.max(_leads.c.last_event_at).label("last_activity"),
        )
        .where(_leads.c.erased_at.is_(None), _leads.c.account_id.is_not(None))
        .group_by(_leads.c.account_id)
        .subquery()
    )
    where = _conditions(search, owner, stage, uow.connection.dialect.name)
    order = {
        "engagement": (func.coalesce(counts.c.engaged, 0.0).desc(),),
        "leads": (func.coalesce(counts.c.leads, 0).desc(),),
        "activity": (counts.c.last_activity.is_(None), counts.c.last_activity.desc()),
        "name": (func.lower(func.coalesce(_accounts.c.name, _accounts.c.domain)).asc(),),
        # as last scored by the ingestion pipeline (`lifecycle.accounts`); never scored last
        "fit": (_accounts.c.fit_score.is_(None), _accounts.c.fit_score.desc()),
        "coverage": (
            _accounts.c.covered_roles.is_(None),
            _accounts.c.covered_roles.desc(),
            _accounts.c.engagement_score.desc(),
        ),
    }[sort]
    rows = uow.connection.execute(
        select(
            _accounts.c.id,
            _accounts.c.domain,
            _accounts.c.name,
            _accounts.c.industry,
            _accounts.c.employees,
            _accounts.c.country,
            func.coalesce(counts.c.leads, 0),
            func.coalesce(counts.c.engaged, 0.0),
            func.coalesce(counts.c.mqls, 0),
            func.coalesce(counts.c.pipeline, 0),
            func.coalesce(counts.c.customers, 0),
            counts.c.last_activity,
            _accounts.c.stage,
            _accounts.c.owner,
        )
        .select_from(_accounts.outerjoin(counts, counts.c.account_id == _accounts.c.id))
        .where(*where)
        .order_by(*order, _accounts.c.id)
        .limit(limit)
        .offset(offset)
    ).all()
    total = uow.connection.execute(select(func.count()).select_from(_accounts).where(*where)).scalar() or 0
    found = [AccountRow(*tuple(row)) for row in rows]
    scores = scores_of(uow, [a.id for a in found])
    return [replace(a, scores=scores.get(a.id)) for a in found], int(total)


@dataclass
class AccountView:
    account: dict[str, Any]
    leads: list[dict[str, Any]]
    stages: dict[str, int]
    weekly: list[tuple[datetime, float]]  # engagement points earned by its people, week by week
    deals: list[dict[str, Any]]  # open deals of its leads
    owner: str | None  # the account's rep: its own owner, else the owner of its most recently assigned lead
    owners: list[str] = field(default_factory=list)
    scores: AccountScore | None = None  # None: the active model scores no accounts
    as_of: datetime | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # its stage changes, newest first

    def as_dict(self) -> dict[str, Any]:
        a = self.account
        return {
            "account": {k: v for k, v in a.items() if k not in _ACCOUNT_STATE},
            "owner": self.owner,
            "stage": {
                "stage": a["stage"],
                "since": a["stage_entered_at"],
                "sla_due_at": a["sla_due_at"],
                "requalify_at": a["requalify_at"],
                "pending_since": a["pending_since"],
                "last_scored": None
                if a["scored_at"] is None
                else {
                    "at": a["scored_at"],
                    "fit": a["fit_score"],
                    "grade": a["fit_grade"],
                    "engagement": a["engagement_score"],
                    "covered_roles": a["covered_roles"],
                },
                "history": self.history,
            },
            "stages": self.stages,
            "scores": None if self.scores is None else {**self.scores.as_dict(), "as_of": self.as_of},
            "leads": self.leads,
            "open_deals": self.deals,
            "weekly_engagement": [{"week": week, "points": points} for week, points in self.weekly],
        }


# The account's state as the pipeline keeps it: shown under `stage`, not with its fields.
_ACCOUNT_STATE = frozenset(
    {
        "stage", "stage_entered_at", "requalify_at", "owner", "owner_assigned_at", "sla_due_at", "fit_score",
        "fit_grade", "engagement_score", "covered_roles", "rollup", "scored_at", "model_version", "pending_since",
    }
)  # fmt: skip


def account_history(uow: UnitOfWork, account_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """The account's stage changes, newest first."""
    h = schema.account_stage_history
    return [
        dict(r._mapping)
        for r in uow.connection.execute(
            select(h.c.from_stage, h.c.to_stage, h.c.at, h.c.actor, h.c.by, h.c.reason, h.c.note,
                   h.c.fit_score, h.c.engagement_score, h.c.covered_roles, h.c.roles, h.c.model_version)
            .where(h.c.account_id == account_id)
            .order_by(h.c.at.desc(), h.c.id.desc())
            .limit(limit)
        )
    ]  # fmt: skip


def account_id_of(uow: UnitOfWork, key: str) -> int:
    """The account a key names: its domain, or `#<id>`."""
    key = key.strip()
    number = repo.key_id(key)
    match = _accounts.c.id == number if number is not None else _accounts.c.domain == key.lower()
    found = uow.connection.execute(select(_accounts.c.id).where(match)).scalar()
    if found is None:
        raise NotFound(f"no account {key!r} (give its domain or #id)")
    return int(found)


def account_scores(uow: UnitOfWork, account_id: int, *, now: datetime | None = None) -> AccountScore | None:
    """The account's scores under the active model as of `now`, from its people as they are;
    None when the model has no `accounts` section (or there is no such account)."""
    return scores_of(uow, [account_id], now=now).get(account_id)


def scores_of(uow: UnitOfWork, account_ids: list[int], *, now: datetime | None = None) -> dict[int, AccountScore]:
    """The scores of several accounts under the active model as of `now`, their people read in one
    query per chunk of accounts; empty when the model has no `accounts` section."""
    spec = uow.active_model().accounts
    if spec is None or not account_ids:
        return {}
    now = now or utcnow()
    conn = uow.connection
    accounts = repo.accounts_by_id(conn, account_ids)
    people: dict[int, list[Person]] = {account_id: [] for account_id in accounts}
    at = now.timestamp()
    for part in repo.chunks(sorted(accounts)):
        for row in conn.execute(
            select(_leads).where(_leads.c.account_id.in_(part), _leads.c.erased_at.is_(None)).order_by(_leads.c.id)
        ):
            record = repo.lead_from_row(row)
            assert record.id is not None and record.account_id is not None
            lead = record.lead
            people[record.account_id].append(
                Person(
                    record.id,
                    lead.email or (f"ext:{lead.external_id}" if lead.external_id else f"#{record.id}"),
                    profile_values(lead, accounts[record.account_id]),
                    record.state.engagement,
                    record.state.last_event,
                )
            )
    return {
        account_id: score_account(spec, account_fields(account), people[account_id], at)
        for account_id, account in accounts.items()
    }


def account_view(uow: UnitOfWork, account_id: int, *, now: datetime | None = None) -> AccountView:
    """One account: its profile, its leads (best first), stage counts, weekly engagement of its
    people over the last 12 weeks, its open deals and its owner."""
    now = now or utcnow()
    conn = uow.connection
    row = conn.execute(select(_accounts).where(_accounts.c.id == account_id)).first()
    if row is None:
        raise NotFound(f"no account #{account_id}")
    account = dict(row._mapping)
    people = [
        dict(r._mapping)
        for r in conn.execute(
            select(
                _leads.c.id,
                _leads.c.email,
                _leads.c.first_name,
                _leads.c.last_name,
                _leads.c.title,
                _leads.c.stage,
                _leads.c.owner,
                _leads.c.owner_assigned_at,
                _leads.c.fit_score,
                _leads.c.fit_grade,
                _leads.c.engagement_score,
                _leads.c.probability,
                _leads.c.last_event_at,
            )
            .where(_leads.c.account_id == account_id, _leads.c.erased_at.is_(None))
            .order_by((_leads.c.fit_score + _leads.c.engagement_score).desc(), _leads.c.id)
            .limit(500)
        )
    ]
    stages = Counter(p["stage"] for p in people)
    assigned = [p for p in people if p["owner"] and p["owner_assigned_at"]]
    owner = account["owner"] or (max(assigned, key=lambda p: p["owner_assigned_at"])["owner"] if assigned else None)
    return AccountView(
        account,
        people,
        {s.value: stages.get(s.value, 0) for s in Stage},
        _weekly(uow, account_id, now),
        _open_deals(uow, account_id),
        owner,
        sorted({p["owner"] for p in people if p["owner"]}),
        account_scores(uow, account_id, now=now),
        now,
        account_history(uow, account_id),
    )


def _weekly(uow: UnitOfWork, account_id: int, now: datetime) -> list[tuple[datetime, float]]:
    """The engagement points the account's people earned each week (awards as given, not decayed)."""
    start = (now - timedelta(days=now.weekday(), weeks=WEEKS - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    events = schema.events
    totals = [0.0] * WEEKS
    for occurred, awards in uow.connection.execute(
        select(events.c.occurred_at, events.c.awards)
        .join(_leads, _leads.c.id == events.c.lead_id)
        .where(_leads.c.account_id == account_id, _leads.c.erased_at.is_(None), events.c.occurred_at >= start)
    ):
        week = (occurred - start).days // 7
        if 0 <= week < WEEKS and awards:
            totals[week] += sum(points for _, points in awards)
    return [(start + timedelta(weeks=w), round(t, 1)) for w, t in enumerate(totals)]


def _open_deals(uow: UnitOfWork, account_id: int) -> list[dict[str, Any]]:
    deals = schema.deals
    return [
        dict(r._mapping)
        for r in uow.connection.execute(
            select(deals.c.deal_id, deals.c.opened_at, deals.c.amount, _leads.c.id.label("lead_id"), _leads.c.email)
            .join(_leads, _leads.c.id == deals.c.lead_id)
            .where(_leads.c.account_id == account_id, deals.c.outcome == "open")
            .order_by(deals.c.opened_at)
        )
    ]
