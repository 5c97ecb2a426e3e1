"""Advise an MQL threshold (`qualify advise`) from sales capacity or the cost of a miss against a
wasted call, with the precision, recall and weekly volume it implies on past leads.

The leads are judged on a point-in-time training set built on a batch engine (`on_engine`), hence
its place beside the backtest and training in service.analytics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from qualify.analytics.batch_evaluator import Sources
from qualify.analytics.reports import TARGETS
from qualify.domain.errors import InvalidInput, NotFound
from qualify.service.analytics.batch_scores import on_engine
from qualify.service.predictions import serving as predictions
from qualify.service.unit_of_work import Workspace

SCORES = ("probability", "engagement", "rule")
NO_PREDICTOR = "no active predictive model: `qualify train --activate`, or choose --score engagement or rule"
NO_LEADS = "no judged leads to advise from: widen --since, or wait for outcomes"
EITHER = "give either --capacity or --miss-cost"


@dataclass(frozen=True, slots=True)
class Advice:
    """The advice (`qualify advise --json`) and the conversion it was judged against."""

    report: dict[str, Any]  # score, model_version, and predictive.advice's threshold and operating points
    target: str
    within_days: int
    cutoff: str


def advise_threshold(
    workspace: Workspace,
    *,
    capacity: float | None = None,
    miss_cost: float | None = None,
    call_cost: float = 1.0,
    score: str = "probability",
    target: str | None = None,
    within_days: int | None = None,
    cutoff: str | None = None,
    since: datetime | None = None,
    engine: str = "duckdb",
    export: Path | None = None,
    note: Callable[[str], None] = lambda _: None,
) -> Advice:
    """The threshold on `score` (probability, engagement or rule: fit + engagement) that fits the capacity (leads a week) or the costs, judged on past
    leads whose cutoff is at or after `since` (default: for the probability, the start of the
    active predictive model's test period, else every lead; for engagement, leads of grades A–C).

    The conversion defaults to the predictive model's, else customer within 90 days of created+14;
    `note` is told when the one asked differs from what the model predicts.
    """
    from qualify.predictive.advice import advise
    from qualify.predictive.features import default_end, training_set

    if (capacity is None) == (miss_cost is None):
        raise InvalidInput(EITHER)
    if score not in SCORES:
        raise InvalidInput(f"no score {score!r}: probability, engagement or rule", field="score")
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
        found = predictions.active_predictor(uow) if score == "probability" else None
    if score == "probability" and found is None:
        raise NotFound(NO_PREDICTOR)
    learnt = found.trained.report.get("training_set", {}) if found is not None else {}
    if learnt.get("target") not in TARGETS:  # learnt from known outcomes, not from the stage history
        learnt = {}
    target = target or learnt.get("target") or "customer"
    within = within_days or learnt.get("within_days") or 90
    cutoff = cutoff or learnt.get("cutoff") or "created+14"
    if learnt and (target, within, cutoff) != (learnt.get("target"), learnt.get("within_days"), learnt.get("cutoff")):
        note(
            f"the model predicts {learnt.get('target')} within {learnt.get('within_days')} days "
            f"of {learnt.get('cutoff')}; judged here against {target} within {within} days of {cutoff}"
        )
    start = since
    if start is None and found is not None:
        test_period = found.trained.report.get("periods", {}).get("test") or [None]
        start = datetime.fromisoformat(test_period[0].replace("Z", "+00:00")) if test_period[0] else None

    def build(sources: Sources) -> Any:
        return training_set(
            model, sources, target=target, within_days=within, cutoff=cutoff, end=default_end(sources),
            recipe=found.recipe if found else None,
        )  # fmt: skip

    frame = on_engine(workspace, engine, export, build).frame
    if start is not None:
        frame = frame[frame["cutoff"] >= start]
    if score == "engagement":
        frame = frame[frame["fit_grade"].isin(["A", "B", "C"])]
    if frame.empty:
        raise InvalidInput(NO_LEADS)
    if found is not None:
        values = found.trained.probabilities(frame)
    else:
        values = frame["engagement_score" if score == "engagement" else "rule_score"].to_numpy(dtype=float)
    span = (frame["cutoff"].max() - frame["cutoff"].min()).total_seconds() / (7 * 86_400)
    try:
        advice = advise(
            values, frame["label"].to_numpy(dtype=int), weeks=span, capacity_per_week=capacity,
            miss_cost=miss_cost, call_cost=call_cost,
        )  # fmt: skip
    except ValueError as error:
        raise InvalidInput(str(error)) from None
    report = {"score": score, "model_version": found.version if found else model.version, **advice}
    return Advice(report, target, within, cutoff)
