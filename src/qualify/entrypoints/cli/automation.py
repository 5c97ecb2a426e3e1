"""Commands of automation: segments and workflows (docs/automation.md)."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from qualify.entrypoints.cli.base import DbOption, JsonOption, _errors, _print_json, _workspace, app, out

if TYPE_CHECKING:
    from qualify.domain.automation import AutomationDocument

FileArgument = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, help="A YAML document with segments:, workflows: and templates:.")
]
ByOption = Annotated[str, typer.Option("--by", help="Who makes the change, for the audit log.")]
NameArgument = Annotated[str, typer.Argument(help="The segment's name.")]

segments_app = typer.Typer(
    help="Segments: named dynamic filters over leads, kept up to date as events arrive.", no_args_is_help=True
)
app.add_typer(segments_app, name="segments")
workflows_app = typer.Typer(
    help="Workflows: triggers, conditions and steps (email, waits, owner, tags, bonus, nurture).", no_args_is_help=True
)
app.add_typer(workflows_app, name="workflows")


def _load(file: Path) -> "AutomationDocument":
    from qualify.domain.automation import load_automation

    return load_automation(file.read_text(encoding="utf-8"), str(file))


@segments_app.command("apply")
def segments_apply(
    file: FileArgument,
    refresh: Annotated[
        bool, typer.Option("--refresh/--no-refresh", help="Test every lead against the new or changed segments now.")
    ] = True,
    by: ByOption = "cli",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create or replace the file's segments by name (its workflows are left to `workflows apply`)."""
    from qualify.service.automation.definitions import put_segments
    from qualify.service.automation.segments import refresh_segments

    with _workspace(db) as workspace, _errors():
        document = _load(file)
        with workspace.unit_of_work() as uow:
            applied = put_segments(uow, document.segments, by=by)
        touched = [*applied.created, *applied.changed]
        moved = refresh_segments(workspace, names=touched) if refresh and touched else None
    if as_json:
        _print_json(applied.as_dict() | {"refresh": moved})
        return
    out.print(
        f"Segments: {len(applied.created)} created, {len(applied.changed)} changed, {len(applied.unchanged)} unchanged.",
        highlight=False,
    )
    if moved is not None:
        out.print(
            f"Tested {moved['leads']:,} leads: {moved['entered']:,} entered, {moved['left']:,} left.", highlight=False
        )


@segments_app.command("list")
def segments_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the segments with their members now and what they test."""
    from qualify.service.automation.reading import list_segments

    with _workspace(db) as workspace, workspace.unit_of_work(read_only=True) as uow:
        found = list_segments(uow)
    if as_json:
        _print_json([s.as_dict() for s in found])
        return
    table = Table("segment", "members", "tests", "refreshed")
    for s in found:
        refreshed = f"{s.refreshed_at:%Y-%m-%d %H:%M}" if s.refreshed_at else "never"
        table.add_row(s.name, f"{s.members:,}", escape(s.describe), refreshed)
    out.print(table)
    if not found:
        out.print("No segments: write some (docs/automation.md) and run `qualify segments apply FILE`.")


@segments_app.command("show")
def segments_show(
    name: NameArgument,
    days: Annotated[int, typer.Option(min=1, max=3660, help="How far back the counts go.")] = 84,
    every: Annotated[int, typer.Option(min=1, max=366, help="Days between two counts.")] = 7,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """A segment: its definition, members now, and members over time (with entries and exits)."""
    from qualify.service.automation.reading import segment_counts, segment_info

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work(read_only=True) as uow:
        info = segment_info(uow, name)
        counts = segment_counts(uow, name, days=days, every_days=every)
    if as_json:
        _print_json(info.as_dict() | {"counts": counts})
        return
    out.print(f"[bold]{escape(info.name)}[/]: {escape(info.description or '')}", highlight=False)
    out.print(f"Tests: {escape(info.describe)}", highlight=False)
    out.print(f"Members now: {info.members:,} (version {info.version})", highlight=False)
    table = Table("at", "members", "entered", "left")
    for c in counts:
        table.add_row(c["at"][:10], f"{c['members']:,}", f"{c['entered']:,}", f"{c['left']:,}")
    out.print(table)


@segments_app.command("members")
def segments_members(
    name: NameArgument,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="How many to list.")] = 50,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The leads in a segment now, with when they entered."""
    from qualify.service.automation.reading import segment_members

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work(read_only=True) as uow:
        found = segment_members(uow, name, limit=limit)
    if as_json:
        _print_json(found)
        return
    table = Table("lead", "stage", "grade", "engagement", "owner", "entered")
    for m in found:
        table.add_row(
            escape(m["lead"]), m["stage"], m["grade"], f"{m['engagement']:g}", m["owner"] or "", m["entered_at"][:16]
        )
    out.print(table)


@segments_app.command("refresh")
def segments_refresh(
    names: Annotated[list[str] | None, typer.Argument(help="Segments to refresh (default: all).")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Test every lead against the segments now (the batch evaluation); record who entered and left."""
    from qualify.service.automation.segments import refresh_segments

    with _workspace(db) as workspace, _errors():
        moved = refresh_segments(workspace, names=names or None)
    if as_json:
        _print_json(moved)
        return
    out.print(
        f"Tested {moved['leads']:,} leads: {moved['entered']:,} entered, {moved['left']:,} left.", highlight=False
    )


@segments_app.command("delete")
def segments_delete(name: NameArgument, by: ByOption = "cli", db: DbOption = None) -> None:
    """Delete a segment (refused while a workflow is triggered by it); its members' exits are recorded."""
    from qualify.service.automation.definitions import delete_segment

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        delete_segment(uow, name, by=by)
    out.print(f"Deleted segment {escape(name)}.", highlight=False)


@workflows_app.command("apply")
def workflows_apply(file: FileArgument, by: ByOption = "cli", db: DbOption = None, as_json: JsonOption = False) -> None:
    """Create or replace the file's workflows (active) and email templates; its segments too, first."""
    from qualify.service.automation.definitions import put_segments, put_workflows
    from qualify.service.automation.segments import refresh_segments

    with _workspace(db) as workspace, _errors():
        document = _load(file)
        with workspace.unit_of_work() as uow:
            segments = put_segments(uow, document.segments, by=by)
            applied = put_workflows(uow, document, by=by)
        touched = [*segments.created, *segments.changed]
        if touched:
            refresh_segments(workspace, names=touched)
    if as_json:
        _print_json(applied.as_dict() | {"segments": segments.as_dict(), "templates": len(document.templates)})
        return
    out.print(
        f"Workflows: {len(applied.created)} created, {len(applied.changed)} changed, {len(applied.unchanged)} unchanged; "
        f"{len(document.templates)} template(s) saved. They run in `qualify worker`.",
        highlight=False,
    )


@workflows_app.command("list")
def workflows_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the workflows: trigger, steps, and their runs by status."""
    from qualify.service.automation.reading import list_workflows

    with _workspace(db) as workspace, workspace.unit_of_work(read_only=True) as uow:
        found = list_workflows(uow)
    if as_json:
        _print_json([w.as_dict() for w in found])
        return
    table = Table("workflow", "active", "trigger", "steps", "runs")
    for w in found:
        runs = ", ".join(f"{status} {n:,}" for status, n in sorted(w.runs.items())) or "none"
        table.add_row(w.name, "yes" if w.active else "paused", escape(w.trigger), escape(" → ".join(w.steps)), runs)
    out.print(table)
    if not found:
        out.print("No workflows: write some (docs/automation.md) and run `qualify workflows apply FILE`.")


@workflows_app.command("pause")
def workflows_pause(
    name: Annotated[str, typer.Argument(help="The workflow's name.")], by: ByOption = "cli", db: DbOption = None
) -> None:
    """Pause a workflow: nobody new is enrolled and its runs in progress stop (logged)."""
    from qualify.service.automation.definitions import set_workflow_active

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        stopped = set_workflow_active(uow, name, False, by=by)
    out.print(f"Paused {escape(name)}; {stopped:,} run(s) stopped.", highlight=False)


@workflows_app.command("resume")
def workflows_resume(
    name: Annotated[str, typer.Argument(help="The workflow's name.")], by: ByOption = "cli", db: DbOption = None
) -> None:
    """Resume a paused workflow: its trigger enrols leads again (stopped runs stay stopped)."""
    from qualify.service.automation.definitions import set_workflow_active

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        set_workflow_active(uow, name, True, by=by)
    out.print(f"Resumed {escape(name)}.", highlight=False)


@workflows_app.command("log")
def workflows_log(
    lead: Annotated[str, typer.Argument(help="The lead: email, ext:<external id> or #<id>.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """A lead's automation: its segments and their history, tags, workflow runs and every step."""
    from qualify.service.automation.reading import lead_automation_of

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work(read_only=True) as uow:
        found = lead_automation_of(uow, lead)
    if as_json:
        _print_json(found)
        return
    out.print(f"Segments: {', '.join(s['segment'] for s in found['segments']) or 'none'}", highlight=False)
    out.print(f"Tags: {', '.join(found['tags']) or 'none'}", highlight=False)
    table = Table("at", "workflow", "step", "action", "outcome", "detail")
    for line in found["log"]:
        table.add_row(
            line["at"][:19],
            line["workflow"],
            str(line["step"]),
            line["action"],
            line["outcome"],
            escape(line["detail"] or ""),
        )
    out.print(table)
