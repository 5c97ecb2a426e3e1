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

    python benchmarks/predictive.py [--data ../shared/data]

Not part of pass/fail: it prints the figures and the ratio of each AUC to the best baseline's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from qualify.predictive.models import BoostedModel, FeatureSpec, LogisticModel, NaiveBayesModel
from qualify.predictive.training import leakage, train

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"the shared data folder is absent ({args.data}): this benchmark needs the real lead data")
    xeducation(args.data / "xeducation_leads.csv")
    olist(args.data / "olist")


if __name__ == "__main__":
    main()
