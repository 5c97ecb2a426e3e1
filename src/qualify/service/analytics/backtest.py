"""Backtest: what a candidate scoring model would have done over the recorded history, beside another.

Every lead's history is replayed under each model (domain/replay.py): the events in the order
they arrived, the people's actions when they were taken, nothing after `end`. The MQLs each
model would have produced are then judged against what really happened afterwards:

- **precision**: of the leads a model made MQL in a week, the share that later (after that MQL)
  really reached SQL, opportunity, customer;
- **recall**: of the leads that really became customers in the period, the share the model had
  made MQL before they converted;
- **lead time**: days from the first MQL the model gave a converted lead to its conversion;
- **stage changes**: the leads whose stage at `end` differs between the two models.

The outcomes are what sales did with the leads the models of the time handed over: a lead only a
candidate would have handed over had no chance to be accepted, which biases precision towards
the model that was live. Profiles (title, company size, ...) are read as they are now.
"""

from __future__ import annotations

import bisect
import multiprocessing
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.content import content_item
from qualify.domain.engagement import DAY
from qualify.domain.errors import InvalidInput
from qualify.domain.evaluator import LeadState, OnlineEvaluator
from qualify.domain.fit import disqualifying_rule, profile_values, score_fit
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.replay import Replay, ReplayAction, ReplayEvent, replay_lead
from qualify.domain.scoring_model import ScoringModel
from qualify.domain.statistics import counted_rate, percentile
from qualify.predictive.recipe import (
    ACCOUNT_CATEGORIES,
    ACCOUNT_NUMBERS,
    LEAD_CATEGORIES,
    LEAD_FLAGS,
    DealFact,
    Peer,
    Subject,
)
from qualify.service.predictions import serving as predictions
from qualify.service.predictions.context import deals_of, peers_of
from qualify.service.unit_of_work import UnitOfWork, Workspace, utcnow
from qualify.settings import Settings

if TYPE_CHECKING:
    from qualify.predictive.online import Predictor

OUTCOMES = (Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER)
ENGINES = ("local", "spark")  # where the replay runs: this machine's processes, or Spark tasks
WEEK = timedelta(days=7)


@dataclass(slots=True)
class LeadOutcome:
    """One lead under one model: its MQL entries, where it ends, and its scores at the end."""

    mql_entries: list[float]
    stage: Stage
    fit: float
    grade: str
    engagement: float
    skipped_actions: int
    forced_actions: int


@dataclass(slots=True)
class Truth:
    """What really happened to one lead: every instant it entered each outcome stage, and its
    automatic MQL entries (to check a replay of the live model against the record)."""

    reached: dict[Stage, list[float]] = field(default_factory=dict)
    model_mqls: list[float] = field(default_factory=list)

    def reached_after(self, stage: Stage, instant: float) -> bool:
        times = self.reached.get(stage)
        return bool(times) and times[-1] > instant  # type: ignore[index]

    def first(self, stage: Stage) -> float | None:
        times = self.reached.get(stage)
        return times[0] if times else None


@dataclass
class BacktestReport:
    start: datetime
    end: datetime
    leads: int
    events: int
    models: dict[str, dict[str, Any]]  # "against" / "candidate": version, name, totals
    weeks: list[dict[str, Any]]
    differences: dict[str, Any]
    changes: list[dict[str, Any]]
    history_check: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "leads": self.leads,
            "events": self.events,
            "models": self.models,
            "weeks": self.weeks,
            "differences": self.differences,
            "changes": self.changes,
            "history_check": self.history_check,
        }


def backtest(
    workspace: Workspace,
    candidate: ScoringModel,
    against: ScoringModel,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    changes: int = 50,
    chunk: int = 2000,
    workers: int = 1,
    engine: str = "local",
    progress: Callable[[int, int], None] | None = None,
) -> BacktestReport:
    """Replay the history of every lead created before `end` under both models and compare.

    `start` (default: the first lead's creation) and `end` (default: now) bound the period
    reported; the replay itself starts at each lead's creation. `changes` caps the listed leads
    whose stage would change (all are counted). Leads are independent: with `workers` above 1,
    parts of `chunk` leads are replayed in that many processes at once (no more than there are
    parts); with `engine` "spark", each part is a Spark task, replayed on an executor that reads
    the workspace's database itself. Either way the report is the one a single process gives
    (tested).
    """
    if engine not in ENGINES:
        raise InvalidInput(f"unknown engine {engine!r}; expected one of: {', '.join(ENGINES)}", field="engine")
    end = end or utcnow()
    with workspace.unit_of_work(read_only=True) as uow:
        ids = _lead_ids(uow, end)
        if start is None:
            first = uow.connection.execute(select(func.min(schema.leads.c.created_at))).scalar()
            start = first.replace(hour=0, minute=0, second=0, microsecond=0) if first else end
    if not ids:
        raise InvalidInput(f"no lead was created by {end.isoformat()}: nothing to replay", field="to")
    if start >= end:
        raise InvalidInput(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})", field="from")
    runs: dict[str, dict[int, LeadOutcome]] = {"against": {}, "candidate": {}}
    found = None
    if candidate.policy.mql_probability or against.policy.mql_probability:
        with workspace.unit_of_work(read_only=True) as uow:
            found = predictions.active_predictor(uow)
    truths: dict[int, Truth] = {}
    events = 0
    parts = [list(part) for part in repo.chunks(ids, chunk)]
    for part in _replayed(workspace, parts, candidate, against, end, found, workers, engine):
        events += part.events
        truths.update(part.truths)
        for side, outcomes in part.runs.items():
            runs[side].update(outcomes)
        if progress:
            progress(len(truths), len(ids))
    window = (start.timestamp(), end.timestamp())
    conversions = {i: at for i, t in truths.items() if (at := t.first(Stage.CUSTOMER)) is not None}
    models = {
        side: {
            "version": model.version,
            "name": model.name,
            # the predictive model whose probability the policy used, if it has probability thresholds
            "predictive_model": found.version if found and model.policy.mql_probability else None,
            **_totals(runs[side], truths, conversions, window),
            "actions": {
                "skipped": sum(o.skipped_actions for o in runs[side].values()),
                "from_another_stage": sum(o.forced_actions for o in runs[side].values()),
            },
        }
        for side, model in (("against", against), ("candidate", candidate))
    }
    stage_changes = _stage_changes(runs, changes)
    return BacktestReport(
        start=start,
        end=end,
        leads=len(ids),
        events=events,
        models=models,
        weeks=[
            {
                "week": week_start.date().isoformat(),
                **{side: _totals(runs[side], truths, conversions, span) for side in runs},
            }
            for week_start, span in _weeks(start, end)
        ],
        differences=_differences(models, runs, window, stage_changes),
        changes=stage_changes["listed"],
        history_check=_history_check(runs["against"], truths, window),
    )


def _lead_ids(uow: UnitOfWork, end: datetime) -> list[int]:
    leads = schema.leads
    query = select(leads.c.id).where(leads.c.created_at <= end).order_by(leads.c.id)
    return list(uow.connection.execute(query).scalars())


@dataclass
class _Part:
    """One part of the leads replayed under both models: their outcomes by side, what really
    happened to them, and how many events were replayed."""

    runs: dict[str, dict[int, LeadOutcome]]
    truths: dict[int, Truth]
    events: int


def _replay_part(
    workspace: Workspace,
    evaluators: dict[str, OnlineEvaluator],
    found: Predictor | None,
    ids: list[int],
    end: datetime,
) -> _Part:
    part = _Part({side: {} for side in evaluators}, {}, 0)
    with workspace.unit_of_work(read_only=True) as uow:
        for lead_id, state_of, lead_events, actions, truth, hook in _histories(uow, ids, end, found):
            part.events += len(lead_events)
            part.truths[lead_id] = truth
            for side, evaluator in evaluators.items():
                state, rule = state_of(evaluator.model)
                run = replay_lead(
                    evaluator, state, events=lead_events, actions=actions, until=end.timestamp(),
                    disqualified_by=rule, probability=hook,
                )  # fmt: skip
                part.runs[side][lead_id] = _outcome(run, end.timestamp())
    return part


def _replayed(
    workspace: Workspace,
    parts: list[list[int]],
    candidate: ScoringModel,
    against: ScoringModel,
    end: datetime,
    found: Predictor | None,
    workers: int,
    engine: str = "local",
) -> Iterator[_Part]:
    """The parts replayed, in their order: here, in `workers` processes where there are parts
    enough, or as Spark tasks (each process or executor gets the models pickled, opens the
    workspace and loads the predictive model by its version)."""
    job = _Job(workspace.settings, against, candidate, found.version if found is not None else None, end)
    if engine == "spark":
        yield from _replayed_on_spark(job, parts)
        return
    workers = min(workers, len(parts))
    if workers <= 1:
        evaluators = {"against": OnlineEvaluator(against), "candidate": OnlineEvaluator(candidate)}
        for ids in parts:
            yield _replay_part(workspace, evaluators, found, ids, end)
        return
    # Processes started afresh ("spawn"): a forked copy of this one would share its open connections.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(job,)) as pool:
        yield from pool.map(_replay_in_worker, parts)  # in order: the report is the same as in one process


@dataclass(frozen=True)
class _Job:
    """What a worker process needs to replay parts."""

    settings: Settings
    against: ScoringModel
    candidate: ScoringModel
    predictor: str | None  # the predictive model's version
    end: datetime


_WORKER: dict[str, Any] = {}  # in a worker process: its workspace, evaluators, predictor and end


def _opened(job: _Job) -> tuple[Workspace, dict[str, OnlineEvaluator], Predictor | None]:
    """In a worker process or on a Spark executor: the workspace, the evaluators and the predictor."""
    from qualify.service.unit_of_work import open_workspace

    workspace = open_workspace(job.settings)
    found = None
    if job.predictor is not None:
        with workspace.unit_of_work(read_only=True) as uow:
            found = predictions.predictor(uow, job.predictor)
    return workspace, {"against": OnlineEvaluator(job.against), "candidate": OnlineEvaluator(job.candidate)}, found


def _start_worker(job: _Job) -> None:
    workspace, evaluators, found = _opened(job)
    _WORKER.update(workspace=workspace, evaluators=evaluators, found=found, end=job.end)


def _replay_in_worker(ids: list[int]) -> _Part:
    return _replay_part(_WORKER["workspace"], _WORKER["evaluators"], _WORKER["found"], ids, _WORKER["end"])


def _replayed_on_spark(job: _Job, parts: list[list[int]]) -> Iterator[_Part]:
    """The parts replayed as Spark tasks, one task per part, each on an executor that opens the
    workspace's database itself as a worker process does (so the database must be reachable from
    the executors: a PostgreSQL URL on a cluster); collected and given back in their order."""
    from qualify.analytics.engines import spark_session

    context = spark_session().sparkContext
    numbered = context.parallelize(list(enumerate(parts)), max(1, len(parts)))
    done = numbered.mapPartitions(partial(_replay_on_executor, job)).collect()
    for _, part in sorted(done, key=lambda found: found[0]):
        yield part


def _replay_on_executor(job: _Job, numbered: Iterable[tuple[int, list[int]]]) -> Iterator[tuple[int, _Part]]:
    """One Spark task: its parts of the leads replayed, each with its place in the order."""
    workspace, evaluators, found = _opened(job)
    try:
        for index, ids in numbered:
            yield index, _replay_part(workspace, evaluators, found, ids, job.end)
    finally:
        workspace.close()


StateFor = Callable[[ScoringModel], tuple[LeadState, Any]]
ProbabilityHook = Callable[[LeadState, float, int], float]


def _probability_hook(
    found: Predictor,
    profile: dict[str, Any],
    created: datetime,
    events: list[ReplayEvent],
    deals: list[DealFact],
    peers: list[Peer],
) -> ProbabilityHook:
    """The predictive model's probability of one lead as the replay goes: its profile as now, its
    first `n` events, its replayed scores and stage, its deals and its account's other leads as
    they really went (what `subjects` reads from the store online)."""
    seen = [
        (e.type, datetime.fromtimestamp(e.occurred_at, UTC), content_item(e.type, e.properties), e.properties)
        for e in events
    ]

    def probability(state: LeadState, instant: float, n: int) -> float:
        subject = Subject(
            lead_id=0,
            at=datetime.fromtimestamp(instant, UTC),
            created_at=created,
            profile=profile,
            fit_score=state.fit,
            fit_grade=state.grade,
            persona=state.persona,
            engagement_score=state.engagement_at(instant),
            events=seen[:n],
            stage=state.stage.value,
            stage_entered=datetime.fromtimestamp(state.stage_entered, UTC),
            deals=deals,
            peers=peers,
        )
        return found.probability_one(subject)

    return probability


def _histories(
    uow: UnitOfWork, ids: list[int], end: datetime, found: Predictor | None = None
) -> Iterator[tuple[int, StateFor, list[ReplayEvent], list[ReplayAction], Truth, ProbabilityHook | None]]:
    """Each lead of `ids`: a fresh state under any model, its events and people's actions up to `end`
    (events known by then: occurred and received), and what really happened to it."""
    conn = uow.connection
    records = repo.find_leads_by_id(conn, ids)
    accounts = repo.accounts_by_id(conn, [r.account_id for r in records if r.account_id])
    e, h = schema.events, schema.stage_history
    events: dict[int, list[ReplayEvent]] = defaultdict(list)
    rows = conn.execute(
        select(e.c.lead_id, e.c.type, e.c.occurred_at, e.c.properties)
        .where(e.c.lead_id.in_(ids), e.c.occurred_at <= end, e.c.received_at <= end)
        .order_by(e.c.lead_id, e.c.id)
    )
    for lead_id, kind, occurred_at, properties in rows:
        events[lead_id].append(ReplayEvent(occurred_at.timestamp(), kind, properties))
    actions: dict[int, list[ReplayAction]] = defaultdict(list)
    truths: dict[int, Truth] = defaultdict(Truth)
    moves = conn.execute(
        select(h.c.lead_id, h.c.from_stage, h.c.to_stage, h.c.at, h.c.actor)
        .where(h.c.lead_id.in_(ids))
        .order_by(h.c.lead_id, h.c.at, h.c.id)
    )
    for lead_id, from_stage, to_stage, at, actor in moves:
        to, ts = Stage(to_stage), at.timestamp()
        if actor == Actor.USER and at <= end:
            actions[lead_id].append(ReplayAction(ts, Stage(from_stage) if from_stage else None, to))
        if to in OUTCOMES:
            truths[lead_id].reached.setdefault(to, []).append(ts)
        elif to is Stage.MQL and actor != Actor.USER:
            truths[lead_id].model_mqls.append(ts)
    deals = deals_of(conn, ids) if found is not None and found.recipe.deals else {}
    peers = peers_of(conn, ids) if found is not None and found.recipe.account else {}
    for record in records:
        assert record.id is not None
        account = accounts.get(record.account_id) if record.account_id else None
        values = profile_values(record.lead, account)
        created = record.created_at.timestamp()
        hook = None
        if found is not None:
            profile = {name: getattr(record.lead, name) for name in (*LEAD_CATEGORIES, *LEAD_FLAGS)} | {
                f"account_{name}": getattr(account, name) if account else None
                for name in (*ACCOUNT_CATEGORIES, *ACCOUNT_NUMBERS)
            }
            profile["attributes"] = record.lead.attributes or {}
            hook = _probability_hook(
                found,
                profile,
                record.created_at,
                events.get(record.id, []),
                deals.get(record.id, []),
                peers.get(record.id, []),
            )

        def state_of(model: ScoringModel, values: dict[str, Any] = values, created: float = created) -> Any:
            fit = score_fit(model, values)
            state = LeadState(Stage.LEAD, created, fit.score, fit.grade, fit.persona)
            return state, disqualifying_rule(model, values)

        yield record.id, state_of, events.get(record.id, []), actions.get(record.id, []), truths[record.id], hook


def _outcome(run: Replay, end: float) -> LeadOutcome:
    state = run.state
    return LeadOutcome(
        mql_entries=run.entries(Stage.MQL),
        stage=state.stage,
        fit=state.fit,
        grade=state.grade,
        engagement=round(state.engagement_at(end), 4),
        skipped_actions=run.skipped_actions,
        forced_actions=run.forced_actions,
    )


def _weeks(start: datetime, end: datetime) -> Iterator[tuple[datetime, tuple[float, float]]]:
    """ISO weeks (from Monday) that overlap [start, end), each cut to the period."""
    monday = (start - timedelta(days=start.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    while monday < end:
        yield monday, (max(monday, start).timestamp(), min(monday + WEEK, end).timestamp())
        monday += WEEK


def _totals(
    outcomes: dict[int, LeadOutcome], truths: dict[int, Truth], conversions: dict[int, float], span: tuple[float, float]
) -> dict[str, Any]:
    """MQLs produced in `span` and how they turned out; customers converted in `span` (`conversions`:
    each customer's first entry into `customer`) and whether the model had flagged them before."""
    low, high = span
    flagged: dict[int, float] = {}  # lead -> its first MQL entry in the span
    for lead_id, outcome in outcomes.items():
        entries = outcome.mql_entries
        i = bisect.bisect_left(entries, low)
        if i < len(entries) and entries[i] < high:
            flagged[lead_id] = entries[i]
    precision = {
        stage.value: counted_rate(sum(truths[i].reached_after(stage, at) for i, at in flagged.items()), len(flagged))
        for stage in OUTCOMES
    }
    customers = {i: at for i, at in conversions.items() if low <= at < high}
    lead_days = []
    for lead_id, converted_at in customers.items():
        entries = outcomes[lead_id].mql_entries
        if entries and entries[0] < converted_at:
            lead_days.append((converted_at - entries[0]) / DAY)
    return {
        "mqls": len(flagged),
        "precision": precision,
        "customers": len(customers),
        "recall": counted_rate(len(lead_days), len(customers)),
        "lead_time_days": _spread(lead_days),
    }


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None}
    return {"median": round(percentile(values, 0.5), 2), "p90": round(percentile(values, 0.9), 2)}


def _stage_changes(runs: dict[str, dict[int, LeadOutcome]], limit: int) -> dict[str, Any]:
    """Leads whose stage at the end differs between the models: counted by move, the first `limit` listed
    (largest candidate score change first)."""
    against, candidate = runs["against"], runs["candidate"]
    moved = [i for i in against if against[i].stage is not candidate[i].stage]
    by_move = Counter(f"{against[i].stage.value}->{candidate[i].stage.value}" for i in moved)

    def shift(i: int) -> float:
        a, c = against[i], candidate[i]
        return abs((c.fit + c.engagement) - (a.fit + a.engagement))

    listed = [
        {
            "lead_id": i,
            "against": _scores(against[i]),
            "candidate": _scores(candidate[i]),
        }
        for i in sorted(moved, key=lambda i: (-shift(i), i))[:limit]
    ]
    return {"count": len(moved), "by_move": dict(by_move.most_common()), "listed": listed}


def _scores(outcome: LeadOutcome) -> dict[str, Any]:
    return {"stage": outcome.stage.value, "fit": outcome.fit, "grade": outcome.grade, "engagement": outcome.engagement}


def _differences(
    models: dict[str, dict[str, Any]],
    runs: dict[str, dict[int, LeadOutcome]],
    window: tuple[float, float],
    stage_changes: dict[str, Any],
) -> dict[str, Any]:
    """Candidate minus against, and the leads only one of them would have made MQL in the period."""
    a, c = models["against"], models["candidate"]

    def mql_in(outcome: LeadOutcome) -> bool:
        return any(window[0] <= at < window[1] for at in outcome.mql_entries)

    only = {side: {i for i, o in runs[side].items() if mql_in(o)} for side in runs}
    return {
        "mqls": c["mqls"] - a["mqls"],
        "precision": {
            stage: _delta(c["precision"][stage]["rate"], a["precision"][stage]["rate"]) for stage in c["precision"]
        },
        "recall": _delta(c["recall"]["rate"], a["recall"]["rate"]),
        "lead_time_median_days": _delta(c["lead_time_days"]["median"], a["lead_time_days"]["median"]),
        "mql_only_candidate": len(only["candidate"] - only["against"]),
        "mql_only_against": len(only["against"] - only["candidate"]),
        "stage_changes": stage_changes["count"],
        "stage_changes_by_move": stage_changes["by_move"],
    }


def _delta(new: float | None, old: float | None) -> float | None:
    return None if new is None or old is None else round(new - old, 4)


def _history_check(
    outcomes: dict[int, LeadOutcome], truths: dict[int, Truth], window: tuple[float, float]
) -> dict[str, Any]:
    """The `against` model's replayed MQL entries in the period beside the recorded automatic ones.

    When `against` was the live model the whole time they should be the same (to the minute: the
    decay-out instant is found to the minute); any gap says how far to trust the replay.
    """
    low, high = window

    def minutes(times: list[float]) -> set[int]:
        return {round(t / 60) for t in times if low <= t < high}

    recorded = replayed = matching = 0
    for lead_id, outcome in outcomes.items():
        truth, mine = minutes(truths[lead_id].model_mqls), minutes(outcome.mql_entries)
        recorded += len(truth)
        replayed += len(mine)
        matching += len(truth & mine)
    return {
        "recorded_mqls": recorded,
        "replayed_mqls": replayed,
        "matching": matching,
        "agreement": round(matching / max(recorded, replayed), 4) if max(recorded, replayed) else None,
    }
