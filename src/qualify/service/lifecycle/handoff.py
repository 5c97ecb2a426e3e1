"""Handoff to sales: when a lead becomes MQL it gets an owner and an SLA clock.

The routing rules and the SLA live in the scoring model's `handoff` section (see
docs/scoring-model.md); the decisions are made by `qualify.domain.routing`, and this module
reads what they need from the store and writes what they decide, in the unit of work that
made the lead an MQL:

- `leads.owner`, `owner_rule` (the rule that chose the owner, or why there is none),
  `owner_assigned_at`, `sla_due_at` (cleared `sla_breached_at`);
- one `assignments` row per owner given (capacity per rep per week counts them);
- `routing_state`: each team's next position in its rotation.

Round robin must not hand the same position out twice when several processes route at once:
the rotation rows are locked (`SELECT … FOR UPDATE`) until the unit of work commits, all of the
model's teams in name order, so two units of work routing to two teams cannot deadlock on them.
On SQLite, writers are serialised anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.adapters.repository import LeadRecord
from qualify.domain.fit import profile_values
from qualify.domain.lifecycle import Stage
from qualify.domain.routing import (
    DEFAULT_TEAM,
    PREVIOUS_OWNER,
    Route,
    TeamPick,
    choose_route,
    iso_week,
    pick_in_team,
    sla_due,
)
from qualify.domain.scoring_model import HandoffSpec, ScoringModel, Team
from qualify.service.pipeline import Run


@dataclass(frozen=True, slots=True)
class Assignment:
    """Who owns the lead after routing (None: nobody), from which team, and the rule that says why."""

    owner: str | None
    team: str | None
    rule: str


def react(run: Run) -> None:
    """Reaction `handoff`: every lead the change made MQL is routed and its SLA clock started;
    not one that became MQL in the past (history): its sales team dealt with it then."""
    model = run.changed.model
    if model is None or model.handoff is None:
        return
    for move in run.changed.moves:
        if move.to_stage == Stage.MQL.value and not run.is_history(move.values["at"]):
            on_qualified(run.uow.connection, model, move.record, move.values["at"])


def on_qualified(conn: Connection, model: ScoringModel, record: LeadRecord, at: datetime) -> None:
    """Route a lead that became MQL at `at` and start its SLA clock; called after its row is written.

    Every qualification routes afresh (a lead that comes back from nurture included); the
    lead's previous owner keeps it when routing lands on their team and they have room. The
    SLA clock starts only for a lead still in MQL at the end of the unit of work: one the
    policy sent straight on to SQL has nothing left to accept. Without a `handoff` section in
    the model, nothing happens.
    """
    spec = model.handoff
    if spec is None or record.id is None:
        return
    row = conn.execute(select(schema.leads).where(schema.leads.c.id == record.id)).one()
    stored = repo.lead_from_row(row)  # the whole profile: an event batch loads only scoring state
    account = repo.accounts_by_id(conn, [row.account_id]).get(row.account_id) if row.account_id else None
    owner_of_account = account_owner(conn, spec, row.account_id, record.id) if spec.account_owner_first else None
    route = choose_route(spec, profile_values(stored.lead, account), account_owner=owner_of_account)
    assignment = assign(conn, spec, route, row.owner, at)
    due = sla_due(at, spec.sla) if spec.sla is not None and record.state.stage is Stage.MQL else None
    _write(conn, record.id, assignment, at, due)


def account_owner(conn: Connection, spec: HandoffSpec, account_id: int | None, lead_id: int | None) -> str | None:
    """The account's owner, where it has one who can still own leads (an account qualified as a
    whole is owned by one rep); else the owner of its most recently assigned other lead who can.
    One statement: the account's row beside its leads' owners."""
    if account_id is None:
        return None
    accounts, leads = schema.accounts, schema.leads
    others = and_(leads.c.account_id == accounts.c.id, leads.c.owner.is_not(None))
    if lead_id is not None:
        others = and_(others, leads.c.id != lead_id)
    rows = conn.execute(
        select(accounts.c.owner, leads.c.owner)
        .select_from(accounts.outerjoin(leads, others))
        .where(accounts.c.id == account_id)
        .order_by(leads.c.owner_assigned_at.desc().nulls_last(), leads.c.id.desc())
    ).all()
    own = rows[0][0] if rows else None
    if own is not None and spec.knows_owner(own):
        return str(own)
    return next((owner for _, owner in rows if owner is not None and spec.knows_owner(owner)), None)


def assign(conn: Connection, spec: HandoffSpec, route: Route | None, previous: str | None, at: datetime) -> Assignment:
    if route is None:
        return Assignment(None, None, "no owner: no routing rule matched and no default team")
    if route.owner is not None:
        return Assignment(route.owner, route.team, route.rule)  # account and named owners: no capacity bound
    assert route.team is not None
    team = spec.team(route.team)
    positions = _lock_rotations(conn, spec)
    pick = _pick(conn, team, positions, previous, at)
    if pick.owner is not None:
        return Assignment(pick.owner, team.name, PREVIOUS_OWNER if pick.kept else route.rule)
    if spec.default_team is None or spec.default_team == team.name:
        return Assignment(None, team.name, f"no owner: every rep of {team.name} is at capacity this week")
    overflow = spec.team(spec.default_team)
    pick = _pick(conn, overflow, positions, previous, at)
    if pick.owner is None:
        return Assignment(None, overflow.name, f"no owner: {team.name} and {overflow.name} are at capacity this week")
    return Assignment(pick.owner, overflow.name, f"{DEFAULT_TEAM} ({team.name} at capacity)")


def _pick(conn: Connection, team: Team, positions: dict[str, int], previous: str | None, at: datetime) -> TeamPick:
    pick = pick_in_team(team, positions[team.name], _load_this_week(conn, team, at), previous)
    if pick.owner is not None and pick.position != positions[team.name]:
        positions[team.name] = pick.position
        state = schema.routing_state
        conn.execute(update(state).where(state.c.team == team.name).values(position=pick.position))
    return pick


def _lock_rotations(conn: Connection, spec: HandoffSpec) -> dict[str, int]:
    """Every team's rotation position, locked until commit (rows created at 0 where missing)."""
    names = sorted(team.name for team in spec.teams)
    state = schema.routing_state
    query = select(state.c.team, state.c.position).where(state.c.team.in_(names)).order_by(state.c.team)
    positions = dict(conn.execute(query.with_for_update()).all())
    missing = [name for name in names if name not in positions]
    if missing:
        insert = postgresql.insert(state) if conn.dialect.name == "postgresql" else sqlite.insert(state)
        # Two units of work may both see a team missing: the second insert does nothing, then waits on the lock.
        conn.execute(
            insert.on_conflict_do_nothing(index_elements=["team"]), [{"team": n, "position": 0} for n in missing]
        )
        positions = dict(conn.execute(query.with_for_update()).all())
    return positions


def _load_this_week(conn: Connection, team: Team, at: datetime) -> dict[str, int]:
    """Leads assigned to each of the team's capped reps in the ISO week (UTC) of `at`."""
    capped = [rep.name for rep in team.reps if rep.capacity_per_week is not None]
    if not capped:
        return {}
    start, end = iso_week(at)
    a = schema.assignments
    query = (
        select(a.c.owner, func.count()).where(a.c.owner.in_(capped), a.c.at >= start, a.c.at < end).group_by(a.c.owner)
    )
    return dict(conn.execute(query).all())


def _write(conn: Connection, lead_id: int, assignment: Assignment, at: datetime, due: datetime | None) -> None:
    leads = schema.leads
    conn.execute(
        update(leads)
        .where(leads.c.id == lead_id)
        .values(
            owner=assignment.owner,
            owner_rule=assignment.rule[:200],
            owner_assigned_at=at if assignment.owner is not None else None,
            sla_due_at=due,
            sla_breached_at=None,
        )
    )
    if assignment.owner is not None:
        conn.execute(
            schema.assignments.insert().values(
                lead_id=lead_id, owner=assignment.owner, team=assignment.team, rule=assignment.rule[:200], at=at
            )
        )
