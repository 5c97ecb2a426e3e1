"""Predictive scoring against the baselines it must beat, measured in the same run.

1. X Education leads (../shared/data/xeducation_leads.csv, `Converted`): 5-fold stratified
   cross-validated ROC AUC of Qualify's boosted model against (a) plain logistic regression on
   one-hot features and (b) a naive Bayes frequency model of the kind CRMs use, with the
   staff-filled columns that leak the label left out (Tags, Lead Quality, Lead Profile, the
   Asymmetrique indexes and scores), with and without Last Activity / Last Notable Activity. The
   leakage check is run on the data with those columns kept, to show what it names.
2. Olist marketing funnel (../shared/data/olist/): MQL → deal won within 150 days, from origin,
   landing page and first-contact date, with a time-ordered split (every model judged on the
   newest 20 % of MQLs, after training on the oldest 60 %).
3. The demo world (`qualify demo`, built here in a temporary SQLite workspace with the default
   scoring model active, exported and read with DuckDB): a point-in-time training set (reached
   sql within 60 days of the cutoff, created+14), trained as `qualify train` does and judged on
   the newest 20 % of its leads, beside the naive Bayes baseline and the rule score (the active
   model's fit + engagement at the cutoff). The world's outcomes are simulated from quantities
   close to the rule score's, plus a hidden in-market state: the rules are a strong baseline here.

    python benchmarks/predictive.py [--data ../shared/data] [--only xeducation olist demo]
                                    [--demo-leads 5000] [--demo-seed 7]

The demo part needs no data folder. Not part of pass/fail: it prints the figures and the ratio
of each AUC to the best baseline's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from qualify.analytics.engines import duckdb_sources
from qualify.bootstrap import open_workspace
from qualify.demo.world import build_demo
from qualify.domain.errors import InvalidInput
from qualify.domain.model_loader import default_model_text
from qualify.predictive.features import default_end, training_set
from qualify.predictive.models import BoostedModel, FeatureSpec, LogisticModel, NaiveBayesModel
from qualify.predictive.training import leakage, train
from qualify.service.analytics.export import export_workspace
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.settings import Settings

LEAKS = (
    "Tags",
    "Lead Quality",
    "Lead Profile",
    "Asymmetrique Activity Index",
    "Asymmetrique Profile Index",
    "Asymmetrique Activity Score",
    "Asymmetrique Profile Score",
)
LAST_ACTIVITY = ("Last Activity", "Last Notable Activity")
NUMERIC = ("TotalVisits", "Total Time Spent on Website", "Page Views Per Visit")
IDS = ("Prospect ID", "Lead Number", "Converted")
HORIZON_DAYS = 150
PARTS = ("xeducation", "olist", "demo")
DEMO_DAYS = 180  # the demo's own default period
DEMO_NOW = datetime(2026, 6, 1, tzinfo=UTC)  # fixed, so that a seed and a size give the same world
DEMO_TARGET, DEMO_WITHIN, DEMO_CUTOFF = "sql", 60, "created+14"


def xeducation(path: Path) -> None:
    frame = pd.read_csv(path)
    labels = frame["Converted"].to_numpy()
    categorical = tuple(c for c in frame.columns if c not in NUMERIC and c not in IDS)
    frame[list(categorical)] = frame[list(categorical)].replace("Select", np.nan)  # the form's "not chosen"
    print(f"X Education: {len(frame):,} leads, {labels.sum():,} converted ({labels.mean():.1%})")
    everything = FeatureSpec(NUMERIC, categorical)
    named = leakage(frame, labels, everything, threshold=0.8)
    print(
        "  leakage check (single-feature AUC ≥ 0.8, all columns kept): "
        + ", ".join(f"{f['feature']} {f['auc']}" for f in named)
    )
    for keep_last in (True, False):
        dropped = set(LEAKS) | (set() if keep_last else set(LAST_ACTIVITY))
        spec = FeatureSpec(NUMERIC, tuple(c for c in categorical if c not in dropped))
        scores: dict[str, list[float]] = {"boosted (Qualify)": [], "logistic, one-hot": [], "naive Bayes": []}
        started = time.perf_counter()
        for train_rows, test_rows in StratifiedKFold(5, shuffle=True, random_state=0).split(frame, labels):
            fit_on, judged = frame.iloc[train_rows], frame.iloc[test_rows]
            for name, model in (
                ("boosted (Qualify)", BoostedModel(spec)),
                ("logistic, one-hot", LogisticModel(spec)),
                ("naive Bayes", NaiveBayesModel(spec)),
            ):
                model.fit(fit_on, labels[train_rows])
                scores[name].append(float(roc_auc_score(labels[test_rows], model.raw(judged))))
        seconds = time.perf_counter() - started
        means = {name: float(np.mean(values)) for name, values in scores.items()}
        best_baseline = max(means["logistic, one-hot"], means["naive Bayes"])
        label = "with" if keep_last else "without"
        print(f"  5-fold ROC AUC, leaking columns left out, {label} Last Activity ({seconds:.1f} s):")
        for name, value in means.items():
            spread = np.std(scores[name])
            print(f"    {name:<20} {value:.4f} ± {spread:.4f}   ratio to best baseline {value / best_baseline:.3f}")


def olist(folder: Path) -> None:
    mqls = pd.read_csv(folder / "olist_marketing_qualified_leads_dataset.csv", parse_dates=["first_contact_date"])
    deals = pd.read_csv(folder / "olist_closed_deals_dataset.csv", parse_dates=["won_date"])
    joined = mqls.merge(deals[["mql_id", "won_date"]], on="mql_id", how="left")
    days = (joined["won_date"] - joined["first_contact_date"]).dt.days
    labels = ((days <= HORIZON_DAYS) & joined["won_date"].notna()).to_numpy(dtype=int)
    contact = joined["first_contact_date"]
    joined["weekday"] = contact.dt.day_name()
    joined["month"] = contact.dt.month.astype(str)
    joined["landing"] = joined["landing_page_id"]
    spec = FeatureSpec(numeric=(), categorical=("origin", "landing", "weekday", "month"))
    print(
        f"Olist: {len(joined):,} MQLs, {labels.sum():,} won within {HORIZON_DAYS} days of first contact "
        f"({labels.mean():.1%}); every MQL has at least 167 days of follow-up"
    )
    started = time.perf_counter()
    trained = train(joined, labels, contact.to_numpy(), spec)
    report = trained.report
    test = report["test"]
    print(
        f"  time-ordered split {report['split']} (test part: {report['periods']['test']}), {time.perf_counter() - started:.1f} s"
    )
    best_baseline = max(test["logistic (uncalibrated)"]["roc_auc"], test["naive_bayes"]["roc_auc"])
    for name in ("model", "boosted (uncalibrated)", "logistic (uncalibrated)", "naive_bayes"):
        auc = test[name]["roc_auc"]
        print(
            f"    {name:<26} ROC AUC {auc:.4f}  PR AUC {test[name]['pr_auc']:.4f}  ratio to best baseline {auc / best_baseline:.3f}"
        )
    print(
        f"    chosen: {report['choice']['chosen']} ({report['calibration']}); Brier {test['model']['brier']}, ECE {test['model']['ece']}"
    )


def demo(leads: int, seed: int) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qualify-demo-") as folder:
        workspace = open_workspace(Settings(database_url=f"sqlite:///{Path(folder) / 'demo.db'}"), create=True)
        try:
            with workspace.unit_of_work() as uow:
                activate_model(uow, default_model_text())
            world = build_demo(workspace, seed=seed, leads=leads, days=DEMO_DAYS, now=DEMO_NOW)
            export_workspace(workspace, Path(folder) / "export")
            with workspace.unit_of_work(read_only=True) as uow:
                model = uow.active_model()
        finally:
            workspace.close()
        built = time.perf_counter() - started
        sources = duckdb_sources(Path(folder) / "export")
        rows = training_set(
            model, sources, target=DEMO_TARGET, within_days=DEMO_WITHIN, cutoff=DEMO_CUTOFF, end=default_end(sources)
        )
        # The same rows with the features there were before those from CRM histories (event
        # properties, recency weights, deals, account roll-ups): what they add, on this world.
        before = replace(rows.recipe, numbers={}, values={}, weighted=False, deals=False, account=False)
        reference = training_set(
            model, sources, target=DEMO_TARGET, within_days=DEMO_WITHIN, cutoff=DEMO_CUTOFF, end=default_end(sources),
            recipe=before,
        )  # fmt: skip
    summary = rows.summary()
    print(
        f"Demo world (seed {seed}): {world.leads:,} leads, {world.events:,} events over {DEMO_DAYS} days, "
        f"built and exported in {built:.1f} s"
    )
    print(
        f"  training set: reached {DEMO_TARGET} within {DEMO_WITHIN} days of {DEMO_CUTOFF}: {summary['rows']:,} leads, "
        f"{summary['positives']:,} positive ({summary['positives'] / summary['rows']:.1%}), {summary['features']} features; "
        f"left out {summary['left_out']['censored']:,} not yet judged, "
        f"{summary['left_out']['reached_before_cutoff']:,} reached {DEMO_TARGET} before the cutoff"
    )
    started = time.perf_counter()
    try:
        trained = train(rows.frame, rows.labels, rows.times, rows.spec, rule_scores=rows.frame["rule_score"].to_numpy())
    except InvalidInput as error:
        sys.exit(f"the demo world is too small to train on ({error}): give more --demo-leads")
    report = trained.report
    test = report["test"]
    print(
        f"  time-ordered split {report['split']} (test part: {report['periods']['test']}, "
        f"{test['model']['positives']} positive), {time.perf_counter() - started:.1f} s"
    )
    if test["model"]["roc_auc"] is None:  # a test part with one outcome only (a tiny world)
        print("    the test part has one outcome only: no AUC")
        return
    best_baseline = max(test["naive_bayes"]["roc_auc"], test["rule_score"]["roc_auc"])
    for name in ("model", "boosted (uncalibrated)", "logistic (uncalibrated)", "naive_bayes", "rule_score"):
        auc = test[name]["roc_auc"]
        print(
            f"    {name:<26} ROC AUC {auc:.4f}  PR AUC {test[name]['pr_auc']:.4f}  ratio to best baseline {auc / best_baseline:.3f}"
        )
    print(
        f"    chosen: {report['choice']['chosen']} (choice-part AUC {report['choice']['auc']}, {report['calibration']}); "
        f"Brier {test['model']['brier']}, ECE {test['model']['ece']}; best baseline: naive Bayes or rule score"
    )
    without = train(reference.frame, reference.labels, reference.times, reference.spec).report["test"]
    print(
        f"    without the event-property, recency, deal and account features ({len(reference.spec.columns)} "
        f"features): model ROC AUC {without['model']['roc_auc']:.4f}, boosted {without['boosted (uncalibrated)']['roc_auc']:.4f}, "
        f"logistic {without['logistic (uncalibrated)']['roc_auc']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="the parts to run (default all)")
    parser.add_argument("--demo-leads", type=int, default=5000, help="leads in the demo world (default 5,000)")
    parser.add_argument("--demo-seed", type=int, default=7, help="the demo world's seed (default 7)")
    args = parser.parse_args()
    if {"xeducation", "olist"} & set(args.only) and not args.data.is_dir():
        sys.exit(
            f"the shared data folder is absent ({args.data}): the X Education and Olist parts need it (demo: --only demo)"
        )
    if "xeducation" in args.only:
        xeducation(args.data / "xeducation_leads.csv")
    if "olist" in args.only:
        olist(args.data / "olist")
    if "demo" in args.only:
        demo(args.demo_leads, args.demo_seed)


if __name__ == "__main__":
    main()
