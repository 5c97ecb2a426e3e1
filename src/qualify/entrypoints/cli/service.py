"""Commands of the service: serve, keys, worker, webhooks."""

import sys
from dataclasses import asdict
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from qualify.entrypoints.cli.base import (
    DbOption,
    JsonOption,
    _errors,
    _fail,
    _print_json,
    _settings,
    _workspace,
    app,
    err,
    out,
)

if TYPE_CHECKING:
    from qualify.settings import Settings

# --- the service -----------------------------------------------------------------------------------


class LogLevel(StrEnum):
    """Levels a server or worker logs at; uvicorn's `trace` is left out: it logs request headers, keys included."""

    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


LogLevelOption = Annotated[
    LogLevel, typer.Option("--log-level", help="How much to log: error, warning, info or debug (never secrets).")
]


def _refuse_weak_secrets(settings: "Settings", *, smtp: bool) -> None:
    """Stop with a clear error when a secret in the environment is a placeholder or too weak
    (the message never shows the value)."""
    from qualify.service.admin.users import MIN_SECRET, placeholder_password, weak_secret

    if settings.session_secret is not None and (reason := weak_secret(settings.session_secret)):
        _fail(
            f"QUALIFY_SESSION_SECRET is not safe to sign dashboard sessions with: {reason}. "
            f"Set it to a random value of {MIN_SECRET} characters or more, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`, or unset it: then one is made "
            "once and kept in the workspace (docs/security.md)"
        )
    if smtp and settings.smtp_password is not None and (reason := placeholder_password(settings.smtp_password)):
        _fail(f"QUALIFY_SMTP_PASSWORD is not a real password: {reason}. Set the SMTP server's password, or unset it")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes (each its own connection pool).")] = 1,
    log_level: LogLevelOption = LogLevel.info,
    db: DbOption = None,
) -> None:
    """Run the HTTP API (OpenAPI at /openapi.json, docs at /docs) on the workspace.

    Refuses to start when QUALIFY_SESSION_SECRET is set to a placeholder or a weak value.
    """
    import os

    import uvicorn

    settings = _settings(db)
    _refuse_weak_secrets(settings, smtp=False)
    with _workspace(settings.database_url):
        pass  # refuse to start on a missing workspace, with the usual message
    # Worker processes build their own app from the environment, so the URL travels there.
    os.environ["QUALIFY_DATABASE_URL"] = settings.database_url
    from qualify.entrypoints.observability import log_config

    uvicorn.run(
        "qualify.entrypoints.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level.value,
        log_config=log_config(settings.log_format, log_level.value),
    )


keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key, e.g. 'website-tracker' or 'ana.ruiz'.")],
    role: Annotated[
        str,
        typer.Option("--role", help="admin, marketing, sales, ingest or monitor (docs/api.md lists what each may do)."),
    ],
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            help="The dashboard user the key acts for (required for sales keys): its stage actions are "
            "recorded as theirs, a sales key acts only on their leads, and it stops when they are disabled.",
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key; the key is printed once and only its hash is stored."""
    from qualify.service.admin.api_keys import create_key

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        token, info = create_key(uow, name, role, user=user)
    if as_json:
        _print_json({"key": token, "key_id": info.key_id, "name": info.name, "role": info.role, "user": info.user})
        return
    acting = f", acting as {info.user}" if info.user else ""
    out.print(f"Created {info.role} key {info.key_id} for {info.name}{acting}. Keep it now, it is not shown again:")
    sys.stdout.write(token + "\n")


@keys_app.command("list")
def keys_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List keys: id, name, role, the user it acts for, created, last used, revoked (never the secret)."""
    from qualify.service.admin.api_keys import list_keys

    with _workspace(db) as workspace, workspace.unit_of_work() as uow:
        keys = list_keys(uow)
    if as_json:
        _print_json([asdict(k) for k in keys])
        return
    table = Table("key id", "name", "role", "user", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.key_id,
            k.name,
            k.role,
            k.user or "",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )
    out.print(table)


users_app = typer.Typer(help="People who sign in to the dashboard: add, list.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The name the person signs in with, e.g. 'ana.ruiz'.")],
    role: Annotated[
        str, typer.Option("--role", help="admin, marketing or sales (a sales user sees only their own MQLs).")
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input instead of a prompt.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Add a dashboard user; the password (10 characters or more) is stored as a scrypt hash."""
    from qualify.service.admin.users import add_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        _fail("no terminal to ask the password on: give it on standard input with --password-stdin")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        user = add_user(uow, name, role, password)
    out.print(f"Added {user.role} user {user.name}.")


@users_app.command("list")
def users_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List dashboard users: name, role, created (never the password)."""
    from qualify.service.admin.users import list_users

    with _workspace(db) as workspace, workspace.unit_of_work(read_only=True) as uow:
        people = list_users(uow)
    if as_json:
        _print_json([{"name": u.name, "role": u.role, "created_at": u.created_at.isoformat()} for u in people])
        return
    table = Table("name", "role", "created")
    for u in people:
        table.add_row(u.name, u.role, f"{u.created_at:%Y-%m-%d %H:%M}")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `qualify keys list`.")], db: DbOption = None
) -> None:
    """Revoke a key: requests with it are refused from now on."""
    from qualify.service.admin.api_keys import revoke_key

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
    log_level: LogLevelOption = LogLevel.info,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve the worker's Prometheus metrics (pass durations, failed passes) on this port of 127.0.0.1.",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Run the background work: decay-out, SLA timers, segments, workflow steps, email and webhook delivery.

    Loops until SIGTERM or Ctrl-C, which stop it after the pass in progress. Refuses to start when
    QUALIFY_SMTP_PASSWORD is an example's placeholder.
    """
    import logging
    import threading

    from sqlalchemy.engine import make_url

    from qualify.service.worker import PassSummary, Worker, stop_on_signals

    def show(summary: PassSummary) -> None:
        if summary.busy or once:
            out.print(
                f"{summary.at:%Y-%m-%d %H:%M:%S} rebuilt {summary.rebuilt}, "
                f"decayed out {summary.decayed}, accounts kept {summary.accounts_kept}, "
                f"SLA breaches {summary.sla_breaches}, "
                f"segment changes {summary.segment_changes}, workflow steps {summary.workflow_steps}, "
                f"emails sent {summary.emails_sent}, "
                f"delivered {summary.delivered}, retrying {summary.retrying}, dead {summary.dead}",
                highlight=False,
                soft_wrap=True,
            )

    from qualify.entrypoints.observability import WORKER_PASS_SECONDS, WORKER_PASSES, JsonLines, serve_metrics

    settings = _settings(db)
    _refuse_weak_secrets(settings, smtp=True)
    level = getattr(logging, log_level.value.upper())
    # Other libraries (SMTP, HTTP clients) log their own debug lines only at debug.
    root = level if level == logging.DEBUG else max(level, logging.WARNING)
    logging.basicConfig(level=root, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLines())
    logging.getLogger("qualify").setLevel(level)
    if metrics_port is not None:
        serve_metrics(metrics_port)

    def measured(summary: PassSummary) -> None:
        WORKER_PASS_SECONDS.observe(summary.seconds)
        WORKER_PASSES.labels("done").inc()
        show(summary)

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
            passes = running.run(
                stop, interval=every, on_pass=measured, on_error=lambda: WORKER_PASSES.labels("failed").inc()
            )
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
            "--kind",
            help="An announcement kind: stage.changed, lead.mql, sla.breached, score.crossed:<N>, workflow.notify, account.stage.changed, account.mqa, account.sla.breached. Repeatable.",
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
    from qualify.service.integrations.webhooks import add_subscription

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
    from qualify.service.integrations.webhooks import list_subscriptions

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
    from qualify.service.integrations.webhooks import remove_subscription

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

    from qualify.service.integrations.webhooks import list_deliveries

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
    from qualify.service.integrations.webhooks import retry_delivery

    with _workspace(db) as workspace, _errors(), workspace.unit_of_work() as uow:
        delivery = retry_delivery(uow, delivery_id)
    out.print(f"Delivery {delivery.id} ({delivery.kind} → {delivery.url}) queued again; the worker sends it.")


# --- backup and restore ------------------------------------------------------------------------------


@app.command()
def backup(
    file: Annotated[
        str, typer.Argument(help="Where to write the backup (gzip JSON Lines), e.g. qualify-2026-11-23.qbk.")
    ],
    with_secrets: Annotated[
        bool,
        typer.Option(
            "--with-secrets",
            help="Also keep the dashboard's session key (left out by default: whoever holds it can sign in as anyone).",
        ),
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write every row of the workspace to FILE, in one consistent snapshot, with per-table checksums;
    signed when QUALIFY_BACKUP_KEY is set."""
    from pathlib import Path

    from qualify.service.admin.backup import backup as write_backup

    key = _backup_key(db)
    with _workspace(db) as workspace, _errors():
        manifest = write_backup(workspace, Path(file), secrets=with_secrets, key=key)
    if as_json:
        _print_json(manifest.as_dict() | {"file": file})
        return
    rows = sum(manifest.counts.values())
    signed = "signed" if manifest.signed else "unsigned (set QUALIFY_BACKUP_KEY to sign backups)"
    out.print(
        f"Backed up {rows:,} rows of {len(manifest.counts)} tables (schema {manifest.revision}) to {escape(file)}, "
        f"{signed}."
    )


def _backup_key(db: str | None) -> str | None:
    """QUALIFY_BACKUP_KEY, refused (exit 2) when it is a placeholder or too weak to sign with."""
    from qualify.service.admin.users import weak_secret

    key = _settings(db).backup_key
    if key is None:
        return None
    if (why := weak_secret(key)) is not None:
        _fail(f"QUALIFY_BACKUP_KEY cannot sign backups: {why}")
    return key.get_secret_value()


@app.command()
def restore(
    file: Annotated[str, typer.Argument(help="A backup made by `qualify backup`.")],
    unsigned: Annotated[
        bool,
        typer.Option(
            "--unsigned",
            help="Restore without checking a signature (a backup from before QUALIFY_BACKUP_KEY was set); "
            "every row is still checked as live input.",
        ),
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore FILE into an empty database (SQLite or PostgreSQL), checking every row as live input
    and, with QUALIFY_BACKUP_KEY, its signature; then check every table against it."""
    from pathlib import Path

    from qualify.service.admin.backup import restore as read_backup

    settings = _settings(db)
    key = None if unsigned else _backup_key(db)
    with _errors():
        if not Path(file).is_file():
            raise FileNotFoundError(2, "no such file", file)
        manifest = read_backup(settings.database_url, Path(file), key=key, unsigned=unsigned)
    if as_json:
        _print_json(manifest.as_dict() | {"verified": True})
        return
    rows = sum(manifest.counts.values())
    signed = (
        "its signature is good"
        if manifest.signed
        else "it is unsigned: its rows were checked, but who made it cannot be told"
    )
    out.print(
        f"Restored {rows:,} rows of {len(manifest.counts)} tables; every table matches the backup's checksums; "
        f"{signed}."
    )
