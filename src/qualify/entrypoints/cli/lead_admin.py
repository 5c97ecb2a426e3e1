"""Commands for duplicates, personal data and exports: merge, export lead|parquet, erase."""

from pathlib import Path
from typing import Annotated

import typer

from qualify.entrypoints.cli.base import (
    DbOption,
    JsonOption,
    _errors,
    _fail,
    _print_json,
    _progress,
    _workspace,
    app,
    out,
)


@app.command()
def merge(
    keep: Annotated[str, typer.Argument(help="The lead that stays: email, external id or #id.")],
    duplicate: Annotated[str, typer.Argument(help="The duplicate folded into it: email, external id or #id.")],
    by: Annotated[str, typer.Option("--by", help="Who merges (kept in the audit log).")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fold a duplicate into a lead: every event kept, its keys redirected to the kept lead."""
    from qualify.service.lifecycle.lead_admin import merge_leads

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        result = merge_leads(uow, keep, duplicate, by=by)
    if as_json:
        _print_json({"kept": result.kept, "merged": result.merged, "events_moved": result.events_moved})
        return
    out.print(f"Merged {result.merged} into {result.kept}: {result.events_moved:,} events moved.")


export_app = typer.Typer(
    help="Export: one person's data as JSON, or the whole workspace as Parquet.", no_args_is_help=True
)
app.add_typer(export_app, name="export")


@export_app.command("lead")
def export_lead_command(
    key: Annotated[str, typer.Argument(help="The lead: email, external id or #id.")],
    db: DbOption = None,
) -> None:
    """Print everything held about one person as JSON (for access and portability requests)."""
    from qualify.service.lifecycle.lead_admin import export_lead

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        document = export_lead(uow, key)
    _print_json(document)


@export_app.command("parquet")
def export_parquet_command(
    directory: Annotated[Path, typer.Argument(help="Where to write the export (replaced if it holds an earlier one).")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write accounts, leads, stage history and events (partitioned by day) as Parquet files."""
    from qualify.service.analytics.export import export_workspace

    with _workspace(db) as workspace, _errors(), _progress("Exporting events", not as_json) as progress:
        try:
            manifest = export_workspace(workspace, directory, progress=progress)
        except FileExistsError as error:
            _fail(str(error))
    if as_json:
        _print_json(manifest)
        return
    counts = manifest["counts"]
    out.print(
        f"Exported to {directory}: {counts['accounts']:,} accounts, {counts['leads']:,} leads, "
        f"{counts['events']:,} events, {counts['stage_history']:,} stage changes, {counts['deals']:,} deals."
    )


@app.command()
def erase(
    key: Annotated[str, typer.Argument(help="The lead: email, external id or #id.")],
    by: Annotated[str, typer.Option("--by", help="Who erases (kept in the audit log).")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: erasure cannot be undone.")] = False,
    db: DbOption = None,
) -> None:
    """Erase a person: events and personal data deleted, the nameless row kept for the funnel."""
    from qualify.service.lifecycle.lead_admin import erase_lead

    if not yes:
        _fail("erasure cannot be undone: add --yes to confirm")
    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        lead_id = erase_lead(uow, key, by=by)
    out.print(f"Erased lead #{lead_id}: events and personal data deleted.")
