"""`qualify demo`: a synthetic B2B world, generated and replayed through Qualify's own service layer.

The world is simulated lead by lead (see `qualify.demo.behaviour`; the buying groups that put a
company's people in market together are planned first, `qualify.demo.groups`), then replayed day by day
as a live installation would have seen it: leads created as they arrive, events ingested in
time order, sales decisions applied with `apply_stage_action` at the moment they were taken.
Finally every lead is rescored as of `now`. Same seed, size and `now`: the same database.

>>> from qualify.demo.world import build_demo  # doctest: +SKIP
>>> build_demo(workspace, seed=7, leads=2000, days=180).as_dict()  # doctest: +SKIP
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.demo.automation import add_demo_automation
from qualify.demo.behaviour import Decision, LeadTimeline, simulate_lead
from qualify.demo.groups import plan_buying_groups
from qualify.demo.marketing import marketing_calendar
from qualify.demo.population import DemoLead, generate_population
from qualify.domain.errors import IllegalTransition, QualifyError
from qualify.domain.evaluator import OnlineEvaluator
from qualify.domain.records import Account, Event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.lifecycle.rescoring import rescore_all
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.unit_of_work import UnitOfWork, Workspace

Progress = Callable[[int, int], None]
WINDOW = timedelta(days=1)  # one transaction per simulated day
PROGRESS_STEPS = 1000  # progress is reported in thousandths of the whole build
SIMULATION_SHARE = 0.25  # of the build's time, measured: simulating people; the rest is storing and scoring


class WorkspaceNotEmpty(QualifyError):
    """The demo world is built into an empty workspace only: it must not mix with real leads."""


@dataclass
class DemoSummary:
    """What `build_demo` made, and how long it took."""

    accounts: int
    leads: int
    events: int
    stage_actions: int
    seconds: float
    start: datetime
    end: datetime
    skipped_actions: int = 0  # decisions the store refused (the lead had moved on); expected to stay 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["start"], out["end"] = self.start.isoformat(), self.end.isoformat()
        out["seconds"] = round(self.seconds, 2)
        return out


def build_demo(
    workspace: Workspace,
    *,
    seed: int = 7,
    leads: int = 2000,
    days: int = 180,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> DemoSummary:
    """Generate a demo world of `leads` leads over the `days` before `now`, store it, score it.

    `workspace` must be migrated with a scoring model active (the world is tuned for the
    default model). `now` defaults to the start of the current UTC day. `progress` is called
    with (work done, total work) as the build goes.
    """
    began = time.perf_counter()
    _require_empty(workspace)
    now = now or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = now - timedelta(days=days)
    tracker = _Tracker(progress, 0.0, SIMULATION_SHARE, leads)
    timelines = _simulate(workspace, seed, leads, start, now, tracker)
    # The simulation has said how much there is to store: the rest of the bar is that.
    tracker.phase(SIMULATION_SHARE, 1.0 - SIMULATION_SHARE, 2 * leads + sum(len(t.items) for t in timelines))
    replayed = _replay(workspace, timelines, now, tracker)
    rescore_all(workspace, now=now)
    add_demo_automation(workspace, now)
    tracker.advance(len(timelines))
    return DemoSummary(
        accounts=replayed.accounts,
        leads=len(timelines),
        events=replayed.events,
        stage_actions=replayed.actions,
        seconds=time.perf_counter() - began,
        start=start,
        end=now,
        skipped_actions=replayed.skipped,
    )


def _require_empty(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        count = uow.connection.execute(select(func.count()).select_from(schema.leads)).scalar_one()
    if count:
        raise WorkspaceNotEmpty(
            f"the workspace at {workspace.settings.database_url.split('@')[-1]} already has {count:,} leads; "
            "build the demo into an empty database (e.g. --db sqlite:///qualify-demo.db)"
        )


@dataclass
class _Tracker:
    """Progress over phases of known shares of the whole, reported in PROGRESS_STEPS: the total
    never changes and the bar never moves back when a phase learns how much work it has."""

    progress: Progress | None
    start: float  # where the phase begins, as a share of the whole
    share: float  # how much of the whole it is
    total: int  # its units of work
    done: int = 0

    def phase(self, start: float, share: float, total: int) -> None:
        self.start, self.share, self.total, self.done = start, share, max(total, 1), 0

    def advance(self, amount: int) -> None:
        self.done += amount
        if self.progress is not None:
            whole = self.start + self.share * min(self.done, self.total) / max(self.total, 1)
            self.progress(round(whole * PROGRESS_STEPS), PROGRESS_STEPS)


def _simulate(
    workspace: Workspace, seed: int, size: int, start: datetime, now: datetime, tracker: _Tracker
) -> list[LeadTimeline]:
    with workspace.unit_of_work() as uow:
        evaluator = OnlineEvaluator(uow.active_model())
    calendar = marketing_calendar(random.Random(seed), start, now)
    people = generate_population(random.Random(seed + 1), size, start, now, calendar)
    groups = plan_buying_groups(people, evaluator.model, random.Random(seed + 2), int(now.timestamp()))
    timelines = []
    for person in people:
        timeline = simulate_lead(
            person, evaluator=evaluator, calendar=calendar, seed=seed, now=now, groups=groups.get(person.index, ())
        )
        timelines.append(timeline)
        if person.index % 100 == 99:
            tracker.advance(100)
    tracker.advance(size % 100)
    return timelines


# --- replay ------------------------------------------------------------------------------------------------


@dataclass
class _Replayed:
    accounts: int = 0
    events: int = 0
    actions: int = 0
    skipped: int = 0
    known_domains: set[str] = field(default_factory=set)


@dataclass
class _Window:
    """One simulated day: new leads, then rounds of (events, decisions) that keep each lead in order."""

    created: list[DemoLead] = field(default_factory=list)
    rounds: list[tuple[list[Event], list[tuple[str, Decision]]]] = field(default_factory=list)
    round_of: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, item: Event | Decision) -> None:
        # A lead's items after one of its decisions go to the next round, so that in every
        # round its events are ingested before its decision is applied, as they happened.
        number = self.round_of.get(key, 0)
        while len(self.rounds) <= number:
            self.rounds.append(([], []))
        if isinstance(item, Decision):
            self.rounds[number][1].append((key, item))
            self.round_of[key] = number + 1
        else:
            self.rounds[number][0].append(item)

    def size(self) -> int:
        return len(self.created) + sum(len(e) + len(d) for e, d in self.rounds)


def _replay(workspace: Workspace, timelines: list[LeadTimeline], now: datetime, tracker: _Tracker) -> _Replayed:
    replayed = _Replayed()
    for window_end, window in _windows(timelines, now):
        with workspace.unit_of_work() as uow:
            _create_leads(uow, window.created, window_end, replayed)
            for events, decisions in window.rounds:
                if events:
                    ingest_events(uow, events, now=window_end)
                    replayed.events += len(events)
                _apply_decisions(uow, decisions, replayed)
        tracker.advance(window.size())
    return replayed


def _windows(timelines: list[LeadTimeline], now: datetime) -> Iterator[tuple[datetime, _Window]]:
    """The world's items in time order, cut into days."""
    window_start = min((t.person.lead.created_at or now for t in timelines), default=now)
    window = _Window()
    for moment, _, kind, payload in heapq.merge(*(_stream(t) for t in timelines)):
        while moment >= window_start + WINDOW:
            yield min(window_start + WINDOW, now), window
            window, window_start = _Window(), window_start + WINDOW
        if kind == 0:
            window.created.append(payload)
        else:
            key, item = payload
            window.add(key, item)
    yield now, window


def _stream(timeline: LeadTimeline) -> Iterable[tuple[datetime, int, int, Any]]:
    """A lead's creation, then its items; ties in time keep each lead's own order."""
    person = timeline.person
    key = person.lead.email or ""
    yield person.lead.created_at or datetime.min.replace(tzinfo=UTC), person.index, 0, person
    for item in timeline.items:
        moment = item.at if isinstance(item, Decision) else item.occurred_at
        yield moment, person.index, 1, (key, item)


def _create_leads(uow: UnitOfWork, people: list[DemoLead], window_end: datetime, replayed: _Replayed) -> None:
    if not people:
        return
    accounts: list[Account] = []
    for person in people:
        account = person.account
        if account is not None and account.domain not in replayed.known_domains:
            replayed.known_domains.add(account.domain)
            accounts.append(account)
    upsert_leads(uow, [p.lead for p in people], accounts=accounts, now=window_end, by="demo import")
    replayed.accounts += len(accounts)


def _apply_decisions(uow: UnitOfWork, decisions: list[tuple[str, Decision]], replayed: _Replayed) -> None:
    for key, decision in decisions:
        try:
            apply_stage_action(
                uow, key, decision.action, by=decision.by, reason=decision.reason, note=decision.note, at=decision.at
            )
            replayed.actions += 1
        except IllegalTransition:
            # The simulation decided on the stage it computed; should the store disagree
            # (the lead has moved on), the rep's decision is simply not taken.
            replayed.skipped += 1
