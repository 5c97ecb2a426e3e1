"""Commands on scoring models (validate, activate, show) and on predictive models (list, show,
activate, deactivate)."""

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qualify.domain.errors import ModelError
from qualify.entrypoints.cli.base import (
    DbOption,
    JsonOption,
    _errors,
    _fail,
    _print_json,
    _progress,
    _workspace,
    model_app,
    out,
    predictive_app,
)

# --- models --------------------------------------------------------------------------------------


@model_app.command("validate")
def model_validate(
    path: Annotated[Path, typer.Argument(help="The scoring model YAML file.")],
    as_json: JsonOption = False,
) -> None:
    """Check a scoring model; every problem is printed with its line and field."""
    try:
        from qualify.domain.model_loader import load_model

        scoring = load_model(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        _fail(f"no such file: {path}")
    except ModelError as error:
        if as_json:
            _print_json({"valid": False, "problems": [p.as_dict() for p in error.problems]})
            raise typer.Exit(1) from None
        _fail(error.render(), 1)
    summary = {
        "valid": True,
        "name": scoring.name,
        "version": scoring.version,
        "personas": [p.name for p in scoring.fit.personas],
        "engagement_rules": len(scoring.engagement_rules),
        "disqualify_rules": len(scoring.disqualify),
    }
    if as_json:
        _print_json(summary)
        return
    out.print(
        f"{path}: valid. {scoring.name} ({scoring.version}): {len(scoring.fit.personas)} personas, {len(scoring.engagement_rules)} engagement rules, {len(scoring.disqualify)} disqualify rules."
    )


@model_app.command("activate")
def model_activate(
    path: Annotated[Path, typer.Argument(help="The scoring model YAML file.")],
    db: DbOption = None,
    rescore: Annotated[
        bool, typer.Option("--rescore/--no-rescore", help="Rescore every lead with the new model right away.")
    ] = True,
) -> None:
    """Validate a scoring model, store it as a version and make it the active one."""
    from qualify.service.lifecycle.rescoring import rescore_all
    from qualify.service.lifecycle.scoring_models import activate_model

    with _workspace(db) as workspace:
        with _errors():
            document = path.read_text(encoding="utf-8")
        with workspace.unit_of_work() as uow:
            scoring, changed = activate_model(uow, document, str(path))
        if not changed:
            out.print(f"{scoring.name} ({scoring.version}) is already the active model.")
            return
        out.print(f"Activated {scoring.name} ({scoring.version}).")
        if rescore:
            with _progress("Rescoring leads") as progress:
                summary = rescore_all(workspace, progress=progress)
            out.print(f"Rescored {summary.leads:,} leads; {summary.moves:,} stage changes.")


@model_app.command("show")
def model_show(
    history: Annotated[
        bool, typer.Option("--history", help="List every stored version instead of the active document.")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the active scoring model's YAML (or, with --history, every version)."""
    from qualify.service.lifecycle.scoring_models import active_document, model_history

    with _workspace(db) as workspace, workspace.unit_of_work(read_only=True) as uow, _errors():
        versions = model_history(uow)
        version, document = active_document(uow)
    if as_json:
        _print_json(
            {
                "active": version,
                "document": document,
                "versions": [asdict(v) for v in versions],
            }
        )
        return
    if history:
        table = Table("version", "name", "created", "activated", "active")
        for v in versions:
            table.add_row(
                v.version,
                v.name,
                f"{v.created_at:%Y-%m-%d %H:%M}",
                f"{v.activated_at:%Y-%m-%d %H:%M}" if v.activated_at else "",
                "yes" if v.active else "",
            )
        out.print(table)
        return
    sys.stdout.write(f"# active model version {version}\n{document}")


# --- predictive models ---------------------------------------------------------------------------


def _metric(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "–"


@predictive_app.callback()
def models_list(ctx: typer.Context, db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the stored predictive models: what each learnt from and how it did on the newest leads."""
    if ctx.invoked_subcommand is not None:
        return
    from qualify.service.predictions.serving import list_models

    with _workspace(db) as workspace, workspace.unit_of_work(read_only=True) as uow, _errors():
        versions = list_models(uow)
    if as_json:
        _print_json({"models": [v.as_dict() for v in versions]})
        return
    if not versions:
        out.print("No predictive models yet: `qualify train` learns one.")
        return
    table = Table(
        "version", "predicts", "learnt from", "AUC (rule score)", "Brier", "active",
        title="Predictive models: metrics on the newest leads, unseen in training",
    )  # fmt: skip
    for v in versions:
        span = f"{v.data_from:%Y-%m-%d}–{v.data_to:%Y-%m-%d}" if v.data_from and v.data_to else "?"
        table.add_row(
            f"{v.version} {v.kind}",
            f"{v.target} in {v.within_days} d of {v.cutoff}",
            f"{span}, {v.metrics.get('rows') or 0:,} leads",
            f"{_metric(v.metrics.get('roc_auc'))} ({_metric(v.metrics.get('rule_score_roc_auc'))})",
            _metric(v.metrics.get("brier")),
            "yes" if v.active else "",
        )
    out.print(table)


@predictive_app.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="The model's version (qualify models lists them).")],
    db: DbOption = None,
) -> None:
    """Print a stored model's report (JSON): training set, features, leakage, choice, metrics."""
    from qualify.service.predictions.serving import model_document

    with _workspace(db) as workspace, workspace.unit_of_work(read_only=True) as uow, _errors():
        document = model_document(uow, version)
    _print_json({"version": version, "recipe": document["recipe"], "report": document.get("report", {})})


@predictive_app.command("activate")
def models_activate(
    version: Annotated[str, typer.Argument(help="The model's version (qualify models lists them).")],
    db: DbOption = None,
) -> None:
    """Make a stored predictive model the active one and compute every lead's probability with it."""
    _switch(version, db)


@predictive_app.command("deactivate")
def models_deactivate(db: DbOption = None) -> None:
    """Stop using predictive models: leads keep no probability, probability thresholds never hold."""
    _switch(None, db)


def _switch(version: str | None, db: str | None) -> None:
    from qualify.service.predictions.serving import activate, refresh_all

    with _workspace(db) as workspace:
        with workspace.unit_of_work() as uow, _errors():
            previous, changed = activate(uow, version)
        if not changed:
            out.print(f"{version or 'No model'} is already active." if version else "No predictive model is active.")
            return
        with _progress("Scoring leads") as progress, _errors():
            scored = refresh_all(workspace, progress=progress)
    if version is None:
        out.print(f"Deactivated {previous}; leads keep no probability.")
    else:
        out.print(f"Activated {version}; {scored:,} leads scored.")
