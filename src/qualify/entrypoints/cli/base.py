"""What every command shares: the Typer apps, consoles, options, error handling and output."""

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qualify.domain.errors import ModelError, QualifyError

if TYPE_CHECKING:  # the store's libraries load when a command opens a workspace, not for --help
    from qualify.service.unit_of_work import Workspace
    from qualify.settings import Settings

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    name="qualify",
    help="Qualify: lead qualification that explains itself. Fit, engagement and the funnel, from a scoring model in YAML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)


def _show_version(value: bool) -> None:
    if value:
        from qualify import __version__

        out.print(f"qualify {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", "-V", help="Print the version and exit.", callback=_show_version, is_eager=True)
    ] = False,
) -> None:
    """Qualify: lead qualification that explains itself. Fit, engagement and the funnel, from a scoring model in YAML."""


def tidy_help(command: Any) -> None:
    """Help as people read it, on every command under `command` (a Click group): a flag shows no
    `<bool>` type, and a paragraph of a docstring is one paragraph, not lines broken where the
    source wraps them (the terminal wraps it to its width)."""
    import re

    if command.help:
        command.help = re.sub(r"(?<!\n)\n(?![\n\b])", " ", command.help)
    for param in command.params:  # Typer's own Click: told apart by what they say they are
        if param.param_type_name == "option" and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    made = command.get_help_option  # made when help is asked for: `--help`, a flag too

    def help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


model_app = typer.Typer(help="Validate, activate and show scoring models.", no_args_is_help=True)
stage_app = typer.Typer(
    help="Stage actions by people: accept, reject, disqualify, open-opportunity, win, lose, advocate.",
    no_args_is_help=True,
)
account_stage_app = typer.Typer(
    help="Stage actions on accounts by people: accept or reject an MQA, lose or win its opportunity.",
    no_args_is_help=True,
)
report_app = typer.Typer(
    help="Funnel analytics: funnel, velocity, cohorts, sources, content influence, lookalikes.", no_args_is_help=True
)
predictive_app = typer.Typer(
    help="Predictive models learnt by `qualify train`: list (no subcommand), show, activate, deactivate.",
    invoke_without_command=True,
)
app.add_typer(model_app, name="model")
app.add_typer(predictive_app, name="models")
app.add_typer(stage_app, name="stage")
app.add_typer(account_stage_app, name="account-stage")
app.add_typer(report_app, name="report")

out = Console()
err = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="QUALIFY_DATABASE_URL",
        help="Database URL (sqlite:///path.db or postgresql+psycopg://…). Default: sqlite:///qualify.db.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (see docs/json-output.md).")]


def _settings(db: str | None) -> "Settings":
    from pydantic import ValidationError

    from qualify.settings import Settings

    try:
        return Settings(database_url=db) if db else Settings()
    except ValidationError as error:
        problems = []
        for e in error.errors():
            name = "_".join(str(p) for p in e["loc"])
            where = "--db" if db and name == "database_url" else f"QUALIFY_{name.upper()}"
            problems.append(f"{where}: {str(e['msg']).removeprefix('Value error, ')}")
        _fail(f"bad setting: {'; '.join(problems)} (see docs/configuration.md)")


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Errors a user can act on become one clear message and exit code 2, never a traceback."""
    try:
        yield
    except ModelError as error:
        _fail(error.render())
    except QualifyError as error:
        _fail(str(error))
    except FileNotFoundError as error:
        _fail(f"no such file: {error.filename}")
    except Exception as error:
        from sqlalchemy.exc import OperationalError

        from qualify.adapters.store import storage_failure
        from qualify.service.unit_of_work import StoreUnavailable

        why = storage_failure(error) if isinstance(error, OperationalError) else None
        if why is None:
            raise
        _fail(str(StoreUnavailable(why)))


@contextmanager
def _workspace(db: str | None, *, create: bool = False, reading: bool = False) -> Iterator["Workspace"]:
    """The workspace at `db`; `reading`: for a command that only reads, without the after-change
    pipeline (and the libraries its reactions load), so that it starts sooner."""
    with _errors():
        if reading:
            from qualify.service.unit_of_work import open_workspace as open_store

            workspace = open_store(_settings(db))
        else:
            from qualify.bootstrap import open_workspace

            workspace = open_workspace(_settings(db), create=create)
        try:
            yield workspace
        finally:
            workspace.close()


def _utc(moment: datetime | None) -> datetime | None:
    """A time from the command line in UTC: UTC when it names no zone."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default, ensure_ascii=False) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextmanager
def _progress(
    label: str, enabled: bool = True, *, percent: bool = False
) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar on the terminal, with done / total (or, `percent`, the share done); silent
    when stderr is not one or output is JSON."""
    if not enabled or not err.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import TaskProgressColumn

    amount = TaskProgressColumn() if percent else MofNCompleteColumn()
    with Progress(TextColumn(label), BarColumn(), amount, TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextmanager
def _working(label: str, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A spinner on standard error with `label`, the current step (set with the function yielded)
    and the time so far, for work that takes seconds; silent when stderr is not a terminal or the
    output is JSON."""
    if not enabled or not err.is_terminal:
        yield lambda step: None
        return
    from rich.progress import SpinnerColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as spinner:
        task = spinner.add_task(f"{label}…", total=None)

        def step(text: str) -> None:
            spinner.update(task, description=f"{label}: {text}…")

        yield step


def _share(rate: dict[str, Any]) -> str:
    """`62.5% (47%–76%)`: a rate with its 95 % interval, or `—` when there was nothing to count."""
    if rate["rate"] is None:
        return "—"
    low, high = rate["interval_95"]
    return f"{rate['rate']:.1%} ({low:.0%}–{high:.0%})"


def _days(summary: dict[str, Any], key: str) -> str:
    """A median or p90 of days, blank when there was nothing to measure."""
    return "" if summary.get(key) is None else f"{summary[key]:.1f}"


def _show_nurture_loop(loop: dict[str, Any]) -> None:
    """Leads sent to nurture, by where they came from, how many came back to MQL and how soon, and
    whether the recycled MQLs went on to SQL and customer as often as first-time ones."""
    from qualify.service.reading.funnel import NURTURE_ORIGINS

    if not loop.get("entries"):
        return
    days = loop["days_to_mql"]
    timing = f", median {days['median']:.1f} days, p90 {days['p90']:.1f}" if days["count"] else ""
    out.print(
        f"Nurture loop: {loop['entries']:,} entries ({loop['leads']:,} leads), {loop['recycled']['count']:,} back to "
        f"MQL: {_share(loop['recycled'])}{timing}; {loop['disqualified']:,} disqualified, "
        f"{loop['open']:,} still in nurture.",
        soft_wrap=True,
    )
    table = Table("entered nurture as", "entries", "back to MQL", "rate (95%)", "median days", "p90 days")
    for origin, row in loop["by_origin"].items():
        table.add_row(
            NURTURE_ORIGINS.get(origin, origin),
            f"{row['entries']:,}",
            f"{row['recycled']['count']:,}",
            _share(row["recycled"]),
            _days(row["days_to_mql"], "median"),
            _days(row["days_to_mql"], "p90"),
        )
    out.print(table)
    after = loop["after_mql"]

    def went_on(kind: str, label: str) -> str:
        group = after[kind]
        if not group["mqls"]:
            return f"no {label} MQLs"
        waiting = f" ({group['open']:,} still MQL)" if group["open"] else ""
        return (
            f"{label} MQLs {group['mqls']:,}{waiting}: {group['sql']['rate']:.1%} to SQL, "
            f"{group['customer']['rate']:.1%} to customer"
        )

    out.print(f"After MQL: {went_on('first_time', 'first-time')}; {went_on('recycled', 'recycled')}.", soft_wrap=True)


def _show_funnel(report: Any) -> None:
    table = Table(
        "stage",
        "now",
        "ever reached",
        "conversion to next",
        "median days",
        "p90 days",
        title=f"Funnel of {report.total_leads:,} leads",
    )
    rates = {c["from"]: c for c in report.conversion}
    for stage, count in report.current.items():
        days = report.days_in_stage.get(stage, {})
        rate = rates.get(stage)
        shown = ""
        if rate and rate["rate"] is not None:
            low, high = rate["interval_95"]
            shown = f"{rate['rate']:.1%} ({low:.0%}–{high:.0%}) → {rate['to']}"
        median, p90 = days.get("median"), days.get("p90")
        table.add_row(
            stage,
            f"{count:,}",
            f"{report.reached.get(stage, 0):,}",
            shown,
            "" if median is None else f"{median:.1f}",
            "" if p90 is None else f"{p90:.1f}",
        )
    out.print(table)
    _show_nurture_loop(report.nurture_loop)
    acceptance = report.acceptance
    if acceptance.get("decided"):
        hours = acceptance["hours_to_decision"]
        rejected = report.reasons.get("mql->nurture", {})
        reasons = ", ".join(f"{code} {n:,}" for code, n in list(rejected.items())[:3])
        out.print(
            f"Sales decided on {acceptance['decided']:,} MQLs: {acceptance['accepted']['rate']:.1%} accepted, "
            f"{acceptance['rejected']['rate']:.1%} rejected{f' ({reasons})' if reasons else ''}, "
            f"{acceptance['disqualified']['rate']:.1%} disqualified; median {hours['median']:.1f} h to decide.",
            soft_wrap=True,
        )
    sla = report.sla
    if sla.get("clocks"):
        compliance = (
            "" if sla["compliance"] is None else f"; compliance {sla['compliance']:.1%} (met / (met + breached))"
        )
        out.print(
            f"SLA clocks of MQLs: {sla['clocks']:,} ({sla['met']:,} met, {sla['breached']:,} breached, "
            f"{sla['open']:,} open, {sla['stopped']:,} stopped){compliance}.",
            soft_wrap=True,
        )
