"""Judge scores against known outcomes (`qualify evaluate`): the active scoring model's rule score,
a candidate scoring model's, and the active predictive model's probability, on the same leads at
the same instants, with the metrics of predictive.metrics and their 95 % intervals.

The outcomes come from a lead attribute or a labels file (service.analytics.outcomes); each lead
is scored as of its row's instant, or its newest activity where the row has none: its events up to
then, its stage then, its profile as now (the store keeps no history of profiles). Nothing later
is read. A predictive model judged on the leads it learnt from would flatter itself: it is then
judged out of fold instead — refitted k times (its kind, features and settings) on the other
folds, calibrated on the other folds' scores — the figures `qualify train` reports for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qualify.analytics.batch_evaluator import Sources
from qualify.domain.scoring_model import ScoringModel
from qualify.service.analytics.batch_scores import on_engine
from qualify.service.analytics.outcomes import excluded_leads, known_outcomes
from qualify.service.analytics.training import in_ranges
from qualify.service.predictions import serving as predictions
from qualify.service.unit_of_work import Workspace

FOLDS = 5


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What `qualify evaluate` reports (`--json`): the labels read, the leads judged, and per score
    its metrics with intervals."""

    report: dict[str, Any]


def evaluate_scores(
    workspace: Workspace,
    *,
    label: str | None = None,
    labels_file: Path | None = None,
    candidate: ScoringModel | None = None,
    engine: str = "duckdb",
    export: Path | None = None,
    folds: int = FOLDS,
    exclude_file: Path | None = None,
) -> Evaluation:
    """Every score the workspace can give (module doc), judged against the outcomes of `label`
    (a lead attribute or field) or `labels_file`; the leads `exclude_file` names are not judged
    (outcomes.py's `excluded_leads` reads it, as `qualify train --exclude` does)."""
    from qualify.predictive.features import outcome_set, rule_scores
    from qualify.predictive.metrics import evaluate
    from qualify.predictive.training import (
        cross_calibrated,
        fold_indices,
        out_of_fold,
        per_fold_auc,
        refit_like,
    )

    outcomes = known_outcomes(workspace, label=label, labels_file=labels_file)
    excluded = excluded_leads(workspace, exclude_file) if exclude_file is not None else None
    dropped = 0
    if excluded is not None and excluded.lead_ids:
        named = outcomes.frame["lead_id"].isin(sorted(excluded.lead_ids))
        dropped = int(named.sum())
        outcomes.frame = outcomes.frame[~named].reset_index(drop=True)
    with workspace.unit_of_work(read_only=True) as uow:
        active = uow.active_model()
        found = predictions.active_predictor(uow)
        document = predictions.model_document(uow, found.version) if found else {}
    learnt, kind = document.get("learnt_from"), document.get("model", {}).get("kind")

    def build(sources: Sources) -> tuple[Any, np.ndarray | None]:
        rows = outcome_set(
            active, sources, outcomes.frame, name=outcomes.source, recipe=found.recipe if found else None,
            without=(outcomes.column,) if outcomes.column else (),
        )  # fmt: skip
        other = rule_scores(candidate, sources, rows.frame) if candidate is not None else None
        return rows, other

    rows, other = on_engine(workspace, engine, export, build)
    labels = rows.labels
    scores: dict[str, dict[str, Any]] = {
        "rules": {
            "score": "fit + engagement",
            "model": active.version,
            "name": active.name,
            **evaluate(labels, rows.frame["rule_score"].to_numpy(dtype=float), probabilities=False, intervals=True),
        }
    }
    if candidate is not None and other is not None:
        scores["candidate"] = {
            "score": "fit + engagement",
            "model": candidate.version,
            "name": candidate.name,
            **evaluate(labels, other, probabilities=False, intervals=True),
        }
    if found is not None:
        ids = rows.frame["lead_id"].to_numpy()
        seen = sum(in_ranges(learnt, int(i)) for i in ids) if learnt is not None else None
        entry: dict[str, Any] = {"score": "probability", "model": found.version, "kind": kind}
        if seen:
            parts = fold_indices(labels, folds)
            raw = out_of_fold(refit_like(found.trained.model), rows.frame, labels, parts)
            probabilities = cross_calibrated(raw, labels, parts)
            entry |= {
                "judged": "out of fold",
                "learnt_from_these": int(seen),
                "folds": folds,
                "cross_validation": per_fold_auc(labels, probabilities, parts),
            }
        else:
            probabilities = found.trained.probabilities(rows.frame)
            entry |= {"judged": "as stored", "learnt_from_these": seen}
        scores["predictive"] = entry | evaluate(labels, probabilities, intervals=True)
    report = {
        "labels": outcomes.summary(),
        "instants": rows.cutoff,
        "leads": len(labels),
        "positives": int(labels.sum()),
        "scores": scores,
    }
    if excluded is not None:
        report["exclude"] = excluded.summary() | {"excluded": dropped}
    return Evaluation(report)
