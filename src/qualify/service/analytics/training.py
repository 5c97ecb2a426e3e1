"""Train a predictive model from the history (`qualify train`): a point-in-time training set built on
a batch engine, two candidate models chosen and calibrated on later leads, judged on the latest
beside the rule score; stored as a version, and made the active one if asked.

Outcomes known without a stage history (`label`: a lead attribute; `labels_file`: a labels file,
service.analytics.outcomes) train on the same features, taken at each row's instant or the lead's
newest activity; without dates the candidates are judged by cross-validation.

It lives with the batch side (service.analytics) because it reads the history through `on_engine`,
like the backtest; the stored models themselves are service.predictions.serving's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from qualify.analytics.batch_evaluator import Sources
from qualify.service.analytics.batch_scores import on_engine
from qualify.service.analytics.outcomes import Excluded, KnownOutcomes, excluded_leads, known_outcomes
from qualify.service.predictions import serving as predictions
from qualify.service.unit_of_work import Workspace


@dataclass(frozen=True, slots=True)
class TrainingOutcome:
    """What training gave: the report, the model's document (JSON), its version, and whether it
    was stored and made active."""

    report: dict[str, Any]  # training_set (its summary), scoring_model, and the trainer's report
    document: dict[str, Any]  # model, calibration, recipe, report: what is stored and written by --out
    version: str
    stored: bool
    active: bool
    refused: str | None = None  # why `activate` was not done (the model does not beat the rule score)

    def as_dict(self) -> dict[str, Any]:
        """The report with the version and where it went (`qualify train --json`)."""
        return self.report | {
            "version": self.version,
            "stored": self.stored,
            "active": self.active,
            "activation_refused": self.refused,
        }


def beats_rule_score(report: dict[str, Any]) -> str | None:
    """None when the model ranks the judged leads better than the rule score does (ROC AUC), else
    why not, in words: a model that does not beat the score it would replace is not made active
    unless forced."""
    test = report["test"]
    model, rule = test["model"].get("roc_auc"), test.get("rule_score", {}).get("roc_auc")
    if model is None or rule is None or model > rule:
        return None
    where = "out of fold" if report["validation"]["method"] == "cross-validation" else "on the newest leads"
    others = [
        f"{name.replace('_', ' ')} {metrics['roc_auc']:.3f}"
        for name, metrics in test.items()
        if name not in ("model", "rule_score") and "uncalibrated" not in name and metrics.get("roc_auc") is not None
    ]
    beside = f" ({', '.join(others)})" if others else ""
    return (
        f"{where} it ranks converters with ROC AUC {model:.3f}, not above the rule score's {rule:.3f}{beside}: "
        "it would rank leads worse than the score it replaces"
    )


def train_model(
    workspace: Workspace,
    *,
    target: str = "customer",
    within_days: int = 90,
    cutoff: str = "created+14",
    end: datetime | None = None,
    exclude_leaks: bool = False,
    store: bool = True,
    activate: bool = False,
    engine: str = "duckdb",
    export: Path | None = None,
    label: str | None = None,
    labels_file: Path | None = None,
    without: tuple[str, ...] = (),
    exclude_file: Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> TrainingOutcome:
    """Learn the probability of reaching `target` within `within_days` of the `cutoff` from the
    data up to `end` (default: its latest event or stage change) — or, with `label` or
    `labels_file`, of the outcomes they give. Features (or lead attributes) named in `without`
    are left out, and so are the leads named in `exclude_file` (from the rows, and so from the
    features found in the data, the time split or cross-validation, and `learnt_from`). Stored
    when `store` or `activate`; with `activate`, made the active model and every lead scored
    with it, unless it does not beat the rule score on the judged leads (`beats_rule_score`) and
    `force` is not given: then it is only stored, and `refused` says why. `progress` is told each
    step as it starts."""
    step = progress or (lambda _text: None)
    from qualify.predictive.features import default_end, outcome_set, training_set
    from qualify.predictive.training import time_split, train, train_cross_validated

    with workspace.unit_of_work(read_only=True) as uow:
        model = uow.active_model()
    excluded: Excluded | None = excluded_leads(workspace, exclude_file) if exclude_file is not None else None
    keep_out = excluded.lead_ids if excluded is not None else frozenset()
    outcomes: KnownOutcomes | None = None
    dropped = 0
    if label is not None or labels_file is not None:
        outcomes = known_outcomes(workspace, label=label, labels_file=labels_file)
        if keep_out:
            named = outcomes.frame["lead_id"].isin(sorted(keep_out))
            dropped = int(named.sum())
            outcomes.frame = outcomes.frame[~named].reset_index(drop=True)

    def build(sources: Sources) -> tuple[Any, Any]:
        step("building the training set")
        if outcomes is not None:
            rows = outcome_set(
                model, sources, outcomes.frame, name=outcomes.source,
                without=(*without, *([outcomes.column] if outcomes.column else [])),
            )  # fmt: skip
            rows.left_out = {"excluded": dropped}
        else:
            rows = training_set(
                model, sources, target=target, within_days=within_days, cutoff=cutoff,
                end=end or default_end(sources), without=without, exclude=keep_out,
            )  # fmt: skip
        fit = train_cross_validated if outcomes is not None and rows.cutoff != "given instants" else train
        step(f"fitting and judging the candidates on {len(rows.frame):,} leads")
        return rows, fit(
            rows.frame, rows.labels, rows.times, rows.spec,
            rule_scores=rows.frame["rule_score"].to_numpy(), exclude_leaks=exclude_leaks,
        )  # fmt: skip

    step("reading the history" if export is None and engine != "postgres" else "reading the tables")
    rows, trained = on_engine(workspace, engine, export, build)
    report = {"training_set": rows.summary(), "scoring_model": model.version, **trained.report}
    if outcomes is not None:
        report["labels"] = outcomes.summary()
    if excluded is not None:
        report["exclude"] = excluded.summary() | {"excluded": rows.left_out.get("excluded", 0)}
    ids = rows.frame["lead_id"].to_numpy()
    if trained.report["validation"]["method"] == "time split":
        old, middle, _ = time_split(rows.times)
        ids = ids[[*old, *middle]]
    document = predictions.artefact(trained, rows.recipe, report) | {"learnt_from": id_ranges(ids)}
    version = predictions.version_of(document)
    refused = beats_rule_score(report) if activate and not force else None
    activate = activate and refused is None
    if store or activate or refused:
        with workspace.unit_of_work() as uow:
            predictions.store_model(uow, document)
            if activate:
                predictions.activate(uow, version)
        if activate:
            step("scoring every lead with it")
            predictions.refresh_all(workspace)
    return TrainingOutcome(
        report, document, version, stored=store or activate or refused is not None, active=activate, refused=refused
    )


def id_ranges(ids: Any) -> list[list[int]]:
    """Lead ids as sorted, inclusive [first, last] runs: the leads a model learnt from, kept small."""
    runs: list[list[int]] = []
    for lead_id in sorted({int(i) for i in ids}):
        if runs and lead_id == runs[-1][1] + 1:
            runs[-1][1] = lead_id
        else:
            runs.append([lead_id, lead_id])
    return runs


def in_ranges(runs: list[list[int]], lead_id: int) -> bool:
    from bisect import bisect_right

    at = bisect_right([first for first, _ in runs], lead_id) - 1
    return at >= 0 and runs[at][0] <= lead_id <= runs[at][1]
