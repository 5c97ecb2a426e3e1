"""Commands on leads: import, score, leads, lead, accounts, account, funnel, and people's stage actions."""

import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qualify.domain.account_stages import ACCOUNT_ACTIONS
from qualify.domain.lifecycle import REASON_CODES, STAGE_ACTIONS
from qualify.entrypoints.cli.base import (
    DbOption,
    JsonOption,
    _errors,
    _fail,
    _print_json,
    _progress,
    _show_funnel,
    _utc,
    _workspace,
    account_stage_app,
    app,
    err,
    out,
    report_app,
    stage_app,
)

# --- import & scoring -----------------------------------------------------------------------------


class ImportKind(StrEnum):
    leads = "leads"
    accounts = "accounts"
    events = "events"
    stages = "stages"
    deals = "deals"


@app.command("import")
def import_(
    kind: Annotated[
        ImportKind,
        typer.Argument(help="What the file holds: leads, accounts, events, stages (stage changes) or deals."),
    ],
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
    historical: Annotated[
        bool,
        typer.Option(
            "--historical",
            help="The file is history: it moves leads as live data would, but starts no SLA clock, sends no "
            "webhook and enrols nobody in a workflow.",
        ),
    ] = False,
    history_before: Annotated[
        datetime | None,
        typer.Option(
            "--history-before",
            help="Only what is dated before this instant (UTC unless a zone is given) is history; the rest is live.",
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import leads, accounts, events, stage changes or deals; bad rows go to a rejects file, good ones are kept.

    Re-importing the same file changes nothing: leads are upserted by email or external id,
    accounts by domain, events are idempotent by event_id, stage changes by lead, stage and
    instant, deals by deal_id. Stage changes and deals are history: they start no SLA clock and
    send nothing. Leads whose history arrived out of time order are rebuilt in order at the end.
    """
    from qualify.service.imports.files import import_file
    from qualify.service.imports.mapping import load_mapping
    from qualify.service.pipeline import reacting
    from qualify.service.unit_of_work import utcnow

    with _workspace(db) as workspace:
        if not path.is_file():
            _fail(f"no such file: {path}")
        spec = load_mapping(mapping) if mapping else None
        size = batch_size or workspace.settings.batch_size
        cutoff = _utc(history_before) or (utcnow() if historical else None)
        if cutoff is not None:
            workspace = reacting(workspace, history_before=cutoff)
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
    if data["leads_rebuilt"]:
        out.print(f"{data['leads_rebuilt']:,} leads' stage history rebuilt in time order.")
    if data.get("rejects_path"):
        out.print(f"[yellow]Rejected rows, with line, field and reason:[/] {data['rejects_path']}")


@app.command()
def score(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Rescore every lead with the active model (fit, engagement from its events, then the stage policy)."""
    from qualify.service.lifecycle.rescoring import rescore_all

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
    keys: Annotated[
        bool,
        typer.Option(
            "--keys",
            help="Print only the leads' keys, one a line: for a shell's $(…) or xargs, as `qualify lead` takes them.",
        ),
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List leads, best first, with their stage, grade, persona and scores (as last scored)."""
    from qualify.service.reading.lead_list import LeadFilter, list_leads

    with _workspace(db, reading=True) as workspace, workspace.unit_of_work(read_only=True) as uow, _errors():
        rows = list_leads(
            uow, LeadFilter(stage=stage, grade=grade, persona=persona, sort=sort.value, limit=limit, offset=offset)
        )
    if as_json:
        _print_json(rows)
        return
    if keys:
        sys.stdout.write("".join(f"{r['email'] or 'ext:' + r['external_id']}\n" for r in rows))
        return
    cells = [
        {
            "lead": r["email"] or f"ext:{r['external_id']}",  # what `qualify lead` takes: never cut
            "name": " ".join(p for p in (r["first_name"], r["last_name"]) if p),
            "title": r["title"] or "",
            "account": r["account"] or "",
            "stage": r["stage"],
            "grade": r["fit_grade"],
            "fit": f"{r['fit_score']:.0f}",
            "engagement": f"{r['engagement_score']:.1f}",
            "score": f"{r['score']:.1f}",
            "persona": r["persona"] or "",
        }
        for r in rows
    ]
    table, dropped, needed = _fitting_table(cells, keep=("lead", "stage", "grade", "score"), drop=LEADS_DROPPED_FIRST)
    terminal = out.width
    out.width = max(terminal, needed)  # wider than the terminal rather than a key cut
    try:
        out.print(table)
    finally:
        out.width = terminal
    if dropped:
        err.print(f"[dim]Left out to fit the terminal: {', '.join(dropped)} (--json has every field).[/]")
    if not rows:
        out.print("No leads match.")


# The columns `qualify leads` leaves out first on a narrow terminal, in this order.
LEADS_DROPPED_FIRST = ("persona", "title", "fit", "engagement", "account", "name")


def _fitting_table(
    rows: list[dict[str, str]], *, keep: tuple[str, ...], drop: tuple[str, ...]
) -> tuple[Table, list[str], int]:
    """A table of `rows` (each a column → text mapping, in column order) that fits the terminal:
    the columns in `drop` are left out in that order until the rest fits, and the columns in
    `keep` are never cut or wrapped (a key must stay whole to be copied). Also returns the
    columns left out and the width the table needs."""
    columns = list(rows[0]) if rows else [*keep, *drop]
    dropped: list[str] = []

    def width(names: list[str]) -> int:
        return sum(max([len(n), *(len(r[n]) for r in rows)]) + 3 for n in names) + 1

    for name in drop:
        if width(columns) <= out.width:
            break
        columns.remove(name)
        dropped.append(name)
    table = Table()
    for name in columns:
        table.add_column(name, no_wrap=name in keep, overflow="fold" if name in keep else "ellipsis")
    for r in rows:
        table.add_row(*(r[name] for name in columns))
    return table, dropped, width(columns)


@app.command()
def lead(
    key: Annotated[str, typer.Argument(help="The lead's email, external id, or #id.")],
    events: Annotated[int, typer.Option("--events", min=0, max=1000, help="Timeline events per page.")] = 20,
    page: Annotated[int, typer.Option("--page", min=1, help="Timeline page, newest first.")] = 1,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One lead: profile, scores with their explanation, timeline and stage history."""
    from qualify.service.reading.queries import lead_profile

    with _workspace(db, reading=True) as workspace, workspace.unit_of_work(read_only=True) as uow, _errors():
        profile = lead_profile(uow, key, timeline_limit=events, timeline_offset=(page - 1) * events)
    if as_json:
        _print_json(profile.as_dict())
        return
    _show_profile(profile, page, events)


def _show_prediction(prediction: dict[str, Any] | None) -> None:
    if prediction is None:
        return
    out.print(
        f"\n[bold]Probability {prediction['probability']:.0%}[/] (model {prediction['model_version']}, "
        f"as of {prediction['at'][:16].replace('T', ' ')} UTC; base {prediction['base_probability']:.0%})"
    )
    for title, key in (("raises it", "top_positive"), ("lowers it", "top_negative")):
        out.print(f"  what {title}:")
        for part in prediction[key]:
            out.print(f"    {part['words']}: {part['effect']:+.2f}", highlight=False, markup=False)
        if not prediction[key]:
            out.print("    (nothing)")


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
    for journey in profile.journeys:
        which = "current journey" if journey["current"] else "earlier journey"
        out.print(
            f"  {which} #{journey['id']} {journey['external_id'] or ''}: {journey['stage']}, "
            f"created {journey['created_at']:%Y-%m-%d}",
            highlight=False,
            markup=False,
        )
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
    _show_prediction(profile.prediction)
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


class AccountSortKey(StrEnum):
    engagement = "engagement"
    leads = "leads"
    activity = "activity"
    name = "name"
    fit = "fit"
    coverage = "coverage"


class AccountStageName(StrEnum):
    target = "target"
    engaged = "engaged"
    mqa = "mqa"
    opportunity = "opportunity"
    customer = "customer"


@app.command()
def accounts(
    search: Annotated[str | None, typer.Option(help="Words to find in the name or domain.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only accounts this rep owns, or where they own a lead.")] = None,
    stage: Annotated[AccountStageName | None, typer.Option(help="Only accounts in this stage.")] = None,
    sort: Annotated[
        AccountSortKey,
        typer.Option(
            help="engagement (its people's, summed), leads, activity (newest event), name, fit or coverage"
            " (as last scored)."
        ),
    ] = AccountSortKey.engagement,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List accounts with their people and pipeline and, where the active model scores accounts,
    their fit and buying-group coverage."""
    from qualify.service.reading.accounts import list_accounts

    with _workspace(db, reading=True) as workspace, workspace.unit_of_work(read_only=True) as uow, _errors():
        rows, total = list_accounts(
            uow,
            search=search,
            owner=owner,
            stage=stage.value if stage else None,
            sort=sort.value,
            limit=limit,
            offset=offset,
        )
    if as_json:
        _print_json({"total": total, "items": [row.as_dict() for row in rows]})
        return
    cells = [
        {
            "account": r.domain,  # what `qualify account` takes: never cut
            "stage": r.stage,
            "fit": f"{r.scores.fit:.0f} {r.scores.grade}" if r.scores else "",
            "roles": f"{len(r.scores.covered)}/{len(r.scores.roles)}" if r.scores else "",
            "leads": f"{r.leads:,}",
            "MQLs": str(r.mqls),
            "pipeline": str(r.pipeline),
            "engagement": f"{r.engaged:.1f}",
            "name": r.name or "",
            "industry": r.industry or "",
            "employees": f"{r.employees:,}" if r.employees is not None else "",
            "owner": r.owner or "",
        }
        for r in rows
    ]
    table, dropped, _ = _fitting_table(cells, keep=("account", "stage", "fit", "roles"), drop=ACCOUNTS_DROPPED_FIRST)
    out.print(table)
    shown = f", {offset + 1}-{offset + len(rows)} shown" if rows else ""
    out.print(f"{total:,} accounts{shown}; roles: of the buying group's, how many have engaged people")
    if dropped:
        err.print(f"[dim]Left out to fit the terminal: {', '.join(dropped)} (--json has every field).[/]")


# The columns `qualify accounts` leaves out first on a narrow terminal, in this order.
ACCOUNTS_DROPPED_FIRST = ("employees", "industry", "owner", "name", "pipeline", "MQLs")


@app.command()
def account(
    key: Annotated[str, typer.Argument(help="The account's domain, or #id.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One account: its fit, its people's engagement and its buying group's coverage, explained
    (where the active model has an `accounts` section), its people and open deals."""
    from qualify.service.reading.accounts import account_id_of, account_view

    with _workspace(db, reading=True) as workspace, workspace.unit_of_work(read_only=True) as uow, _errors():
        view = account_view(uow, account_id_of(uow, key))
    if as_json:
        _print_json(view.as_dict())
        return
    a = view.account
    out.print(f"[bold]{a['name'] or a['domain']}[/] ({a['domain']}, #{a['id']})", highlight=False)
    out.print(
        f"  {a['industry'] or 'industry ?'} · {a['employees'] or '?'} employees · {a['country'] or '?'}"
        f" · owner {view.owner or '(none)'}",
        highlight=False,
        markup=False,
    )
    since = f" since {a['stage_entered_at']:%Y-%m-%d %H:%M}" if a["stage_entered_at"] else ""
    due = f", to accept or reject by {a['sla_due_at']:%Y-%m-%d %H:%M} UTC" if a["sla_due_at"] else ""
    out.print(f"  stage [bold]{a['stage']}[/]{since}{due}", highlight=False)
    if a["pending_since"] is not None:
        out.print(
            f"  its people changed since {a['pending_since']:%Y-%m-%d %H:%M} UTC: the worker's next pass keeps it",
            highlight=False,
        )
    for h in view.history[:5]:
        why = f": {h['reason']}" if h["reason"] else ""
        out.print(
            f"    {h['at']:%Y-%m-%d %H:%M} {h['from_stage']} → {h['to_stage']} by {h['by']}{why}",
            highlight=False,
            markup=False,
        )
    scores = view.scores
    if scores is None:
        out.print("\n  The active scoring model scores no accounts (it has no `accounts` section).")
    else:
        out.print(
            f"\n[bold]Account fit {scores.fit:.0f} (grade {scores.grade})[/]   [bold]Engagement {scores.engagement:.1f}[/]"
            f" across its people   [bold]Buying group {scores.coverage}[/]",
            highlight=False,
        )
        for title, parts in (("fit", scores.fit_contributions), ("engagement", scores.engagement_contributions)):
            out.print(f"  why this {title}:")
            for part in parts:
                out.print(f"    {part.render()}", highlight=False, markup=False)
            if not parts:
                out.print("    (nothing yet)")
        out.print("  roles:")
        for role in scores.roles:
            who = ", ".join(role.people) if role.covered else "nobody engaged"
            idle = f" (not engaged: {', '.join(role.candidates)})" if role.candidates else ""
            out.print(f"    {'✓' if role.covered else '·'} {role.role}: {who}{idle}", highlight=False, markup=False)
    stages = ", ".join(f"{count} {stage}" for stage, count in view.stages.items() if count)
    out.print(f"\n[bold]People[/] ({stages or 'none'})")
    for p in view.leads[:20]:
        out.print(
            f"  {p['email'] or '#' + str(p['id'])}  {p['title'] or ''}  {p['stage']}  fit {p['fit_score']:.0f}"
            f"  engagement {p['engagement_score']:.1f}",
            highlight=False,
            markup=False,
        )
    for deal in view.deals:
        out.print(f"  open deal {deal['deal_id']} since {deal['opened_at']:%Y-%m-%d}", highlight=False, markup=False)


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
    from qualify.service.reading.funnel import funnel

    with _workspace(db, reading=True) as workspace, workspace.unit_of_work(read_only=True) as uow:
        report = funnel(uow, created_from=_utc(created_from), created_to=_utc(created_to))
    if as_json:
        _print_json(report.as_dict())
        return
    _show_funnel(report)


report_app.command(
    "funnel",
    help="The funnel (as `qualify funnel`): counts, conversion with 95% intervals, days per stage, MQL acceptance by sales, SLA.",
)(funnel_)


@report_app.command("accounts")
def report_accounts(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The account funnel: accounts by stage, conversion with 95% intervals, days per stage, sales'
    reasons, and the buying-group roles covered when accounts became opportunities, won against lost."""
    from qualify.service.reading.account_funnel import account_funnel

    with _workspace(db, reading=True) as workspace, workspace.unit_of_work(read_only=True) as uow, _errors():
        report = account_funnel(uow)
    if as_json:
        _print_json(report.as_dict())
        return
    out.print(f"[bold]{report.total_accounts:,} accounts[/]")
    for stage, now_ in report.current.items():
        days = report.days_in_stage[stage]
        stay = f"   median {days['median']:.1f} d in it" if days["median"] is not None else ""
        out.print(f"  {stage:<12} {now_:>6,} now   {report.reached[stage]:>6,} reached{stay}", highlight=False)
    out.print("[bold]Conversion[/]")
    for step in report.conversion:
        rate = "—" if step["rate"] is None else f"{step['rate']:.1%}"
        low_high = f" (95%: {step['interval_95'][0]:.0%}–{step['interval_95'][1]:.0%})" if step["interval_95"] else ""
        out.print(
            f"  {step['from']} → {step['to']}: {step['to_count']:,} of {step['from_count']:,}, {rate}{low_high}",
            highlight=False,
        )
    for move, counts in report.reasons.items():
        out.print(f"  sent back {move}: " + ", ".join(f"{r} {n}" for r, n in counts.items()), highlight=False)
    out.print("[bold]Buying group when they became opportunities[/]")
    for outcome, seen in report.coverage.items():
        if not seen["accounts"]:
            continue
        roles = ", ".join(f"{role} {share['rate']:.0%}" for role, share in seen["roles"].items()) or "none covered"
        out.print(
            f"  {outcome}: {seen['accounts']:,} accounts, {seen['mean_roles']:.1f} roles covered on average; {roles}",
            highlight=False,
            markup=False,
        )


# --- stage actions ---------------------------------------------------------------------------------


# The options of every person's action on a lead (`qualify stage`) or an account (`qualify account-stage`).
ByOption = Annotated[str, typer.Option("--by", help="Who acts (a person's name or user id).")]
NoteOption = Annotated[str | None, typer.Option("--note", help="Free text kept with the stage change.")]
AtOption = Annotated[
    datetime | None, typer.Option("--at", help="When it happened (default: now). UTC unless a zone is given.")
]


def _stage_command(action: str) -> None:
    spec = STAGE_ACTIONS[action]
    reason_help = f"Reason code{' (required)' if spec.needs_reason else ''}: {', '.join(REASON_CODES)}."

    def command(
        lead_key: Annotated[str, typer.Argument(metavar="LEAD", help="The lead's email, external id, or #id.")],
        by: ByOption,
        reason: Annotated[str | None, typer.Option("--reason", help=reason_help)] = None,
        note: NoteOption = None,
        at: AtOption = None,
        db: DbOption = None,
        as_json: JsonOption = False,
    ) -> None:
        from qualify.service.lifecycle.stages import apply_stage_action

        with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
            change = apply_stage_action(uow, lead_key, action, by=by, reason=reason, note=note, at=_utc(at))
        if as_json:
            _print_json(change.as_dict(action))
            return
        for f, t, r in change.timer_moves:
            out.print(f"[yellow]first, {f.value} → {t.value}: {r}[/]")
        out.print(f"{change.lead}: {change.from_stage.value} → [bold]{change.to_stage.value}[/] ({action} by {by}).")

    command.__doc__ = f"{spec.summary[0].upper()}{spec.summary[1:]}."
    stage_app.command(action)(command)


for _action in STAGE_ACTIONS:
    _stage_command(_action)


def _account_stage_command(action: str) -> None:
    spec = ACCOUNT_ACTIONS[action]
    reason_help = f"Reason code{' (required)' if spec.needs_reason else ''}: {', '.join(REASON_CODES)}."

    def command(
        key: Annotated[str, typer.Argument(metavar="ACCOUNT", help="The account's domain, or #id.")],
        by: ByOption,
        reason: Annotated[str | None, typer.Option("--reason", help=reason_help)] = None,
        note: NoteOption = None,
        at: AtOption = None,
        db: DbOption = None,
        as_json: JsonOption = False,
    ) -> None:
        from qualify.service.lifecycle.accounts import act_on_account
        from qualify.service.reading.accounts import account_id_of

        with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
            change = act_on_account(uow, account_id_of(uow, key), action, by=by, reason=reason, note=note, now=_utc(at))
        if as_json:
            _print_json(change.as_dict())
            return
        out.print(f"{change.account}: {change.from_stage.value} → [bold]{change.to_stage.value}[/] ({action} by {by}).")

    command.__doc__ = f"{spec.summary[0].upper()}{spec.summary[1:]}."
    account_stage_app.command(action)(command)


for _action in ACCOUNT_ACTIONS:
    _account_stage_command(_action)
