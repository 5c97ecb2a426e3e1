"""Commands that make a workspace: init, demo (a workspace with a synthetic world in it) and examples (files to import)."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from qualify.domain.errors import QualifyError
from qualify.entrypoints.cli.base import (
    DbOption,
    JsonOption,
    _errors,
    _print_json,
    _progress,
    _show_funnel,
    _workspace,
    app,
    out,
)

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
    from qualify.service.lifecycle.scoring_models import activate_model, active_document

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
        document = model.read_text(encoding="utf-8") if model else _default_model_text()
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
    serve: Annotated[
        bool, typer.Option("--serve", help="Then serve the dashboard on it (port 8000) until interrupted.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Build a realistic synthetic B2B world, score it, print its funnel and the dashboard's sign-ins."""
    from qualify.demo.world import build_demo
    from qualify.service.lifecycle.scoring_models import activate_model
    from qualify.service.reading.funnel import funnel

    _reset_sqlite(db)
    with _workspace(db, create=True) as workspace:
        with workspace.unit_of_work() as uow:
            activate_model(uow, _default_model_text(), "default_model.yaml")
        with _progress("Building the demo world", not as_json, percent=True) as progress:
            summary = build_demo(workspace, seed=seed, leads=leads, days=days, progress=progress)
        with workspace.unit_of_work() as uow:
            report = funnel(uow)
            people = _demo_users(uow)
            example = _an_mql(uow)
    dashboard = {"url": "http://127.0.0.1:8000/app/", **people}
    if as_json:
        _print_json({"demo": summary.as_dict(), "funnel": report.as_dict(), "database_url": db, "dashboard": dashboard})
        if serve:
            _serve_demo(db, dashboard["url"])
        return
    out.print(
        f"Demo world in {db}: {summary.accounts:,} accounts, {summary.leads:,} leads, {summary.events:,} events, "
        f"{summary.stage_actions:,} sales decisions ({summary.seconds:.1f} s)."
    )
    _show_funnel(report)
    # Each command on a line of its own, never wrapped: it is copied and pasted as it is.
    out.print("Next, the MQLs and one of them:")
    for command in (f"qualify leads --db {db} --stage mql", f"qualify lead --db {db} {example}"):
        out.print(f"  [bold]{escape(command)}[/]", soft_wrap=True, highlight=False)
    out.print("The dashboard:")
    out.print(f"  [bold]qualify serve --db {escape(db)}[/]", soft_wrap=True, highlight=False)
    out.print(
        f"then open {dashboard['url']} and sign in as {people['admin']} (admin) or a sales rep such as "
        f"{people['sales'][0]}, password {people['password']}",
        highlight=False,
    )
    if serve:
        _serve_demo(db, dashboard["url"])


@app.command()
def examples(
    directory: Annotated[
        Path, typer.Argument(metavar="DIRECTORY", help="Where to write them (created if missing).")
    ] = Path("examples"),
    force: Annotated[bool, typer.Option("--force", help="Replace example files you have changed.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write the example files into DIRECTORY: leads, accounts and events to import, their mappings, CRM and dataset mappings, an example scoring model.

    Files already there as shipped are left alone; one you have changed is kept unless --force.
    The README's tour and docs/import.md use them from ./examples.
    """
    from importlib.resources import files

    source = files("qualify") / "examples"
    written: list[str] = []
    unchanged: list[str] = []
    kept: list[str] = []
    with _errors():
        for name, content in sorted(_example_files(source).items()):
            target = directory / name
            if target.is_file() and target.read_bytes() == content:
                unchanged.append(name)
                continue
            if target.exists() and not force:
                kept.append(name)
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            except OSError as exc:
                raise QualifyError(f"{target}: cannot write it ({exc.strerror or exc})") from None
            written.append(name)
    if as_json:
        _print_json({"directory": str(directory), "written": written, "unchanged": unchanged, "kept": kept})
        return
    out.print(
        f"{directory}: {len(written)} example files written, {len(unchanged)} already there.",
        highlight=False,
        soft_wrap=True,
    )
    if kept:
        out.print(
            f"Kept {len(kept)} you changed ({', '.join(kept)}); --force replaces them.", highlight=False, soft_wrap=True
        )
    out.print(
        f"Next: [bold]qualify import leads {escape(str(directory / 'leads.csv'))} "
        f"--mapping {escape(str(directory / 'mapping.yaml'))}[/]",
        soft_wrap=True,
        highlight=False,
    )


def _example_files(folder: Any, prefix: str = "") -> dict[str, bytes]:
    """Every file under the package's examples folder, by its path relative to it."""
    found: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.name.startswith((".", "__")):
            continue
        if entry.is_dir():
            found.update(_example_files(entry, f"{prefix}{entry.name}/"))
        else:
            found[prefix + entry.name] = entry.read_bytes()
    return found


def _an_mql(uow: Any) -> str:
    """The key of the best-scored MQL (else the best lead): a lead the demo just made, for the next command."""
    from qualify.service.reading.lead_list import LeadFilter, list_leads

    rows = list_leads(uow, LeadFilter(stage="mql", limit=1)) or list_leads(uow, LeadFilter(limit=1))
    return str(rows[0]["email"] or f"ext:{rows[0]['external_id']}") if rows else "'#1'"


def _demo_users(uow: Any) -> dict[str, Any]:
    """An admin and the model's sales reps as dashboard users, all with one fresh password."""
    import secrets

    from qualify.domain.errors import Conflict
    from qualify.service.admin.users import add_user

    password = secrets.token_urlsafe(9)
    handoff = uow.active_model().handoff
    reps = [rep.name for team in (handoff.teams if handoff else ()) for rep in team.reps]
    kept = []
    for name, role in [("demo", "admin"), *((rep, "sales") for rep in reps)]:
        try:
            add_user(uow, name, role, password, by="demo")
        except Conflict:  # a demo added to a PostgreSQL database that had one: its users stay as they were
            kept.append(name)
    return {"admin": "demo", "sales": reps, "password": password, "existing_users_kept": kept}


def _serve_demo(db: str, url: str) -> None:
    """Serve the workspace (API and dashboard) until interrupted; open a browser only where there is a display."""
    import os
    import threading
    import webbrowser

    import uvicorn

    from qualify.entrypoints.api.app import create_app
    from qualify.settings import Settings

    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        threading.Timer(1.5, webbrowser.open, args=(url,)).start()
    out.print(f"Serving the dashboard at {url} (Ctrl+C stops it).")
    uvicorn.run(create_app(Settings(database_url=db)), host="127.0.0.1", port=8000, log_level="warning")


def _reset_sqlite(url: str) -> None:
    from sqlalchemy.engine import make_url

    with _errors():
        parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        for suffix in ("", "-wal", "-shm"):
            Path(parsed.database + suffix).unlink(missing_ok=True)


def _default_model_text() -> str:
    from qualify.domain.model_loader import default_model_text

    return default_model_text()
