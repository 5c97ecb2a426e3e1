"""Commands for duplicates, personal data and exports: merge, export lead|leads|parquet, erase."""

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
    help="Export: one person's data as JSON, every lead's scores as a file, or the whole workspace as Parquet.",
    no_args_is_help=True,
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


@export_app.command("leads")
def export_leads_command(
    file: Annotated[Path, typer.Argument(help="Where to write: a .csv, .jsonl or .parquet file.")],
    stage: Annotated[str | None, typer.Option(help="Only leads in this stage.")] = None,
    grade: Annotated[str | None, typer.Option(help="Only leads of this fit grade (A-D).")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's leads.")] = None,
    segment: Annotated[str | None, typer.Option(help="Only the members of this segment.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write every lead with its scores, probability, stage, owner and the reason of its stage, oldest first.

    The file a spreadsheet or a reverse-ETL tool reads; its columns are in docs/cli.md.
    """
    from qualify.adapters.row_files import format_of, write_rows
    from qualify.service.reading.lead_export import COLUMNS, exported_leads
    from qualify.service.reading.lead_list import LeadFilter

    try:
        format_of(file)
    except ValueError as error:
        _fail(str(error))
    wanted = LeadFilter(stage=stage, grade=grade, owner=owner, segment=segment)
    with _workspace(db, reading=True) as workspace, _errors():
        try:
            written = write_rows(file, COLUMNS, exported_leads(workspace, wanted))
        except OSError as error:
            _fail(f"{file}: cannot write it ({error.strerror or error})")
    if as_json:
        _print_json({"file": str(file), "leads": written, "columns": list(COLUMNS)})
        return
    out.print(f"Wrote {written:,} leads to {file}.", highlight=False, soft_wrap=True)


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
