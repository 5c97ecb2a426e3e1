"""The batch side: rescore on an engine, backtest a candidate model, funnel analytics reports."""

import os
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qualify.entrypoints.cli.base import (
    DbOption,
    JsonOption,
    _errors,
    _fail,
    _print_json,
    _progress,
    _utc,
    _working,
    _workspace,
    app,
    err,
    out,
    report_app,
)


class BatchEngine(StrEnum):
    duckdb = "duckdb"
    postgres = "postgres"
    spark = "spark"


class ReplayEngine(StrEnum):
    """Where a backtest replays the leads."""

    local = "local"
    spark = "spark"


EngineOption = Annotated[
    BatchEngine, typer.Option(help="duckdb or spark (over a Parquet export), or postgres (the workspace's tables).")
]
ExportOption = Annotated[
    Path | None,
    typer.Option("--export", help="Read this Parquet export (qualify export parquet) instead of making one."),
]
AccountsOption = Annotated[
    bool,
    typer.Option(
        "--accounts",
        help="Accounts instead of leads: whether an account opens an opportunity within --within days of "
        "cutoffs every --every days (docs/accounts.md#predictive-and-backtest).",
    ),
]
EveryOption = Annotated[
    int, typer.Option("--every", min=1, help="With --accounts: days between the cutoffs the accounts are taken at.")
]


@app.command()
def rescore(
    engine: EngineOption = BatchEngine.duckdb,
    as_of: Annotated[
        datetime | None,
        typer.Option("--as-of", help="Score as of this instant (UTC unless a zone is given); default now."),
    ] = None,
    export: ExportOption = None,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write every lead's keys, scores and probability (as of --as-of) to this .parquet or .csv file.",
        ),
    ] = None,
    explain_file: Annotated[
        Path | None,
        typer.Option(
            "--explain", help="Write every score's contributions (rule by rule) to this .parquet or .csv file."
        ),
    ] = None,
    accounts_file: Annotated[
        Path | None,
        typer.Option(
            "--accounts-out",
            help="Write every account's fit, grade, engagement and covered roles (as of --as-of) to this .parquet or .csv file.",
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score every lead as of any instant with the batch evaluator (the same model, as one query),
    with the active predictive model's probability as of that instant (and every account's scores)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from qualify.adapters.csv_cells import safe_table
    from qualify.service.analytics.batch_scores import batch_scores
    from qualify.service.unit_of_work import utcnow

    with _workspace(db) as workspace, _errors():
        result = batch_scores(
            workspace,
            engine=engine.value,
            as_of=_utc(as_of) or utcnow(),
            export=export,
            explain=explain_file is not None,
            accounts=accounts_file is not None,
        )
    for path, table in (
        (out_file, result.table),
        (explain_file, result.explanations),
        (accounts_file, result.accounts),
    ):
        if path is None or table is None:
            continue
        if path.suffix == ".csv" and "roles" in table.column_names:  # a list: one cell of names
            table = table.set_column(
                table.column_names.index("roles"),
                "roles",
                pa.array(["; ".join(r or []) for r in table.column("roles").to_pylist()], pa.string()),
            )
        if path.suffix == ".csv":
            pacsv.write_csv(safe_table(table), path)  # no cell a spreadsheet would run as a formula
        else:
            pq.write_table(table, path)
    summary = (
        result.summary()
        | ({"out": str(out_file)} if out_file else {})
        | ({"explain": str(explain_file), "contributions": result.explanations.num_rows} if result.explanations else {})
        | ({"accounts_out": str(accounts_file)} if accounts_file else {})
    )
    if as_json:
        _print_json(summary)
        return
    grades = ", ".join(f"{g} {n:,}" for g, n in summary["grades"].items())
    out.print(
        f"Scored {summary['leads']:,} leads as of {result.as_of:%Y-%m-%d %H:%M} UTC on {result.engine} with model "
        f"{result.model_version}: grades {grades or '—'}; mean engagement {summary['engagement_mean']}."
    )
    if result.predictive_version is not None:
        out.print(
            f"Probability of {summary['probabilities']:,} leads (those created by then) with predictive model "
            f"{result.predictive_version}: mean {summary['probability_mean']}."
        )
    if out_file:
        out.print(f"Scores written to {out_file}.")
    if explain_file:
        out.print(f"{summary['contributions']:,} contributions written to {explain_file}.")
    if accounts_file:
        out.print(f"{summary['accounts']:,} accounts' scores written to {accounts_file}.")


@app.command()
def backtest(
    candidate: Annotated[str, typer.Argument(help="The candidate model: a YAML file, or a stored model version.")],
    against: Annotated[
        str, typer.Option("--against", help="The model to compare with: `active`, a stored version or a YAML file.")
    ] = "active",
    start: Annotated[
        datetime | None,
        typer.Option(
            "--from", help="Start of the period reported (UTC unless a zone is given); default the first lead."
        ),
    ] = None,
    end: Annotated[
        datetime | None, typer.Option("--to", help="End of the period; nothing after it is used. Default now.")
    ] = None,
    changes: Annotated[
        int, typer.Option("--changes", min=0, help="List at most this many leads whose stage would change.")
    ] = 20,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            help="Processes replaying leads at once, 2,000 leads per part; 0: one per CPU core. The report "
            "is the same whatever the number.",
        ),
    ] = 0,
    engine: Annotated[
        ReplayEngine,
        typer.Option(
            help="local: this machine's processes (--workers); spark: one Spark task per part, each "
            "executor reading the workspace's database. The report is the same.",
        ),
    ] = ReplayEngine.local,
    accounts: Annotated[
        bool,
        typer.Option(
            "--accounts",
            help="Backtest the models' account policy instead: their MQA bars applied to every account at "
            "cutoffs every --every days, against the opportunities opened within --within days after.",
        ),
    ] = False,
    within: Annotated[
        int, typer.Option("--within", min=1, help="With --accounts: days after a cutoff an opportunity counts.")
    ] = 30,
    every: EveryOption = 7,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replay the history under a candidate model and another, week by week: MQLs, precision, recall, lead time.

    Each lead's events are applied in the order they arrived and people's actions when they were
    taken; nothing after --to is used. Outcomes (SQL, opportunity, customer) are what really
    happened after each MQL (docs/batch.md#backtest). With --accounts, the account policy
    (docs/accounts.md#predictive-and-backtest).
    """
    from qualify.service.analytics.backtest import backtest as run_backtest
    from qualify.service.lifecycle.scoring_models import resolve_model

    with _workspace(db) as workspace, _errors():
        with workspace.unit_of_work(read_only=True) as uow:
            new, old = resolve_model(uow, candidate), resolve_model(uow, against)
        if accounts:
            if start is not None:
                _fail("--from cannot be used with --accounts: the cutoffs start with the first lead")
            _backtest_accounts(workspace, new, old, within, every, _utc(end), as_json)
            return
        with _progress("Replaying leads", not as_json) as progress:
            report = run_backtest(
                workspace, new, old, start=_utc(start), end=_utc(end), changes=changes,
                workers=workers or _cores(), engine=engine.value, progress=progress,
            )  # fmt: skip
    if as_json:
        _print_json(report.as_dict())
        return
    _show_backtest(report.as_dict())


def _precision(flagged: dict[str, Any]) -> str:
    """A flag's precision with its 95 % interval: `25.3% (20%–31%)`."""
    bounds = flagged["precision_95"]
    return f"{flagged['precision']:.1%} ({bounds[0]:.0%}–{bounds[1]:.0%})" if bounds else "—"


def _backtest_accounts(
    workspace: Any, new: Any, old: Any, within: int, every: int, end: datetime | None, as_json: bool
) -> None:
    from qualify.service.analytics.account_training import backtest_accounts

    with _working("Backtesting accounts", not as_json):
        report = backtest_accounts(workspace, new, old, within_days=within, every_days=every, end=end)
    if as_json:
        _print_json(report)
        return
    out.print(
        f"Account rows: {report['rows']:,} at {report['cutoffs']} cutoffs every {every} days; "
        f"{report['positives']:,} opened an opportunity within {within} days."
    )
    table = Table(
        "model", "MQA bar", "rows flagged", "accounts", "precision (95%)", "recall", "accounts caught",
        title="The MQA bar at every cutoff",
    )  # fmt: skip
    for role, found in report["models"].items():
        bar = ", ".join(f"{name} ≥ {value:g}" for name, value in found["bar"].items() if value is not None) or "none"
        table.add_row(
            f"{role} {found['version']}", bar, f"{found['flagged']:,}", f"{found['accounts_flagged']:,}",
            _precision(found), _percent(found["recall"]), f"{found['accounts_caught']:,} of {found['accounts_opened']:,}",
        )  # fmt: skip
    out.print(table)


def _cores() -> int:
    """The CPU cores this process may run on (a container's share, not the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


# The options of a point-in-time training set, shared by `train` and `learn-points`.
ConversionOption = Annotated[
    str, typer.Option("--target", help="What converting means: reaching sql, opportunity or customer.")
]
WithinOption = Annotated[int, typer.Option("--within", min=1, help="...within this many days after the cutoff.")]
CutoffOption = Annotated[
    str, typer.Option("--cutoff", help="When the prediction is made: created+DAYS (e.g. created+14) or mql.")
]
EndOption = Annotated[
    datetime | None, typer.Option("--end", help="End of the data (UTC); default the latest event or stage change.")
]
# Known outcomes without a stage history, shared by `train` and `evaluate`.
LabelOption = Annotated[
    str | None,
    typer.Option(
        "--label",
        help="Outcomes from this lead attribute (or field): 1/0, true/false, yes/no. Judged as of each "
        "lead's newest activity.",
    ),
]
LabelsOption = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        help="Outcomes from this CSV file: a lead column (email, external_id or lead), label, and optionally "
        "at (the instant to judge it at).",
    ),
]


@app.command()
def train(
    target: ConversionOption = "customer",
    within: WithinOption = 90,
    cutoff: CutoffOption = "created+14",
    end: EndOption = None,
    exclude_leaks: Annotated[
        bool, typer.Option("--exclude-leaks", help="Drop the features the leakage check names before training.")
    ] = False,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the trained model (JSON: model, calibration, recipe, report) here."),
    ] = None,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Store the model as a version in the workspace (qualify models).")
    ] = True,
    activate: Annotated[
        bool,
        typer.Option(
            "--activate",
            help="Make the stored model the active one and score every lead with it, if it ranks the judged "
            "leads better than the rule score (exit 1 and only stored otherwise).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="With --activate: activate even a model that does not beat the rule score.")
    ] = False,
    label: LabelOption = None,
    labels: LabelsOption = None,
    without: Annotated[
        list[str] | None,
        typer.Option(
            "--without",
            help="Leave this feature, family of features (event-properties, recency-weights, deals, "
            "account-roll-ups) or lead attribute out of the model (repeat for more).",
        ),
    ] = None,
    exclude: Annotated[
        Path | None,
        typer.Option(
            "--exclude",
            help="Keep the leads this file names out of training: CSV with an email, external_id or lead "
            "column, or one key (email, external id, #id) per line. Keys that name no lead are reported.",
        ),
    ] = None,
    accounts: AccountsOption = False,
    every: EveryOption = 7,
    engine: EngineOption = BatchEngine.duckdb,
    export: ExportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Learn the probability of converting from the history: a point-in-time training set, two
    candidate models chosen and calibrated on later leads, judged on the latest, beside the rule score.
    With --label or --labels, from known outcomes instead (judged by 5-fold cross-validation when
    they carry no dates). With --accounts, the probability that an account opens an opportunity,
    judged on held-out accounts beside the account policy and the lead-level scores."""
    import json

    from qualify.service.analytics.training import train_model

    if accounts:
        given = {"--label": label, "--labels": labels, "--without": without, "--exclude": exclude,
                 "--activate": activate, "--exclude-leaks": exclude_leaks}  # fmt: skip
        if named := [name for name, value in given.items() if value]:
            _fail(f"{', '.join(named)} cannot be used with --accounts (docs/accounts.md#predictive-and-backtest)")
        _train_accounts(within, every, _utc(end), engine, export, db, out_file, as_json)
        return

    with _workspace(db) as workspace, _errors(), _working("Training", not as_json) as step:
        result = train_model(
            workspace, target=target, within_days=within, cutoff=cutoff, end=_utc(end), exclude_leaks=exclude_leaks,
            store=store, activate=activate, engine=engine.value, export=export, label=label, labels_file=labels,
            without=tuple(without or ()), exclude_file=exclude, force=force, progress=step,
        )  # fmt: skip
    if out_file is not None:
        out_file.write_text(json.dumps(result.document, default=str) + "\n", encoding="utf-8")
    if "labels" in result.report:
        _label_problems(result.report["labels"])
    if "exclude" in result.report:
        _exclude_problems(result.report["exclude"])
    if as_json:
        _print_json(result.as_dict() | ({"out": str(out_file)} if out_file else {}))
        return
    report, version = result.report, result.version
    summary = report["training_set"]
    if "labels" in report:
        read = report["labels"]
        out.print(
            f"Training set: {summary['rows']:,} leads with a known outcome ({read['source']}: "
            f"{summary['positives']:,} positive), features as of {summary['cutoff']}; "
            f"{read['skipped']:,} rows not usable.",
        )
    else:
        early = summary.get("known_early", 0)
        out.print(
            f"Training set: {summary['rows']:,} leads (cutoff {cutoff}; reached {target} within {within} days: "
            f"{summary['positives']:,}"
            + (f", {early:,} of them before their {within} days were over" if early else "")
            + f"); left out {summary['left_out']['censored']:,} not yet judged and "
            f"{summary['left_out']['reached_before_cutoff']:,} converted before the cutoff."
        )
        censored = summary["left_out"]["censored"]
        if early and censored:
            err.print(
                f"[yellow]note:[/] {early:,} positives converted before their {within} days were over and are kept, "
                f"while {censored:,} leads whose days are not over have no outcome yet: the newest rows lean "
                "positive (docs/predictive.md, point-in-time training sets).",
                soft_wrap=True,
            )
    if "exclude" in report:
        named = report["exclude"]
        out.print(
            f"Excluded: {named['excluded']:,} leads kept out of training ({named['leads']:,} named in "
            f"{named['file']}; {named['skipped']:,} keys not found)."
        )
    for leak in report["leakage"]:
        out.print(
            f"[yellow]leakage:[/] {leak['feature']} alone ranks the outcome with AUC {leak['auc']}: filled in after it?"
        )
    choice = report["choice"]
    folded = report["validation"]["method"] == "cross-validation"
    where = f"mean over {report['validation']['folds']} folds" if folded else "on the choice part"
    scores = choice["auc"] if isinstance(choice["auc"], dict) else {choice["chosen"]: choice["auc"]}
    ranked = ", ".join(f"{name} {auc:.3f}" for name, auc in sorted(scores.items(), key=lambda item: -item[1]))
    out.print(
        f"Chosen: {choice['chosen']}, the better ranking of the candidates (ROC AUC {where}: {ranked}); "
        f"calibrated with {report['calibration']}."
    )
    table = Table(
        "out of fold" if folded else "on the newest leads", "ROC AUC", "PR AUC", "Brier", "ECE",
        "top 10%: lift / capture", title="Metrics",
    )  # fmt: skip
    for name, metrics in report["test"].items():
        top = metrics["top"][0]
        table.add_row(
            name,
            _num2(metrics["roc_auc"]),
            _num2(metrics["pr_auc"]),
            _num2(metrics.get("brier")),
            _num2(metrics.get("ece")),
            f"{top['lift'] or 0:.2f} / {top['capture'] or 0:.0%}",
        )
    out.print(table)
    if folded:
        spread = report["cross_validation"]["model"]
        out.print(f"ROC AUC per fold: {spread['mean']:.4f} ± {spread['std']:.4f} (mean ± standard deviation).")
    if result.stored:
        state = (
            "stored and active: every lead scored" if result.active else "stored; `qualify models activate` to use it"
        )
        out.print(f"Model {version} {state}.")
    if out_file:
        out.print(f"Model written to {out_file}.")
    if result.refused:
        _fail(f"not activated: {result.refused}. Add --force to activate it anyway.", code=1)


def _train_accounts(
    within: int, every: int, end: datetime | None, engine: BatchEngine, export: Path | None, db: str | None,
    out_file: Path | None, as_json: bool,
) -> None:  # fmt: skip
    import json

    from qualify.service.analytics.account_training import train_accounts

    with _workspace(db, reading=True) as workspace, _errors(), _working("Training", not as_json) as step:
        result = train_accounts(
            workspace, within_days=within, every_days=every, end=end, engine=engine.value, export=export, progress=step
        )
    if out_file is not None:
        out_file.write_text(json.dumps(result.document, default=str) + "\n", encoding="utf-8")
    report = result.report
    if as_json:
        _print_json(report | ({"out": str(out_file)} if out_file else {}))
        return
    rows = report["training_set"]
    out.print(
        f"Account rows: {rows['rows']:,} ({rows['accounts']:,} accounts at {rows['cutoffs']} cutoffs every {every} "
        f"days, {rows['first_cutoff'][:10]} to {rows['last_cutoff'][:10]}); opened an opportunity within "
        f"{within} days: {rows['positives']:,}; left out {rows['left_out']['in_a_deal']:,} already in a deal."
    )
    choice = report["choice"]
    ranked = ", ".join(f"{name} {auc:.3f}" for name, auc in sorted(choice["auc"].items(), key=lambda item: -item[1]))
    out.print(
        f"Chosen: {choice['chosen']} (mean ROC AUC over {report['validation']['folds']} folds of held-out "
        f"accounts: {ranked}); calibrated with {report['calibration']}."
    )
    table = Table("on held-out accounts", "ROC AUC (mean ± sd of folds)", "PR AUC", title="Metrics")
    for name, metrics in report["test"].items():
        if "uncalibrated" in name:
            continue
        spread = report["cross_validation"][name]
        table.add_row(name, f"{spread['mean']:.3f} ± {spread['std']:.3f}", _num2(metrics["pr_auc"]))
    out.print(table)
    at = report["at_mqa_threshold"]
    table = Table("flagging", "rows", "opened", "precision (95%)", "recall", title="At the MQA threshold")
    for name, flag in at.items():
        if name == "flagged":
            continue
        table.add_row(name, f"{flag['flagged']:,}", f"{flag['opened']:,}", _precision(flag), _percent(flag["recall"]))
    out.print(table)
    if out_file:
        out.print(f"Model written to {out_file} (account models are judged and written, not served yet).")


@app.command("learn-points")
def learn_points_command(
    out_file: Annotated[Path, typer.Option("--out", help="Write the learned scoring model (YAML) here.")],
    target: ConversionOption = "customer",
    within: WithinOption = 90,
    cutoff: CutoffOption = "created+14",
    end: EndOption = None,
    engine: EngineOption = BatchEngine.duckdb,
    export: ExportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fit a points scorecard from the history and write it as a scoring model YAML to read and edit,
    judged beside the active model on the newest leads (which it did not learn from)."""
    from qualify.service.analytics.learned_points import learn_scorecard

    with _workspace(db) as workspace, _errors(), _working("Learning points", not as_json):
        learned = learn_scorecard(
            workspace, target=target, within_days=within, cutoff=cutoff, end=_utc(end), engine=engine.value,
            export=export,
        )  # fmt: skip
    out_file.write_text(learned.document, encoding="utf-8")
    report = {"out": str(out_file)} | learned.report
    if as_json:
        _print_json(report)
        return
    held, judged = report["held_out"], report["test"]
    out.print(
        f"Learned points from {learned.fitting_rows:,} leads; written to {out_file} "
        f"(model {report['learned_model']}, {learned.fit_rules} fit rules, "
        f"{learned.engagement_rules} engagement rules)."
    )
    table = Table(
        "fit + engagement", "ROC AUC", "PR AUC", "top 10%: lift / capture",
        title=f"On the newest {held['rows']:,} leads ({held['positives']:,} reached {target} within {within} days)",
    )  # fmt: skip
    current = f"active model {report['current_model']}"
    for name, metrics in (("learned points", judged["learned"]), (current, judged["current"])):
        top = metrics["top"][0]
        table.add_row(
            name, _num2(metrics["roc_auc"]), _num2(metrics["pr_auc"]),
            f"{top['lift'] or 0:.2f} / {top['capture'] or 0:.0%}",
        )  # fmt: skip
    out.print(table)
    out.print(f"Check it with `qualify model validate {out_file}` and `qualify backtest {out_file}` before activating.")


class AdviceScore(StrEnum):
    probability = "probability"
    engagement = "engagement"
    rule = "rule"


@app.command()
def advise(
    capacity: Annotated[float | None, typer.Option("--capacity", min=0, help="Leads sales can work per week.")] = None,
    miss_cost: Annotated[
        float | None, typer.Option("--miss-cost", min=0, help="Cost of a missed converter, in units of a wasted call.")
    ] = None,
    call_cost: Annotated[float, typer.Option("--call-cost", min=0, help="Cost of a wasted call.")] = 1.0,
    score: Annotated[
        AdviceScore,
        typer.Option(
            "--score",
            help="The score to put the line on: the active predictive model's probability, the engagement "
            "score (leads of grades A–C), or fit + engagement.",
        ),
    ] = AdviceScore.probability,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="What converting means: sql, opportunity or customer (default: the predictive model's, else customer).",
        ),
    ] = None,
    within: Annotated[
        int | None, typer.Option("--within", min=1, help="...within this many days (default: the model's, else 90).")
    ] = None,
    cutoff: Annotated[
        str | None,
        typer.Option(
            "--cutoff", help="When the decision is made: created+DAYS or mql (default: the model's, else created+14)."
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            "--since",
            help="Judge on leads whose cutoff is at or after this (UTC); default: for the probability, the start "
            "of the model's test period (leads it did not learn from), else every lead.",
        ),
    ] = None,
    engine: EngineOption = BatchEngine.duckdb,
    export: ExportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recommend an MQL threshold from sales capacity (--capacity) or the cost of a miss against a
    wasted call (--miss-cost), with the precision, recall and weekly volume it implies on past leads."""
    from qualify.service.analytics.advice import EITHER, advise_threshold

    if (capacity is None) == (miss_cost is None):
        _fail(EITHER)
    with _workspace(db) as workspace, _errors(), _working("Judging thresholds", not as_json):
        found = advise_threshold(
            workspace, capacity=capacity, miss_cost=miss_cost, call_cost=call_cost, score=score.value, target=target,
            within_days=within, cutoff=cutoff, since=_utc(since), engine=engine.value, export=export,
            note=lambda text: err.print(f"[yellow]note:[/] {text}"),
        )  # fmt: skip
    advice, target, within = found.report, found.target, found.within_days
    if as_json:
        _print_json(advice)
        return
    chosen = advice["chosen"]
    out.print(
        f"On {advice['leads']:,} past leads over {advice['weeks']:g} weeks ({advice['converted']:,} reached {target} "
        f"within {within} days), {advice['rule']}:"
    )
    if chosen["threshold"] is None:
        out.print(
            "  flag no one: every threshold flags more than the capacity."
            if capacity is not None
            else "  flag no one: every threshold costs more than it saves."
        )
    else:
        line = _threshold(score, chosen["threshold"])
        out.print(
            f"  MQL when {score.value} ≥ [bold]{line}[/]: {_per_week(chosen['volume_per_week'])} MQLs a week, "
            f"precision {_percent(chosen['precision'])}, recall {_percent(chosen['recall'])}."
        )
        out.print(f"  To use it: {_how_to_set(score, line)}", soft_wrap=True)
    if "break_even_probability" in advice and score is AdviceScore.probability:
        out.print(f"  (a calibrated probability breaks even at {advice['break_even_probability']:.2f})")
    costs = miss_cost is not None
    columns = ["threshold", "MQLs / week", "precision (95%)", "recall", *(["cost / week"] if costs else [])]
    table = Table(*columns, title="Around it")
    for point in advice["around"]:
        interval = point["precision_95"]
        table.add_row(
            _threshold(score, point["threshold"]),
            _per_week(point["volume_per_week"]),
            f"{_percent(point['precision'])} ({_percent(interval[0])}–{_percent(interval[1])})" if interval else "—",
            _percent(point["recall"]),
            *([f"{point['cost_per_week']:,.1f}"] if costs else []),
        )
    out.print(table)


def _threshold(score: AdviceScore, value: float) -> str:
    """A threshold as the policy would take it: a probability to 2 decimals, a score to 1."""
    return f"{value:.2f}" if score is AdviceScore.probability else f"{value:.1f}"


def _per_week(volume: float) -> str:
    """Leads a week as people say it: whole above 10, one decimal below."""
    return f"{volume:,.0f}" if volume >= 10 else f"{volume:.1f}"


def _how_to_set(score: AdviceScore, line: str) -> str:
    """What to write in the scoring model to make this threshold the MQL line."""
    if score is AdviceScore.probability:
        return (
            f"in the scoring model, policy.mql.probability: {{A: {line}, B: {line}, C: {line}}} and combine: any "
            "(a lead qualifies on its probability alone), then `qualify model activate` (docs/scoring-model.md)."
        )
    if score is AdviceScore.engagement:
        return (
            f"in the scoring model, policy.mql.thresholds: {{A: {line}, B: {line}, C: {line}}} (or lower for A, "
            "higher for C), then `qualify model activate` (docs/scoring-model.md)."
        )
    return (
        "the policy has no line on fit + engagement: rank the queue by it, or run again with --score engagement "
        "for a threshold the policy takes."
    )


def _exclude_problems(named: dict[str, Any]) -> None:
    """The keys of an --exclude file that named no lead, on standard error: counted, the first listed."""
    _skipped_rows(
        named,
        f"{named['skipped']:,} of {named['read']:,} keys in {named['file']} name no lead",
        lambda p: f"line {p['line']}, field {p['field']}: {p['value']!r}",
    )


def _label_problems(read: dict[str, Any]) -> None:
    """The outcome rows that could not be used, on standard error: counted, the first ones listed."""
    _skipped_rows(
        read,
        f"{read['skipped']:,} of {read['read']:,} outcome rows not used ({read['source']})",
        _outcome_row,
    )


def _outcome_row(problem: dict[str, Any]) -> str:
    where = f"line {problem['line']}" if "line" in problem else f"lead {problem['lead']}"
    return f"{where}, field {problem['field']}: {problem['value']!r}: {problem['reason']}"


def _skipped_rows(summary: dict[str, Any], headline: str, describe: Callable[[dict[str, Any]], str]) -> None:
    """A note on standard error for rows a file gave that could not be used: `headline`, the count
    per reason, the first ten described, and how many more there are."""
    if not summary["skipped"]:
        return
    err.print(
        f"[yellow]note:[/] {headline}: " + ", ".join(f"{reason} {n:,}" for reason, n in summary["problems"].items()),
        soft_wrap=True,
    )
    for problem in summary["examples"][:10]:
        err.print(f"  {describe(problem)}", soft_wrap=True)
    if summary["skipped"] > 10:
        err.print(f"  … and {summary['skipped'] - 10:,} more (--json lists {len(summary['examples'])})")


@app.command()
def evaluate(
    label: LabelOption = None,
    labels: LabelsOption = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Also judge this candidate scoring model (YAML).")
    ] = None,
    folds: Annotated[
        int,
        typer.Option("--folds", min=2, help="Folds to judge a predictive model out of fold on leads it learnt from."),
    ] = 5,
    exclude: Annotated[
        Path | None,
        typer.Option(
            "--exclude",
            help="Judge without the leads this file names (as train --exclude reads it: CSV with an email, "
            "external_id or lead column, or one key per line). Keys that name no lead are reported.",
        ),
    ] = None,
    engine: EngineOption = BatchEngine.duckdb,
    export: ExportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Judge the scores against known outcomes: the active scoring model, a candidate (--model) and the
    active predictive model, on the same leads at the same instants (ROC AUC, PR AUC, calibration,
    lift and capture, with 95% intervals)."""
    from qualify.domain.model_loader import load_model
    from qualify.service.analytics.evaluation import evaluate_scores

    with _workspace(db) as workspace, _errors(), _working("Evaluating", not as_json):
        candidate = load_model(model.read_text(encoding="utf-8"), str(model)) if model is not None else None
        result = evaluate_scores(
            workspace, label=label, labels_file=labels, candidate=candidate, engine=engine.value, export=export,
            folds=folds, exclude_file=exclude,
        )  # fmt: skip
    report = result.report
    _label_problems(report["labels"])
    if "exclude" in report:
        _exclude_problems(report["exclude"])
    if as_json:
        _print_json(report)
        return
    _show_evaluation(report)


def _interval(value: float | None, bounds: list[float] | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    shown = f"{value:.{digits}f}"
    return shown if not bounds else f"{shown}\n{bounds[0]:.{digits}f}–{bounds[1]:.{digits}f}"


def _show_evaluation(report: dict[str, Any]) -> None:
    """The figures in 80 columns: one column per score, intervals under the values."""
    read = report["labels"]
    out.print(
        f"Judged on {report['leads']:,} leads ({report['positives']:,} positive, "
        f"{report['positives'] / max(report['leads'], 1):.1%}; {read['source']}), scored as of "
        f"{report['instants']}.",
    )
    if "exclude" in report:
        named = report["exclude"]
        out.print(f"Excluded: {named['excluded']:,} leads not judged ({named['leads']:,} named in {named['file']}).")
    scores = report["scores"]
    names = {"rules": "active rules", "candidate": "candidate", "predictive": "probability"}
    table = Table("95% intervals under", *(f"{names[k]}\n{v['model']}" for k, v in scores.items()))
    rows: list[tuple[str, list[str]]] = [
        ("ROC AUC", [_interval(v["roc_auc"], v.get("roc_auc_95")) for v in scores.values()]),
        ("PR AUC", [_interval(v["pr_auc"], v.get("pr_auc_95")) for v in scores.values()]),
        ("ECE", [_interval(v.get("ece"), v.get("ece_95")) for v in scores.values()]),
        ("Brier", [_interval(v.get("brier"), v.get("brier_95")) for v in scores.values()]),
    ]
    shares = [top["top"] for top in next(iter(scores.values()))["top"]]
    for j, share in enumerate(shares):
        for what, digits in (("lift", 2), ("capture", 2)):
            cells = [_interval(v["top"][j][what], v["top"][j].get(f"{what}_95"), digits) for v in scores.values()]
            rows.append((f"top {share:.0%}: {what}", cells))
    for name, cells in rows:
        table.add_row(name, *cells)
    out.print(table)
    predictive = scores.get("predictive")
    if predictive is None:
        out.print("No active predictive model: `qualify train --activate` to judge a probability too.")
        return
    if predictive["judged"] == "out of fold":
        spread = predictive["cross_validation"]
        out.print(
            f"The predictive model learnt from {predictive['learnt_from_these']:,} of these leads: judged out of "
            f"fold ({predictive['folds']} refits of its kind and features); ROC AUC per fold {spread['mean']:.4f} "
            f"± {spread['std']:.4f}.",
        )
    elif predictive["learnt_from_these"] is None:
        out.print("The predictive model does not record which leads it learnt from: judged as stored.")
    reliability = Table("probability", "leads", "predicted", "observed", title="Reliability of the probability")
    for row in predictive["calibration"]:
        low, high = row["bin"]
        reliability.add_row(
            f"{low:.1f}–{high:.1f}",
            f"{row['count']:,}",
            "—" if row["predicted"] is None else f"{row['predicted']:.3f}",
            "—" if row["observed"] is None else f"{row['observed']:.3f}",
        )
    out.print(reliability)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _num2(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _pct(rate: dict[str, Any]) -> str:
    if rate["rate"] is None:
        return "—"
    low, high = rate["interval_95"]
    return f"{rate['rate']:.1%} [{low:.0%}–{high:.0%}]"


def _days(spread: dict[str, Any]) -> str:
    return "—" if spread["median"] is None else f"{spread['median']:.1f} / {spread['p90']:.1f}"


def _signed(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value * 100:+.1f} pts" if percent else f"{value:+,.1f}" if isinstance(value, float) else f"{value:+,}"


def _show_backtest(report: dict[str, Any]) -> None:
    a, c, d = report["models"]["against"], report["models"]["candidate"], report["differences"]
    out.print(
        f"Backtest {report['start'][:10]} → {report['end'][:10]}: {report['leads']:,} leads, {report['events']:,} events."
    )
    table = Table("", f"against {a['version']}", f"candidate {c['version']}", "difference", title="In total")
    table.add_row("MQLs", f"{a['mqls']:,}", f"{c['mqls']:,}", _signed(d["mqls"]))
    for stage in ("sql", "opportunity", "customer"):
        table.add_row(
            f"MQL → {stage} (precision)", _pct(a["precision"][stage]), _pct(c["precision"][stage]),
            _signed(d["precision"][stage], percent=True),
        )  # fmt: skip
    table.add_row(
        f"customers flagged before converting (recall, of {a['customers']:,})",
        _pct(a["recall"]), _pct(c["recall"]), _signed(d["recall"], percent=True),
    )  # fmt: skip
    table.add_row(
        "lead time, days (median / p90)", _days(a["lead_time_days"]), _days(c["lead_time_days"]),
        _signed(d["lead_time_median_days"]),
    )  # fmt: skip
    out.print(table)
    weeks = Table(
        "week", "MQLs", "→ sql", "→ customer", "customers", "recall", title="Week by week (against / candidate)"
    )
    for week in report["weeks"]:
        wa, wc = week["against"], week["candidate"]
        weeks.add_row(
            week["week"],
            f"{wa['mqls']} / {wc['mqls']}",
            f"{wa['precision']['sql']['count']} / {wc['precision']['sql']['count']}",
            f"{wa['precision']['customer']['count']} / {wc['precision']['customer']['count']}",
            str(wa["customers"]),
            f"{wa['recall']['count']} / {wc['recall']['count']}",
        )
    out.print(weeks)
    moves = ", ".join(f"{move} {n:,}" for move, n in d["stage_changes_by_move"].items()) or "none"
    out.print(
        f"MQL in the period under the candidate only: {d['mql_only_candidate']:,}; under {a['version']} only: "
        f"{d['mql_only_against']:,}. Stage at the end differs for {d['stage_changes']:,} leads ({moves})."
    )
    if report["changes"]:
        listed = Table("lead", "stage now → candidate", "fit", "engagement", title="Leads whose stage would change")
        for row in report["changes"]:
            old, new = row["against"], row["candidate"]
            listed.add_row(
                f"#{row['lead_id']}",
                f"{old['stage']} → {new['stage']}",
                f"{old['fit']:.0f} → {new['fit']:.0f}",
                f"{old['engagement']:.1f} → {new['engagement']:.1f}",
            )
        out.print(listed)
    check = report["history_check"]
    if check["agreement"] is not None:
        out.print(
            f"Replay check: {a['version']} replayed gives {check['replayed_mqls']:,} MQL entries in the period, the "
            f"history records {check['recorded_mqls']:,}; {check['agreement']:.1%} agree to the minute."
        )


class CohortKey(StrEnum):
    month = "month"
    source = "source"
    channel = "channel"
    campaign = "campaign"


class Target(StrEnum):
    sql = "sql"
    opportunity = "opportunity"
    customer = "customer"


class ItemKind(StrEnum):
    kind = "kind"
    content = "content"


class Among(StrEnum):
    leads = "leads"
    mql = "mql"


TargetOption = Annotated[
    Target, typer.Option("--target", help="The conversion: reaching sql, opportunity or customer.")
]
AmongOption = Annotated[
    Among, typer.Option("--among", help="Compare among all leads, or among the leads that reached MQL.")
]
SupportOption = Annotated[
    int, typer.Option("--min-support", min=1, help="Leave out items fewer leads than this engaged with.")
]


def _report(db: str | None, engine: BatchEngine, export: Path | None, use: Callable[[Any], Any], as_json: bool) -> Any:
    """Run one analytics report on the engine chosen; print it as JSON and return None with
    --json, else return it for the table."""
    from qualify.service.analytics.batch_scores import on_engine

    with _workspace(db) as workspace, _errors(), _working(f"Computing the report on {engine.value}", not as_json):
        data = on_engine(workspace, engine.value, export, use)
    if as_json:
        _print_json(data)
        return None
    return data


def _share(rate: dict[str, Any]) -> str:
    return "" if rate["rate"] is None else f"{rate['count']:,} ({rate['rate']:.0%})"


@report_app.command("cohorts")
def report_cohorts(
    by: Annotated[
        CohortKey, typer.Option("--by", help="month (of creation), source, channel or campaign (first touch).")
    ] = CohortKey.month,
    engine: EngineOption = BatchEngine.duckdb,
    export: ExportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Leads per cohort and the share that reached MQL, SQL, opportunity and customer, with 95% intervals."""
    from qualify.analytics.reports import cohorts

    rows = _report(db, engine, export, lambda sources: cohorts(sources, by.value), as_json)
    if rows is None:
        return
    table = Table(by.value, "leads", "→ mql", "→ sql", "→ opportunity", "→ customer", title=f"Cohorts by {by.value}")
    for row in rows:
        table.add_row(
            str(row["cohort"]),
            f"{row['leads']:,}",
            *(_share(row[s]) for s in ("mql", "sql", "opportunity", "customer")),
        )
    out.print(table)


@report_app.command("velocity")
def report_velocity(
    engine: EngineOption = BatchEngine.duckdb,
    export: ExportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Days spent in each stage (median, p90) and days from a lead's creation to each funnel stage."""
    from qualify.analytics.reports import velocity

    data = _report(db, engine, export, velocity, as_json)
    if data is None:
        return
    table = Table(
        "stage",
        "stays ended",
        "still there",
        "median days",
        "p90 days",
        "reached",
        "days from creation (median / p90)",
        title="Velocity",
    )
    for stage, stay in data["days_in_stage"].items():
        reach = data["days_to_reach"].get(stage)
        table.add_row(
            stage,
            f"{stay['completed']:,}",
            f"{stay['open']:,}",
            _num(stay["median"]),
            _num(stay["p90"]),
            f"{reach['leads']:,}" if reach else "",
            f"{_num(reach['median'])} / {_num(reach['p90'])}" if reach and reach["leads"] else "",
        )
    out.print(table)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


class SourceKey(StrEnum):
    source = "source"
    channel = "channel"
    campaign = "campaign"


@report_app.command("sources")
def report_sources(
    by: Annotated[
        SourceKey, typer.Option("--by", help="source, channel or campaign (first touch).")
    ] = SourceKey.source,
    engine: EngineOption = BatchEngine.duckdb,
    export: ExportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per source: leads, MQLs, what sales decided about them (acceptance, top rejection reason), customers."""
    from qualify.analytics.reports import sources_report

    rows = _report(db, engine, export, lambda sources: sources_report(sources, by.value), as_json)
    if rows is None:
        return
    table = Table(
        by.value,
        "leads",
        "→ mql",
        "sales decisions",
        "accepted",
        "top rejection",
        "→ customer",
        title=f"Leads by {by.value}, as sales judged them",
    )
    for row in rows:
        accepted = row["accepted"]
        top = row["top_rejection_reason"]
        table.add_row(
            str(row["cohort"]),
            f"{row['leads']:,}",
            _share(row["mql"]),
            f"{row['decisions']:,}",
            ""
            if accepted["rate"] is None
            else f"{accepted['rate']:.0%} ({accepted['interval_95'][0]:.0%}–{accepted['interval_95'][1]:.0%})",
            f"{top['reason']} ({top['count']})" if top else "",
            _share(row["customer"]),
        )
    out.print(table)


@report_app.command("content")
def report_content(
    by: Annotated[
        ItemKind, typer.Option("--by", help="content (kind and what it was about) or kind (event type).")
    ] = ItemKind.content,
    target: TargetOption = Target.customer,
    among: AmongOption = Among.leads,
    min_support: SupportOption = 20,
    steps: Annotated[int, typer.Option("--steps", min=1, max=12, help="Steps per path in the path comparison.")] = 4,
    top: Annotated[int, typer.Option("--top", min=1, help="Show this many items and paths.")] = 15,
    engine: EngineOption = BatchEngine.duckdb,
    export: ExportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which content and behaviour converters engaged with before converting: lift with 95% intervals,
    and the paths of converters beside those of leads who dropped off."""
    from qualify.analytics.reports import content_influence, paths

    def both(sources: Any) -> dict[str, Any]:
        influence = content_influence(
            sources, by=by.value, target=target.value, among=among.value, min_support=min_support
        )
        return influence | {"paths": paths(sources, target=target.value, steps=steps, top=top)}

    data = _report(db, engine, export, both, as_json)
    if data is None:
        return
    converted = data["converted"]
    out.print(
        f"{converted['count']:,} of {data['leads']:,} leads ({'all' if among is Among.leads else 'that reached MQL'}) "
        f"reached {target.value}. Items engaged by fewer than {min_support} leads left out: {data['items_below_support']:,}."
    )
    table = Table(title=f"Influence by {by.value}")
    table.add_column("item", overflow="fold", ratio=3)  # a long name wraps whole: it is never cut
    for name in ("engaged", f"→ {target.value} if engaged", "if not", "lift (95%)"):
        table.add_column(name, ratio=1)
    for row in data["items"][:top]:
        interval = row["interval_95"]
        lift = "—" if row["lift"] is None else f"{row['lift']:.1f}"
        table.add_row(
            row["item"],
            f"{row['engaged']:,}",
            _share(row["engaged_converted"]),
            _share(row["others_converted"]),
            lift + (f" ({interval[0]:.1f}–{interval[1]:.1f})" if interval else ""),
        )
    out.print(table)
    journeys = data["paths"]
    groups = journeys["groups"]
    out.print(
        f"Paths (first {steps} steps by kind): {groups['converted']['leads']:,} converted (median "
        f"{_num(groups['converted']['events_median'])} events, {_num(groups['converted']['days_median'])} days), "
        f"{groups['dropped_off']['leads']:,} dropped off after MQL (median {_num(groups['dropped_off']['events_median'])} "
        f"events, {_num(groups['dropped_off']['days_median'])} days)."
    )
    path_table = Table(title="Paths of converters and of leads who dropped off")
    path_table.add_column("path", overflow="fold", ratio=3)
    path_table.add_column("converted", ratio=1)
    path_table.add_column("dropped off", ratio=1)
    for row in journeys["paths"]:
        path_table.add_row(
            row["path"],
            f"{row['converted']:,} ({row['converted_share'] or 0:.0%})",
            f"{row['dropped_off']:,} ({row['dropped_off_share'] or 0:.0%})",
        )
    out.print(path_table)


@report_app.command("lookalikes")
def report_lookalikes(
    target: TargetOption = Target.customer,
    by: Annotated[
        ItemKind, typer.Option("--by", help="content (kind and what it was about) or kind (event type).")
    ] = ItemKind.content,
    among: AmongOption = Among.leads,
    min_support: SupportOption = 20,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many leads to list.")] = 25,
    engine: EngineOption = BatchEngine.duckdb,
    export: ExportOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Leads not yet with sales who engaged with what converters engaged with, ranked."""
    from qualify.analytics.reports import lookalikes

    def ranked(sources: Any) -> dict[str, Any]:
        return lookalikes(
            sources, target=target.value, by=by.value, among=among.value, min_support=min_support, limit=limit
        )

    data = _report(db, engine, export, ranked, as_json)
    if data is None:
        return
    table = Table(
        "lead",
        "stage",
        "fit",
        "engagement",
        "score",
        "items",
        "because",
        title=f"Lookalikes of leads that reached {target.value}",
    )
    for row in data["leads"]:
        table.add_row(
            f"#{row['lead_id']} {row['email'] or ''}",
            row["stage"],
            f"{row['fit']:.0f}",
            f"{row['engagement']:.1f}",
            f"{row['score']:.2f}",
            f"{row['matched_items']:,}",
            ", ".join(f"{b['item']} ×{b['lift']:.1f}" for b in row["because"]),
        )
    out.print(table)
    if not data["leads"]:
        out.print(f"No lookalikes: {data['items_used']} items with a lift above 1 and enough support.")
