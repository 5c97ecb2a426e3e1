"""What happens after leads change: a record of the change, and the reactions run over it in order.

A use case changes leads in memory (`lifecycle.lead_batch.LeadBatch`) and writes them; the write
returns a `Changed` record (the leads touched, the stage moves, the events, the score moves). The
use case then hands the record to its workspace's `Pipeline`, which runs the reactions in the
order they were registered, all in the use case's transaction:

    probability → handoff → accounts → announcements → segments → workflows → crm

The reactions live with their capability (predictions, lifecycle, integrations, automation) and
are put together once, in the composition root (`qualify.bootstrap`). A caller that must not
start side effects (an import of past history: no SLA clock, no webhook, no email, no workflow)
runs the same use cases with a pipeline that has some reactions switched off:
`workspace.reacting(without=("handoff", "announcements", "workflows"))`.

Besides the after-change reactions, the pipeline holds two other kinds of participant:

- keepers of per-lead data outside the lead's own rows (automation, email, web visitors), which a
  merge carries to the kept lead and an erasure forgets;
- listeners to a field refreshed for every lead at once (a predictive model activated moves every
  probability), so that what tests the field (segments) is tested again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, String, cast, func, literal_column, null, or_, select, union_all

from qualify.adapters import schema
from qualify.adapters.repository import LeadRecord
from qualify.domain.evaluator import AppliedMove, OnlineEvaluator
from qualify.domain.scoring_model import ScoringModel
from qualify.service.unit_of_work import UnitOfWork, Workspace


@dataclass(slots=True)
class Move:
    """A stage move as written to the stage history (`values` is its row, with `lead_id`)."""

    record: LeadRecord
    values: dict[str, Any]

    @property
    def to_stage(self) -> str:
        return str(self.values["to_stage"])


@dataclass(slots=True)
class Changed:
    """What one or more writes of a use case changed: the record every reaction reads.

    `records` are the leads written, in memory, with their scoring state; `lead_ids` names leads
    changed outside a batch (a tag added by a workflow), for the reactions that test leads again.
    `account_entries` name the people of each account the change moved, with the stage it entered;
    `account_moves` are those moves (stage history rows), for the announcements.
    `judge` and `judge_at` say whether and when the stage policy is judged again once a new
    probability is known (not after a person's decision: a lead sent back to nurture must not
    bounce straight back on the number it was sent back with).
    """

    now: datetime
    model: ScoringModel | None = None
    records: list[LeadRecord] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    scores: list[tuple[int, float | None, float]] = field(default_factory=list)  # lead id, before, after
    lead_ids: list[int] = field(default_factory=list)
    account_entries: list[tuple[int, str]] = field(default_factory=list)  # (lead id, stage its account entered)
    account_moves: list[dict[str, Any]] = field(default_factory=list)  # accounts' stage history rows, to announce
    accounts_later: bool = False  # the touched accounts left to the worker (`accounts.keep_pending`)
    judge: bool = True
    judge_at: float | None = None

    def touched(self) -> list[int]:
        """Every lead id the change touched, once, in the order first seen."""
        ids = [r.id for r in self.records if r.id is not None]
        return list(dict.fromkeys([*ids, *self.lead_ids]))

    def tested(self) -> list[int]:
        """The leads segments and workflows test again: those touched, and the people of the
        accounts the change moved (their account's stage is something they are tested on)."""
        return list(dict.fromkeys([*self.touched(), *(lead_id for lead_id, _ in self.account_entries)]))

    @property
    def stage_entries(self) -> list[tuple[int, str]]:
        return [(m.record.id, m.to_stage) for m in self.moves if m.record.id is not None]

    @property
    def event_facts(self) -> list[tuple[int, str, dict[str, Any]]]:
        return [(row["lead_id"], row["type"], row["properties"]) for row in self.events]

    def merge(self, later: Changed) -> None:
        """Add what a later write of the same use case changed."""
        known = {id(r) for r in self.records}
        self.records += [r for r in later.records if id(r) not in known]
        self.moves += later.moves
        self.events += later.events
        self.scores += later.scores
        self.lead_ids += [i for i in later.lead_ids if i not in self.lead_ids]
        self.account_entries += later.account_entries
        self.account_moves += later.account_moves


class Batch(Protocol):
    """What a reaction may do with the batch that wrote the change: move leads and write again."""

    model: ScoringModel
    evaluator: OnlineEvaluator
    now: datetime

    def record_moves(self, record: LeadRecord, moves: list[AppliedMove], by: str | None = None) -> None: ...

    def write(self) -> Changed: ...


@dataclass(frozen=True, slots=True)
class Configured:
    """What the workspace has set up that reactions act on, read in one statement a run: a
    reaction with nothing to act on returns without a statement of its own (a single event then
    costs 5 statements fewer)."""

    predictive: str | None  # the active predictive model's version
    automation: tuple[tuple[str, str, str], ...]  # ("s" or "w", name, version): segments, active workflows
    webhooks: bool  # an active webhook subscription
    crm_pushes: bool  # a CRM connection that writes leads or accounts

    @classmethod
    def read(cls, conn: Connection) -> Configured:
        p, s, w = schema.predictive_models, schema.segments, schema.workflows
        h, c = schema.webhook_subscriptions, schema.crm_connections
        nothing = cast(null(), String)
        parts = union_all(
            select(literal_column("'p'").label("part"), p.c.version.label("name"), nothing.label("version")).where(
                p.c.active
            ),
            select(literal_column("'s'"), s.c.name, s.c.version),
            select(literal_column("'w'"), w.c.name, w.c.version).where(w.c.active),
            select(literal_column("'h'"), cast(func.count(), String), nothing).where(h.c.active),
            select(literal_column("'c'"), cast(func.count(), String), nothing).where(
                or_(c.c.push_to != "none", c.c.push_accounts.is_not(None))
            ),
        ).subquery()
        rows = list(conn.execute(select(parts).order_by(parts.c.part, parts.c.name)))
        counts = {part: int(name) for part, name, _ in rows if part in ("h", "c")}
        return cls(
            predictive=next((name for part, name, _ in rows if part == "p"), None),
            automation=tuple((part, name, version) for part, name, version in rows if part in ("s", "w")),
            webhooks=counts.get("h", 0) > 0,
            crm_pushes=counts.get("c", 0) > 0,
        )


@dataclass(slots=True)
class Run:
    """One run of the pipeline: the unit of work, the change so far, and the batch that wrote it.

    `notes` is where a reaction leaves what a later one reuses (the segments leave the lead facts
    and the memberships they changed, which the workflows' triggers read)."""

    uow: UnitOfWork
    changed: Changed
    batch: Batch | None
    history_before: datetime | None = None  # what is dated before this is history (see `is_history`)
    notes: dict[str, Any] = field(default_factory=dict)
    _newest: dict[int, datetime] = field(default_factory=dict)  # each lead's newest dated change
    _newest_of: tuple[int, int] = (-1, -1)  # the (moves, events) counts `_newest` was read from
    _configured: Configured | None = None

    @property
    def configured(self) -> Configured:
        """What the workspace has set up for the reactions, read once a run (reactions change no
        definitions)."""
        if self._configured is None:
            self._configured = Configured.read(self.uow.connection)
        return self._configured

    def is_history(self, at: datetime) -> bool:
        """Whether something dated `at` is history: it changes state, not the present (no SLA
        clock, no announcement, no enrolment)."""
        return self.history_before is not None and at < self.history_before

    def lead_is_history(self, lead_id: int) -> bool:
        """Whether everything the change did to the lead (its stage moves, its events) is dated
        before the cutoff. A lead changed with nothing dated (a profile, a tag) is live."""
        if self.history_before is None:
            return False
        newest = self._newest_dated()
        return lead_id in newest and newest[lead_id] < self.history_before

    def _newest_dated(self) -> dict[int, datetime]:
        """Each lead's newest move or event in the change, read once (again after a `write_again`)."""
        size = (len(self.changed.moves), len(self.changed.events))
        if size != self._newest_of:
            newest: dict[int, datetime] = {}
            dated = [(m.record.id, m.values["at"]) for m in self.changed.moves]
            dated += [(row["lead_id"], row["occurred_at"]) for row in self.changed.events]
            for lead_id, at in dated:
                if lead_id is not None and (lead_id not in newest or at > newest[lead_id]):
                    newest[lead_id] = at
            self._newest, self._newest_of = newest, size
        return self._newest

    def write_again(self) -> None:
        """Write what a reaction changed in the batch; later reactions see it in `changed`."""
        if self.batch is not None:
            self.changed.merge(self.batch.write())


@dataclass(frozen=True, slots=True)
class Reaction:
    name: str
    react: Callable[[Run], None]


@dataclass(frozen=True, slots=True)
class Keeper:
    """Per-lead data kept outside the lead's rows: carried along by a merge, forgotten by an erasure."""

    name: str
    merge: Callable[[UnitOfWork, int, int, datetime], None]  # uow, gone, kept, now
    forget: Callable[[UnitOfWork, int, datetime], None]  # uow, lead, now


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The after-change reactions in their order, the keepers, and the field-refresh listeners."""

    reactions: tuple[Reaction, ...] = ()
    keepers: tuple[Keeper, ...] = ()
    refreshed: tuple[tuple[str, Callable[[Workspace, str], None]], ...] = ()  # (reaction, listener)
    off: frozenset[str] = frozenset()
    history_before: datetime | None = None  # changes dated before it are history
    history_age: timedelta | None = None  # or older than this at the time of the change

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.reactions]

    @property
    def enabled(self) -> frozenset[str]:
        return frozenset(self.names) - self.off

    def without(self, names: Iterable[str]) -> Pipeline:
        """The same pipeline with the named reactions switched off (unknown names are refused)."""
        names = set(names)
        if unknown := names - set(self.names):
            raise ValueError(f"no reaction {', '.join(sorted(unknown))}; the reactions are {', '.join(self.names)}")
        return replace(self, off=self.off | names)

    def with_history(self, *, before: datetime | None = None, age: timedelta | None = None) -> Pipeline:
        """The same pipeline for which what a change dates before `before`, or more than `age`
        before the change is made, is history: it moves leads through their stages, scores and
        segments as it would live, but starts no SLA clock, announces nothing and enrols nobody."""
        return replace(self, history_before=before or self.history_before, history_age=age or self.history_age)

    def cutoff(self, now: datetime) -> datetime | None:
        """The instant before which a change made at `now` is history; None when nothing is."""
        found = [c for c in (self.history_before, now - self.history_age if self.history_age else None) if c]
        return max(found) if found else None

    def run(self, uow: UnitOfWork, changed: Changed, batch: Batch | None = None) -> Changed:
        """Run the enabled reactions, in order, over `changed`; return it with what they added."""
        if not changed.touched() and not changed.account_moves:
            return changed
        run = Run(uow, changed, batch, self.cutoff(changed.now))
        for reaction in self.reactions:
            if reaction.name not in self.off:
                reaction.react(run)
        return changed

    def lead_merged(self, uow: UnitOfWork, gone: int, kept: int, now: datetime) -> None:
        for keeper in self.keepers:
            keeper.merge(uow, gone, kept, now)

    def lead_erased(self, uow: UnitOfWork, lead_id: int, now: datetime) -> None:
        for keeper in self.keepers:
            keeper.forget(uow, lead_id, now)

    def field_refreshed(self, workspace: Workspace, name: str) -> None:
        """Every lead's `name` just changed at once (outside a batch): tell who tests it."""
        for reaction, listener in self.refreshed:
            if reaction not in self.off:
                listener(workspace, name)


def of(workspace: Workspace) -> Pipeline:
    """The workspace's pipeline, or a clear error for one opened without the composition root."""
    if not isinstance(workspace.pipeline, Pipeline):
        raise RuntimeError(
            "this workspace was opened without its after-change pipeline: open it with qualify.bootstrap.open_workspace"
        )
    return workspace.pipeline


def react(uow: UnitOfWork, changed: Changed, batch: Batch | None = None) -> Changed:
    """Run the unit of work's pipeline over what a use case just wrote (see `Pipeline.run`)."""
    return of(uow.workspace).run(uow, changed, batch)


def reacting(workspace: Workspace, *, without: Iterable[str] = (), history_before: datetime | None = None) -> Workspace:
    """The same workspace (engine, caches) whose use cases run with the reactions in `without`
    switched off, or for which what changes date before `history_before` is history."""
    return replace(workspace, pipeline=of(workspace).without(without).with_history(before=history_before))
