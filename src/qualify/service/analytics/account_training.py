"""Accounts judged and learnt at account level: `qualify train --accounts` and `qualify backtest --accounts`.

Both read point-in-time account rows (predictive.account_set: every account at cutoffs every
few days, with its scores then and whether it opened an opportunity in the days after).

Training learns the probability that an account opens an opportunity within N days, judged on
held-out accounts: cross-validated by account (every row of an account in one fold), so that each
row's probability comes from candidates that never saw its account. Beside it, on the same rows,
the account policy (its MQA bar and its engagement roll-up) and the lead-level scores rolled up to
the account. Besides the ranking metrics, each is judged at the MQA threshold: as many rows flagged
as the MQA bar flags, how many of them opened an opportunity (precision) and of the rows that did,
how many were flagged (recall).

The policy backtest applies two scoring models' MQA bars at every cutoff: how many accounts each
makes MQA, how many of those opened an opportunity within N days, how many of the accounts that
opened one it had flagged at an earlier cutoff.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from qualify.analytics.batch_evaluator import Sources
from qualify.domain.scoring_model import ScoringModel
from qualify.domain.statistics import wilson_interval
from qualify.service.analytics.batch_scores import on_engine
from qualify.service.unit_of_work import Workspace

# What the account model is judged beside, by name: the account policy's own scores, and the
# lead-level scores rolled up to the account (columns of predictive.account_set's rows).
RULE_SCORES = {"account engagement": "account_engagement", "account fit": "account_fit"}
LEAD_SCORES = {
    "best person's score (fit + engagement)": "best_lead_score",
    "best person's engagement": "best_lead_engagement",
    "people in MQL": "people_in_mql",
}


@dataclass(frozen=True, slots=True)
class AccountTraining:
    """The report of `train_accounts` and the model's document (JSON, written by --out)."""

    report: dict[str, Any]
    document: dict[str, Any]


def train_accounts(
    workspace: Workspace,
    *,
    within_days: int = 30,
    every_days: int = 7,
    end: datetime | None = None,
    engine: str = "duckdb",
    export: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> AccountTraining:
    """Learn and judge the probability that an account opens an opportunity within `within_days`
    of a cutoff (module doc), from cutoffs every `every_days` up to `end` (default: the latest
    event or stage change)."""
    from qualify.predictive.account_set import account_set
    from qualify.predictive.features import default_end
    from qualify.predictive.metrics import evaluate
    from qualify.predictive.training import FOLDS, fold_indices, per_fold_auc, train_cross_validated

    step = progress or (lambda _text: None)
    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()

    def build(sources: Sources) -> tuple[Any, Any]:
        step("building the account rows")
        rows = account_set(model, sources, within_days=within_days, every_days=every_days,
                           end=end or default_end(sources))  # fmt: skip
        step(f"fitting and judging the candidates on {len(rows.frame):,} account rows")
        return rows, train_cross_validated(rows.frame, rows.labels, rows.times, rows.spec, groups=rows.accounts)

    step("reading the history" if export is None and engine != "postgres" else "reading the tables")
    rows, trained = on_engine(workspace, engine, export, build)
    frame, labels, probability = rows.frame, rows.labels, trained.out_of_fold
    assert probability is not None  # cross-validated
    test, folded = trained.report["test"], trained.report["cross_validation"]
    parts = fold_indices(labels, FOLDS, rows.accounts)
    mqa = frame["mqa"].to_numpy(dtype=bool)
    for name, column in (RULE_SCORES | LEAD_SCORES | {"MQA bar": "mqa"}).items():
        scores = frame[column].to_numpy(dtype=float)
        test[name] = evaluate(labels, scores, probabilities=False)
        folded[name] = per_fold_auc(labels, scores, parts)
    best_lead = max(LEAD_SCORES, key=lambda name: folded[name]["mean"])
    at_mqa = {
        "flagged": int(mqa.sum()),
        "MQA bar": _flagged(labels, mqa),
        "model": _top(labels, probability, int(mqa.sum())),
        f"lead level: {best_lead}": _top(labels, frame[LEAD_SCORES[best_lead]].to_numpy(dtype=float), int(mqa.sum())),
    }
    report = {
        "subject": "accounts",
        "training_set": rows.summary(),
        "scoring_model": model.version,
        **trained.report,
        "best_lead_level": best_lead,
        "at_mqa_threshold": at_mqa,
    }
    document = trained.to_dict() | {"kind": "account opportunity", "report": report}
    return AccountTraining(report, document)


def _flagged(labels: np.ndarray, flagged: np.ndarray) -> dict[str, Any]:
    """Precision and recall of a yes/no flag."""
    hits, count, positives = int(labels[flagged].sum()), int(flagged.sum()), int(labels.sum())
    return {
        "flagged": count,
        "opened": hits,
        "precision": round(hits / count, 4) if count else None,
        "precision_95": wilson_interval(hits, count) if count else None,
        "recall": round(hits / positives, 4) if positives else None,
    }


def _top(labels: np.ndarray, scores: np.ndarray, count: int) -> dict[str, Any]:
    """`_flagged` for the `count` rows a score ranks highest (ties in row order)."""
    flagged = np.zeros(len(labels), dtype=bool)
    flagged[np.argsort(-scores, kind="stable")[:count]] = True
    return _flagged(labels, flagged)


def backtest_accounts(
    workspace: Workspace,
    candidate: ScoringModel,
    against: ScoringModel,
    *,
    within_days: int = 30,
    every_days: int = 7,
    end: datetime | None = None,
    engine: str = "duckdb",
    export: Path | None = None,
) -> dict[str, Any]:
    """Each model's MQA bar applied to every account at every cutoff (module doc): per model the
    rows and accounts it flags, their precision (opened an opportunity within `within_days`), and
    of the accounts that opened one, how many it flagged at that cutoff or an earlier one."""
    from qualify.predictive.account_set import account_set, mqa_bar_met
    from qualify.predictive.features import default_end

    def run(sources: Sources) -> dict[str, Any]:
        last = end or default_end(sources)
        out: dict[str, Any] = {"within_days": within_days, "every_days": every_days, "models": {}}
        for role, model in (("candidate", candidate), ("against", against)):
            rows = account_set(model, sources, within_days=within_days, every_days=every_days, end=last)
            assert model.accounts is not None  # account_set refuses a model without accounts
            flagged = mqa_bar_met(model.accounts, rows.frame)
            out["models"][role] = {"version": model.version, "bar": _bar(model)} | _policy(rows, flagged)
            out |= {"cutoffs": len(rows.cutoffs), "rows": len(rows.frame), "positives": int(rows.labels.sum())}
        return out

    return on_engine(workspace, engine, export, run)


def _bar(model: ScoringModel) -> dict[str, float | None]:
    bar = model.accounts.mqa if model.accounts else None
    return {"fit": bar.fit, "engagement": bar.engagement, "roles": bar.roles} if bar else {}


def _policy(rows: Any, flagged: np.ndarray) -> dict[str, Any]:
    frame, labels = rows.frame, rows.labels
    out = _flagged(labels, flagged)
    out["accounts_flagged"] = int(frame.loc[flagged, "account_id"].nunique())
    opened = frame.loc[labels == 1, ["account_id", "cutoff"]]
    first_flag = frame.loc[flagged].groupby("account_id")["cutoff"].min()
    # An account that opened an opportunity after a cutoff: flagged at that cutoff or before it.
    ahead = opened.join(first_flag.rename("flagged_at"), on="account_id")
    caught = ahead[ahead["flagged_at"].notna() & (ahead["flagged_at"] <= ahead["cutoff"])]
    accounts_opened = int(opened["account_id"].nunique())
    out["accounts_opened"] = accounts_opened
    out["accounts_caught"] = int(caught["account_id"].nunique())
    out["account_recall"] = round(out["accounts_caught"] / accounts_opened, 4) if accounts_opened else None
    return out
