"""What the features from CRM histories are worth, and what they cost, against the features before
them, measured in the same run on the same data.

A generated CRM history (qualify.demo.crm: companies, the people at them, web sessions with page
and pricing-page counts, sales activities with an outcome, acceptances and deals with amounts) is
imported into a fresh SQLite workspace as history, exported, and read with DuckDB. Two recipes
build the same rows (reached customer within 150 days of created+45):

- reference: the features before — profile, stage, per-kind counts, content items, rule scores;
- full: those plus event-property sums, means and frequent values, recency-weighted counts, the
  lead's deals and its account's other people.

For each: the time to build the training set, the time-ordered test ROC AUC (trained on the oldest
60 %, judged on the newest 20 %, as `qualify train` does) and the 5-fold cross-validated ROC AUC;
then the time to refresh every lead's probability online with each model active. Prints each
figure and the ratio full / reference. Not part of the test suite's pass/fail.

    python benchmarks/crm_features.py [--companies 300] [--people 3000] [--seed 7]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from qualify.analytics.engines import duckdb_sources
from qualify.bootstrap import open_workspace
from qualify.demo.crm import CrmShape, write_crm_history
from qualify.domain.model_loader import default_model_text
from qualify.predictive.features import TrainingSet, training_set
from qualify.predictive.training import train, train_cross_validated
from qualify.service.analytics.export import export_workspace
from qualify.service.imports.files import import_file
from qualify.service.lifecycle.scoring_models import activate_model
from qualify.service.pipeline import reacting
from qualify.service.predictions import serving as predictions
from qualify.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--companies", type=int, default=300)
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    shape = CrmShape(companies=args.companies, people=args.people)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_crm_history(folder / "crm", shape, args.seed)
        workspace = open_workspace(Settings(database_url=f"sqlite:///{folder / 'crm.db'}"), create=True)
        with workspace.unit_of_work() as uow:
            activate_model(uow, default_model_text())
        started = time.perf_counter()
        history = reacting(workspace, history_before=shape.end)
        for kind, path in (("accounts", files.accounts), ("events", files.events)):
            import_file(history, kind, path, now=shape.end)
        for kind, path in (("stages", files.stages), ("deals", files.deals)):
            import_file(workspace, kind, path, now=shape.end)
        print(
            f"imported {args.people:,} people at {args.companies:,} companies in {time.perf_counter() - started:.1f} s"
        )
        export_workspace(workspace, folder / "export")
        sources = duckdb_sources(folder / "export")
        with workspace.unit_of_work(read_only=True) as uow:
            model = uow.active_model()

        def build(recipe: object = None) -> tuple[TrainingSet, float]:
            began = time.perf_counter()
            rows = training_set(
                model, sources, target="customer", within_days=150, cutoff="created+45", end=shape.end,
                recipe=recipe,  # type: ignore[arg-type]
            )  # fmt: skip
            return rows, time.perf_counter() - began

        full, full_s = build()
        reference_recipe = replace(full.recipe, numbers={}, values={}, weighted=False, deals=False, account=False)
        reference, reference_s = build(reference_recipe)
        print(
            f"training set: {len(full.frame):,} rows, {int(full.labels.sum()):,} positives; "
            f"{len(reference.spec.columns)} features before, {len(full.spec.columns)} now"
        )
        print(f"  build time: reference {reference_s:.2f} s, full {full_s:.2f} s, ratio {full_s / reference_s:.2f}")
        documents = {}
        for name, rows in (("reference", reference), ("full", full)):
            trained = train(rows.frame, rows.labels, rows.times, rows.spec)
            folds = train_cross_validated(rows.frame, rows.labels, rows.times, rows.spec)
            test = trained.report["test"]["model"]["roc_auc"]
            cv = folds.report["cross_validation"]["model"]["mean"]
            print(f"  {name:9}  time-ordered test ROC AUC {test:.4f}   5-fold ROC AUC {cv:.4f}")
            report = {"training_set": rows.summary(), **trained.report}
            documents[name] = predictions.artefact(trained, rows.recipe, report)
        timings = {}
        for name, document in documents.items():
            with workspace.unit_of_work() as uow:
                version, _ = predictions.store_model(uow, document)
                predictions.activate(uow, version)
            began = time.perf_counter()
            refreshed = predictions.refresh_all(workspace)
            timings[name] = time.perf_counter() - began
        print(
            f"online refresh of {refreshed:,} leads: reference {timings['reference']:.2f} s, "
            f"full {timings['full']:.2f} s, ratio {timings['full'] / timings['reference']:.2f}"
        )
        workspace.close()


if __name__ == "__main__":
    main()
