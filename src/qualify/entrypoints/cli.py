"""The `qualify` command line. Every command calls one use case; output is a table or `--json`."""

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from qualify.domain.errors import ModelError, QualifyError
from qualify.domain.lifecycle import REASON_CODES, STAGE_ACTIONS
from qualify.domain.model_loader import default_model_text, load_model
from qualify.service.unit_of_work import Workspace, open_workspace
from qualify.settings import Settings

app = typer.Typer(
    name="qualify",
    help="Qualify: lead qualification that explains itself. Fit, engagement and the funnel, from a scoring model in YAML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Validate, activate and show scoring models.", no_args_is_help=True)
stage_app = typer.Typer(
    help="Stage actions by people: accept, reject, disqualify, open-opportunity, win, lose, advocate.",
    no_args_is_help=True,
)
app.add_typer(model_app, name="model")
app.add_typer(stage_app, name="stage")

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


def _settings(db: str | None) -> Settings:
    try:
        return Settings(database_url=db) if db else Settings()
    except ValidationError as error:
        problems = "; ".join(
            f"QUALIFY_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        _fail(f"bad setting in the environment: {problems} (see docs/configuration.md)")


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


@contextmanager
def _workspace(db: str | None, *, create: bool = False) -> Iterator[Workspace]:
    with _errors():
        workspace = open_workspace(_settings(db), create=create)
        try:
            yield workspace
        finally:
            workspace.close()


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
def _progress(label: str, enabled: bool = True) -> Iterator[Callable[[int, int | None], None]]:
    """A progress bar on the terminal; silent when stderr is not one or output is JSON."""
    if not enabled or not err.is_terminal:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# --- workspace ----------------------------------------------------------------------------------


@app.command()
def init(
    db: DbOption = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Scoring model YAML to activate instead of the default.")
    ] = None,
) -> None:
    """Create (or upgrade) a workspace; activate the default scoring model if none is active yet.

    On an existing workspace the active model is kept unless --model names another one.
    """
    from qualify.service.models import activate_model, active_document

    with _workspace(db, create=True) as workspace, workspace.unit_of_work() as uow, _errors():
        if model is None:
            try:
                version, _ = active_document(uow)
            except QualifyError:
                version = None
            if version is not None:
                current = uow.active_model()
                out.print(
                    f"Workspace ready at {workspace.settings.database_url}; active scoring model kept: {current.name} ({version})."
                )
                return
        document = model.read_text(encoding="utf-8") if model else default_model_text()
        scoring, changed = activate_model(uow, document, str(model) if model else "default_model.yaml")
    verb = "activated" if changed else "already active:"
    out.print(
        f"Workspace ready at {workspace.settings.database_url}; scoring model {verb} {scoring.name} ({scoring.version})."
    )


@app.command()
def demo(
    db: Annotated[
        str, typer.Option("--db", help="Where to build the demo world (replaced if it exists).")
    ] = "sqlite:///qualify-demo.db",
    seed: Annotated[int, typer.Option(help="Random seed: the same seed builds the same world.")] = 7,
    leads: Annotated[int, typer.Option(min=10, max=1_000_000, help="How many leads.")] = 2000,
    days: Annotated[int, typer.Option(min=7, max=3650, help="How many days of history, ending today.")] = 180,
    as_json: JsonOption = False,
) -> None:
    """Build a realistic synthetic B2B world, score it, and print its funnel."""
    from qualify.demo.world import build_demo
    from qualify.service.models import activate_model
    from qualify.service.queries import funnel

    _reset_sqlite(db)
    with _workspace(db, create=True) as workspace:
        with workspace.unit_of_work() as uow:
            activate_model(uow, default_model_text(), "default_model.yaml")
        with _progress("Building the demo world", not as_json) as progress:
            summary = build_demo(workspace, seed=seed, leads=leads, days=days, progress=progress)
        with workspace.unit_of_work() as uow:
            report = funnel(uow)
    if as_json:
        _print_json({"demo": summary.as_dict(), "funnel": report.as_dict(), "database_url": db})
        return
    out.print(
        f"Demo world in {db}: {summary.accounts:,} accounts, {summary.leads:,} leads, {summary.events:,} events, "
        f"{summary.stage_actions:,} sales decisions ({summary.seconds:.1f} s)."
    )
    _show_funnel(report)
    out.print(
        "Next: [bold]qualify leads --db " + db + " --stage mql[/] or [bold]qualify lead --db " + db + " <email>[/]"
    )


def _reset_sqlite(url: str) -> None:
    from sqlalchemy.engine import make_url

    with _errors():
        parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        for suffix in ("", "-wal", "-shm"):
            Path(parsed.database + suffix).unlink(missing_ok=True)


# --- import & scoring -----------------------------------------------------------------------------


class ImportKind(StrEnum):
    leads = "leads"
    accounts = "accounts"
    events = "events"


@app.command("import")
def import_(
    kind: Annotated[ImportKind, typer.Argument(help="What the file holds: leads, accounts or events.")],
    path: Annotated[Path, typer.Argument(help="A .csv, .tsv, .jsonl/.ndjson or .parquet file.")],
    mapping: Annotated[
        Path | None,
        typer.Option("--mapping", help="Mapping YAML: columns to fields, value maps, types (docs/import.md)."),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option("--rejects", help="Where to write rejected rows. Default: FILE.rejects.csv beside the input."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", min=1, max=100_000, help="Rows per transaction (default: QUALIFY_BATCH_SIZE or 1000)."
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import leads, accounts or events; bad rows go to a rejects file, good ones are kept.

    Re-importing the same file changes nothing: leads are upserted by email or external id,
    accounts by domain, events are idempotent by event_id.
    """
    from qualify.service.import_mapping import load_mapping
    from qualify.service.importing import import_file

    with _workspace(db) as workspace:
        if not path.is_file():
            _fail(f"no such file: {path}")
        spec = load_mapping(mapping) if mapping else None
        size = batch_size or workspace.settings.batch_size
        with _progress(f"Importing {kind.value}", not as_json) as progress:
            summary = import_file(
                workspace, kind.value, path, mapping=spec, rejects_path=rejects, progress=progress, batch_size=size
            )
    if as_json:
        _print_json(summary.as_dict())
        return
    data = summary.as_dict()
    counts = ", ".join(
        f"{k} {data[k]:,}"
        for k in ("created", "updated", "unchanged", "accepted", "duplicate", "rejected")
        if data.get(k)
    )
    out.print(f"{path}: {data['rows_read']:,} rows read; {counts or 'nothing to do'}.")
    if data.get("rejects_path"):
        out.print(f"[yellow]Rejected rows, with line, field and reason:[/] {data['rejects_path']}")


@app.command()
def score(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Rescore every lead with the active model (fit, engagement from its events, then the stage policy)."""
    from qualify.service.scoring import rescore_all

    with _workspace(db) as workspace, _progress("Scoring leads", not as_json) as progress:
        summary = rescore_all(workspace, progress=progress)
    if as_json:
        _print_json(vars(summary))
        return
    out.print(
        f"Scored {summary.leads:,} leads from {summary.events:,} events with model {summary.model_version}; {summary.moves:,} stage changes."
    )


# --- reading ---------------------------------------------------------------------------------------


class SortKey(StrEnum):
    score = "score"
    fit = "fit"
    engagement = "engagement"
    created = "created"
    updated = "updated"


@app.command()
def leads(
    stage: Annotated[
        str | None,
        typer.Option(
            help="Only leads in this stage (lead, mql, sql, opportunity, customer, evangelist, nurture, disqualified)."
        ),
    ] = None,
    grade: Annotated[str | None, typer.Option(help="Only this fit grade (A–D).")] = None,
    persona: Annotated[str | None, typer.Option(help="Only leads whose best persona is this one.")] = None,
    sort: Annotated[
        SortKey, typer.Option(help="score (fit + engagement), fit, engagement, created, updated.")
    ] = SortKey.score,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List leads, best first, with their stage, grade, persona and scores (as last scored)."""
    from qualify.service.lead_list import LeadFilter, list_leads

    with _workspace(db) as workspace, workspace.unit_of_work() as uow, _errors():
        rows = list_leads(
            uow, LeadFilter(stage=stage, grade=grade, persona=persona, sort=sort.value, limit=limit, offset=offset)
        )
    if as_json:
        _print_json(rows)
        return
    table = Table("lead", "name", "title", "account", "stage", "grade", "fit", "engagement", "score", "persona")
    for r in rows:
        name = " ".join(p for p in (r["first_name"], r["last_name"]) if p)
        table.add_row(
            r["email"] or f"ext:{r['external_id']}",
            name,
            r["title"] or "",
            r["account"] or "",
            r["stage"],
            r["fit_grade"],
            f"{r['fit_score']:.0f}",
            f"{r['engagement_score']:.1f}",
            f"{r['score']:.1f}",
            r["persona"] or "",
        )
    out.print(table)
    if not rows:
        out.print("No leads match.")


@app.command()
def lead(
    key: Annotated[str, typer.Argument(help="The lead's email, external id, or #id.")],
    events: Annotated[int, typer.Option("--events", min=0, max=1000, help="Timeline events per page.")] = 20,
    page: Annotated[int, typer.Option("--page", min=1, help="Timeline page, newest first.")] = 1,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One lead: profile, scores with their explanation, timeline and stage history."""
    from qualify.service.queries import lead_profile

    with _workspace(db) as workspace, workspace.unit_of_work() as uow, _errors():
        profile = lead_profile(uow, key, timeline_limit=events, timeline_offset=(page - 1) * events)
    if as_json:
        _print_json(profile.as_dict())
        return
    _show_profile(profile, page, events)


def _show_profile(profile: Any, page: int, per_page: int) -> None:
    lead, scores = profile.lead, profile.scores
    name = " ".join(p for p in (lead["first_name"], lead["last_name"]) if p) or (lead["email"] or lead["external_id"])
    out.print(f"[bold]{name}[/] <{lead['email'] or 'no email'}> {lead['title'] or ''}".rstrip())
    if profile.account:
        a = profile.account
        out.print(
            f"  {a['name'] or a['domain']} · {a['industry'] or 'industry ?'} · {a['employees'] or '?'} employees · {a['country'] or '?'}"
        )
    out.print(f"  stage [bold]{profile.stage}[/] since {profile.stage_entered_at:%Y-%m-%d %H:%M} UTC")
    if profile.owner or profile.owner_rule:
        since = f" since {profile.owner_assigned_at:%Y-%m-%d %H:%M} UTC" if profile.owner_assigned_at else ""
        due = f", SLA due {profile.sla_due_at:%Y-%m-%d %H:%M} UTC" if profile.sla_due_at else ""
        out.print(
            f"  owner {profile.owner or '(none)'} ({profile.owner_rule}){since}{due}", highlight=False, markup=False
        )
    out.print(
        f"\n[bold]Fit {scores['fit']:.0f} (grade {scores['grade']}, persona {scores['persona']})[/]"
        f"   [bold]Engagement {scores['engagement']:.1f}[/] as of {scores['as_of']:%Y-%m-%d %H:%M} UTC, model {scores['model_version']}"
    )
    for title, parts in (("fit", profile.fit_explanation), ("engagement", profile.engagement_explanation)):
        out.print(f"  why this {title}:")
        for part in parts or []:
            out.print(f"    {part.render()}", highlight=False, markup=False)
        if not parts:
            out.print("    (nothing yet)")
    out.print(f"\n[bold]Timeline[/] (page {page}, {per_page} per page, {profile.events_total} events in all)")
    for e in profile.timeline:
        detail = ", ".join(f"{k}={v}" for k, v in list(e["properties"].items())[:3])
        out.print(
            f"  {e['occurred_at']:%Y-%m-%d %H:%M}  {e['type']:<18} {e['points']:+6.1f}  {detail}",
            highlight=False,
            markup=False,
        )
    out.print("\n[bold]Stage history[/]")
    for h in profile.history:
        why = f" — {h['reason']}" if h["reason"] else ""
        note = f" ({h['note']})" if h["note"] else ""
        out.print(
            f"  {h['at']:%Y-%m-%d %H:%M}  {h['from'] or '·'} → {h['to']}  by {h['actor']} {h['by']}{why}{note}",
            highlight=False,
            markup=False,
        )


@app.command("funnel")
def funnel_(
    created_from: Annotated[
        datetime | None, typer.Option("--from", help="Only leads created on or after this date (UTC).")
    ] = None,
    created_to: Annotated[
        datetime | None, typer.Option("--to", help="Only leads created before this date (UTC).")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Counts per stage, stage-to-stage conversion and days spent per stage, from the stage history."""
    from qualify.service.queries import funnel

    with _workspace(db) as workspace, workspace.unit_of_work() as uow:
        report = funnel(uow, created_from=_utc(created_from), created_to=_utc(created_to))
    if as_json:
        _print_json(report.as_dict())
        return
    _show_funnel(report)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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
        shown = f"{rate['rate']:.1%} → {rate['to']}" if rate and rate["rate"] is not None else ""
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
    if report.recycled:
        out.print(
            f"Nurture loop: {report.recycled.get('nurtured', 0):,} leads nurtured, {report.recycled.get('requalified', 0):,} requalifications to MQL."
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


# --- stage actions ---------------------------------------------------------------------------------


def _stage_command(action: str) -> None:
    spec = STAGE_ACTIONS[action]
    reason_help = f"Reason code{' (required)' if spec.needs_reason else ''}: {', '.join(REASON_CODES)}."

    def command(
        lead_key: Annotated[str, typer.Argument(metavar="LEAD", help="The lead's email, external id, or #id.")],
        by: Annotated[str, typer.Option("--by", help="Who acts (a person's name or user id).")],
        reason: Annotated[str | None, typer.Option("--reason", help=reason_help)] = None,
        note: Annotated[str | None, typer.Option("--note", help="Free text kept with the stage change.")] = None,
        at: Annotated[
            datetime | None, typer.Option("--at", help="When it happened (default: now). UTC unless a zone is given.")
        ] = None,
        db: DbOption = None,
        as_json: JsonOption = False,
    ) -> None:
        from qualify.service.stages import apply_stage_action

        with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
            change = apply_stage_action(uow, lead_key, action, by=by, reason=reason, note=note, at=_utc(at))
        if as_json:
            _print_json(
                {
                    "lead": change.lead,
                    "action": action,
                    "from": change.from_stage,
                    "to": change.to_stage,
                    "at": change.at,
                    "timer_moves": [{"from": f, "to": t, "reason": r} for f, t, r in change.timer_moves],
                }
            )
            return
        for f, t, r in change.timer_moves:
            out.print(f"[yellow]first, {f.value} → {t.value}: {r}[/]")
        out.print(f"{change.lead}: {change.from_stage.value} → [bold]{change.to_stage.value}[/] ({action} by {by}).")

    command.__doc__ = f"{spec.summary[0].upper()}{spec.summary[1:]}."
    stage_app.command(action)(command)


for _action in STAGE_ACTIONS:
    _stage_command(_action)


# --- the service -----------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes (each its own connection pool).")] = 1,
    db: DbOption = None,
) -> None:
    """Run the HTTP API (OpenAPI at /openapi.json, docs at /docs) on the workspace."""
    import os

    import uvicorn

    settings = _settings(db)
    with _workspace(settings.database_url):
        pass  # refuse to start on a missing workspace, with the usual message
    # Worker processes build their own app from the environment, so the URL travels there.
    os.environ["QUALIFY_DATABASE_URL"] = settings.database_url
    uvicorn.run(
        "qualify.entrypoints.api.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info"
    )


keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. 'website-tracker' or 'ana.ruiz'.")],
    role: Annotated[
        str, typer.Option("--role", help="admin, marketing, sales or ingest (docs/api.md lists what each may do).")
    ],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key; the key is printed once and only its hash is stored."""
    from qualify.service.keys import create_key

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        token, info = create_key(uow, name, role)
    if as_json:
        _print_json({"key": token, "key_id": info.key_id, "name": info.name, "role": info.role})
        return
    out.print(f"Created {info.role} key {info.key_id} for {info.name}. Keep it now, it is not shown again:")
    sys.stdout.write(token + "\n")


@keys_app.command("list")
def keys_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List keys: id, name, role, created, last used, revoked (never the secret)."""
    from qualify.service.keys import list_keys

    with _workspace(db) as workspace, workspace.unit_of_work() as uow:
        keys = list_keys(uow)
    if as_json:
        _print_json([{s: getattr(k, s) for s in k.__slots__} for k in keys])
        return
    table = Table("key id", "name", "role", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.key_id,
            k.name,
            k.role,
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `qualify keys list`.")], db: DbOption = None
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from qualify.service.keys import revoke_key

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        revoke_key(uow, key_id)
    out.print(f"Revoked {key_id}.")


@app.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="Run one pass and exit, instead of looping.")] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval", min=0.1, max=3600, help="Seconds between passes (default: QUALIFY_WORKER_INTERVAL or 5)."
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Run the background work: decay-out sweeps, SLA timers and webhook delivery (docs/webhooks.md).

    Loops until SIGTERM or Ctrl-C, which stop it after the pass in progress.
    """
    import logging
    import threading

    from sqlalchemy.engine import make_url

    from qualify.service.worker import PassSummary, Worker, stop_on_signals

    def show(summary: PassSummary) -> None:
        if summary.busy or once:
            out.print(
                f"{summary.at:%Y-%m-%d %H:%M:%S} decayed out {summary.decayed}, SLA breaches {summary.sla_breaches}, "
                f"delivered {summary.delivered}, retrying {summary.retrying}, dead {summary.dead}",
                highlight=False,
                soft_wrap=True,
            )

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("qualify").setLevel(logging.INFO)
    with _workspace(db) as workspace, Worker(workspace) as running:
        if once:
            with _errors():
                show(running.run_once())
            return
        every = interval or workspace.settings.worker_interval
        stop = threading.Event()
        with stop_on_signals(stop):  # before saying so, so a signal right after the message is handled
            err.print(
                f"Worker on {make_url(workspace.settings.database_url).render_as_string(hide_password=True)}: "
                f"a pass every {every:g} s; Ctrl-C or SIGTERM stops it.",
                soft_wrap=True,
                highlight=False,
            )
            passes = running.run(stop, interval=every, on_pass=show)
        err.print(f"Worker stopped after {passes:,} passes.", highlight=False)


webhooks_app = typer.Typer(
    help="Webhook subscriptions and their deliveries: add, list, remove, deliveries, retry.", no_args_is_help=True
)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument(help="Where deliveries are POSTed: an http:// or https:// URL.")],
    kind: Annotated[
        list[str],
        typer.Option(
            "--kind", help="An announcement kind: stage.changed, lead.mql, sla.breached, score.crossed:<N>. Repeatable."
        ),
    ],
    secret: Annotated[
        str | None, typer.Option("--secret", help="Signing secret, 16 to 200 characters (default: a random one).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", help="What the receiver is.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Subscribe a URL to kinds of announcement; the signing secret is printed once."""
    from qualify.service.webhooks import add_subscription

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        subscription, signing = add_subscription(uow, url, kind, secret=secret, description=description)
    if as_json:
        _print_json({**_webhook_dict(subscription), "secret": signing})
        return
    out.print(
        f"Subscription {subscription.id}: {', '.join(subscription.kinds)} → {subscription.url}. "
        "Signing secret (keep it with the receiver; it is not shown again):",
        highlight=False,
    )
    sys.stdout.write(signing + "\n")


def _webhook_dict(subscription: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {**asdict(subscription), "kinds": list(subscription.kinds)}


@webhooks_app.command("list")
def webhooks_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the active subscriptions: id, URL, kinds, description, created (never the secret)."""
    from qualify.service.webhooks import list_subscriptions

    with _workspace(db) as workspace, workspace.unit_of_work() as uow:
        subscriptions = list_subscriptions(uow)
    if as_json:
        _print_json([_webhook_dict(s) for s in subscriptions])
        return
    table = Table("id", "url", "kinds", "description", "created")
    for s in subscriptions:
        table.add_row(str(s.id), s.url, ", ".join(s.kinds), s.description or "", f"{s.created_at:%Y-%m-%d %H:%M}")
    out.print(table)
    if not subscriptions:
        out.print("No subscriptions: add one with `qualify webhooks add URL --kind KIND`.")


@webhooks_app.command("remove")
def webhooks_remove(
    subscription_id: Annotated[
        int, typer.Argument(metavar="ID", help="The subscription's id (`qualify webhooks list`).")
    ],
    db: DbOption = None,
) -> None:
    """Remove a subscription: nothing more is sent to it; its pending deliveries become dead."""
    from qualify.service.webhooks import remove_subscription

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        given_up = remove_subscription(uow, subscription_id)
    out.print(f"Removed subscription {subscription_id}; {given_up:,} pending deliveries given up.")


class DeliveryStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    dead = "dead"


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    status: Annotated[
        DeliveryStatus | None, typer.Option("--status", help="Only pending, delivered or dead deliveries.")
    ] = None,
    subscription: Annotated[int | None, typer.Option("--subscription", help="Only this subscription's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many, newest first.")] = 20,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List deliveries, newest first, with attempts, the next attempt and the last error."""
    from dataclasses import asdict

    from qualify.service.webhooks import list_deliveries

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        found = list_deliveries(uow, status=status.value if status else None, subscription_id=subscription, limit=limit)
    if as_json:
        _print_json([asdict(d) for d in found])
        return
    table = Table("id", "sub", "kind", "created", "status", "attempts", "next attempt", "last error")
    for d in found:
        table.add_row(
            str(d.id),
            str(d.subscription_id),
            d.kind,
            f"{d.created_at:%Y-%m-%d %H:%M:%S}",
            d.status,
            str(d.attempts),
            f"{d.next_attempt_at:%Y-%m-%d %H:%M:%S}" if d.status == "pending" else "",
            escape(d.last_error or ""),
        )
    out.print(table)


@webhooks_app.command("retry")
def webhooks_retry(
    delivery_id: Annotated[
        int, typer.Argument(metavar="ID", help="The delivery's id (`qualify webhooks deliveries`).")
    ],
    db: DbOption = None,
) -> None:
    """Queue a dead delivery again, due now, with a fresh set of attempts."""
    from qualify.service.webhooks import retry_delivery

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        delivery = retry_delivery(uow, delivery_id)
    out.print(f"Delivery {delivery.id} ({delivery.kind} → {delivery.url}) queued again; the worker sends it.")


# --- models --------------------------------------------------------------------------------------


@model_app.command("validate")
def model_validate(
    path: Annotated[Path, typer.Argument(help="The scoring model YAML file.")],
    as_json: JsonOption = False,
) -> None:
    """Check a scoring model; every problem is printed with its line and field."""
    try:
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
    from qualify.service.models import activate_model
    from qualify.service.scoring import rescore_all

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
    from qualify.service.models import active_document, model_history

    with _workspace(db) as workspace, workspace.unit_of_work() as uow, _errors():
        versions = model_history(uow)
        version, document = active_document(uow)
    if as_json:
        _print_json(
            {
                "active": version,
                "document": document,
                "versions": [
                    vars(v) if not hasattr(v, "__slots__") else {s: getattr(v, s) for s in v.__slots__}
                    for v in versions
                ],
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
