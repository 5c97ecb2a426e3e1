"""Commands of the CRM sync: crm connect, sync, status (docs/integrations.md)."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qualify.adapters.crm import VENDORS
from qualify.entrypoints.cli.base import DbOption, JsonOption, _errors, _print_json, _workspace, app, out

crm_app = typer.Typer(
    help="Two-way sync with HubSpot or Salesforce: connect, sync, status (docs/integrations.md).",
    no_args_is_help=True,
)
app.add_typer(crm_app, name="crm")


Vendor = StrEnum("Vendor", {name: name for name in VENDORS})  # type: ignore[misc]  # every CRM adapters/crm.py names


VendorArgument = Annotated[Vendor, typer.Argument(help="The CRM: hubspot or salesforce.")]


@crm_app.command("connect")
def crm_connect(
    crm: VendorArgument,
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping",
            help="The sync mapping: what is pulled and written back (default: examples/crm/<crm>-sync.yaml).",
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check the token (QUALIFY_HUBSPOT_TOKEN, or QUALIFY_SALESFORCE_URL and _TOKEN) and the mapping
    against the CRM, create the fields the push writes where allowed, and keep the connection. The
    token is read from the settings each time, never stored or printed."""
    from qualify.service.connectors.crm import connect

    with _workspace(db) as workspace, _errors():
        connected = connect(workspace, crm.value, mapping_path=mapping)
    if as_json:
        _print_json(connected.as_dict())
        return
    out.print(f"Connected to {connected.account} with {connected.mapping_name}.", highlight=False)
    for note in connected.notes:
        out.print(f"  {note}", highlight=False)
    if connected.created_fields:
        out.print(f"  Created the fields {', '.join(connected.created_fields)}.", highlight=False)
    out.print(f"Next: `qualify crm sync {crm.value}`; the worker then syncs on its own.", highlight=False)


@crm_app.command("sync")
def crm_sync(
    crm: VendorArgument,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Read and check what changed and count what would be written; write nothing."),
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Pull everything again, not only what changed since the last sync.")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pull what changed in the CRM since the last sync (companies, people, deals, sales statuses),
    then write the scores, stage and reason of the leads that changed back to it."""
    from qualify.service.connectors.crm import sync

    with _workspace(db) as workspace, _errors():
        summary = sync(workspace, crm.value, dry_run=dry_run, full=full)
    if as_json:
        _print_json(summary.as_dict())
        return
    table = Table("object", "read", "created", "updated", "unchanged", "rejected")
    for obj, counts in summary.pulled.objects.items():
        table.add_row(obj, *(f"{counts.get(k, 0):,}" for k in ("read", "created", "updated", "unchanged", "rejected")))
    out.print(table)
    verb = "would be" if summary.dry_run else "were"
    out.print(f"{summary.pulled.actions:,} sales status changes {verb} recorded as stage actions.", highlight=False)
    for reject in summary.pulled.rejected:
        out.print(f"  rejected {reject['record']} ({reject['field']}): {reject['reason']}", highlight=False)
    if summary.dry_run:
        out.print(f"Dry run: nothing was written; {summary.pending:,} pushes are waiting.", highlight=False)
        return
    pushed = summary.pushed
    out.print(
        f"Pushed {pushed.pushed:,} leads and {pushed.accounts:,} accounts ({pushed.unchanged:,} unchanged, {pushed.failed:,} to retry, "
        f"{pushed.dead:,} given up); {summary.pending:,} pushes waiting.",
        highlight=False,
    )
    for error in pushed.errors:
        out.print(f"  {error}", highlight=False)


@crm_app.command("status")
def crm_status(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The connected CRMs: the account, the mapping, the last pull and its cursors, the push outbox
    (waiting, written, given up) and the last error."""
    from qualify.service.connectors.crm import connections

    with _workspace(db) as workspace, _errors():
        found = connections(workspace)
    if as_json:
        _print_json([c.as_dict() for c in found])
        return
    if not found:
        out.print("No CRM connected: `qualify crm connect hubspot` or `qualify crm connect salesforce`.")
        return
    for c in found:
        pulled = f"{c.pulled_at:%Y-%m-%d %H:%M} UTC" if c.pulled_at else "never"
        out.print(f"[bold]{c.crm}[/]: {c.account or ''}, mapping {c.mapping_name}, writes to {c.push_to} people")
        out.print(f"  last pull {pulled}; {c.linked:,} leads linked to CRM records", highlight=False)
        out.print(f"  pushes: {c.pending:,} waiting, {c.pushed:,} written, {c.dead:,} given up", highlight=False)
        for obj, cursor in c.cursors.items():
            out.print(f"  {obj}: changes pulled up to {cursor}", highlight=False)
        if c.last_error:
            out.print(f"  [red]last error[/]: {c.last_error}", highlight=False)
