"""Learn a points scorecard from the history (`qualify learn-points`): a scoring model YAML to read
and edit, judged beside the active model on the newest leads, which it did not learn from.

Built on a point-in-time training set read through a batch engine (`on_engine`), like training
and the backtest in service.analytics.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from qualify.analytics.batch_evaluator import Sources
from qualify.service.analytics.batch_scores import on_engine
from qualify.service.lifecycle.scoring_models import active_document
from qualify.service.unit_of_work import Workspace


@dataclass(frozen=True, slots=True)
class LearnedScorecard:
    """The learned model's YAML and how it compares with the active model on the held-out leads."""

    document: str  # the learned scoring model, YAML
    report: dict[str, Any]  # training_set, current_model, learned_model, held_out, test, details
    fitting_rows: int  # leads it learnt from
    fit_rules: int
    engagement_rules: int


def learn_scorecard(
    workspace: Workspace,
    *,
    target: str = "customer",
    within_days: int = 90,
    cutoff: str = "created+14",
    end: datetime | None = None,
    engine: str = "duckdb",
    export: Path | None = None,
) -> LearnedScorecard:
    """Fit points from the older 80 % of the training set (reaching `target` within `within_days` of
    the `cutoff`, data up to `end`, default its latest event or stage change); score the newest
    20 % under the learned model and the active one, and judge both (ROC AUC, PR AUC, top decile)."""
    import numpy as np

    from qualify.predictive.features import default_end, rule_scores, training_set
    from qualify.predictive.metrics import evaluate
    from qualify.predictive.scorecard import learn_points

    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
        _, current = active_document(uow)

    def learn(sources: Sources) -> tuple[Any, Any, Any]:
        until = end or default_end(sources)
        rows = training_set(model, sources, target=target, within_days=within_days, cutoff=cutoff, end=until)
        learned = learn_points(rows, model, sources=sources, current_document=current)
        # The rule score the same rows would hold in a training set built with the learned model
        # (fit + engagement as of each cutoff, unrounded as its `rule_score` is): only the scores
        # depend on the model, so only they are computed again.
        again = rule_scores(learned.model, sources, rows.frame[["lead_id", "cutoff"]])
        return rows, learned, again

    rows, learned, again = on_engine(workspace, engine, export, learn)
    held = learned.held_out_rows
    labels = rows.labels[held]
    judged = {
        "learned": evaluate(labels, again[held], probabilities=False),
        "current": evaluate(labels, rows.frame["rule_score"].to_numpy()[held], probabilities=False),
    }
    report = {
        "training_set": rows.summary(),
        "current_model": model.version,
        "learned_model": learned.model.version,
        "held_out": {"rows": len(held), "positives": int(np.asarray(labels).sum())},
        "test": judged,
        "details": learned.details,
    }
    return LearnedScorecard(
        document=learned.document,
        report=report,
        fitting_rows=len(learned.fitting_rows),
        fit_rules=len(learned.model.fit.rules),
        engagement_rules=len(learned.model.engagement_rules),
    )
