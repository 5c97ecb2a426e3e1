"""Backup and restore of a whole workspace, on SQLite and PostgreSQL alike (and from one to the other).

A backup is one gzip-compressed JSON Lines file: a header (format, schema revision, when), then
every row of every table in dependency order and primary-key order, then a footer with each
table's row count and a SHA-256 of its rows in a canonical form. It is read in one snapshot
(REPEATABLE READ on PostgreSQL, one read transaction on SQLite's write-ahead log), so a backup
taken while events arrive is consistent.

A restore goes into a database without a workspace (or an empty one), migrates it to the
backup's revision, inserts the rows, moves PostgreSQL's id sequences past them, and then reads
everything back and compares counts and checksums with the footer: a restore that differs in
any value is reported as such, not claimed done.

Checksums tell a damaged file, not an edited one: whoever edits rows recomputes them. So every
row is checked as live input is before it goes in (`restore_checks.py`), and a backup made with
a key (`QUALIFY_BACKUP_KEY`) carries an HMAC-SHA256 of every line, which a restore with the same
key checks before it commits: a backup changed by anyone without the key is refused whole.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Table, func, select, text

from qualify.adapters import schema
from qualify.adapters.store import READ_ONLY, create_store_engine, head_revision, migrate, schema_revision
from qualify.domain.errors import InvalidInput, QualifyError
from qualify.service.admin.restore_checks import checked_row
from qualify.service.unit_of_work import Workspace, private_sqlite_file, utcnow

FORMAT, VERSION = "qualify-backup", 1
BATCH = 1000


class RestoreMismatch(QualifyError):
    """The restored workspace differs from the backup."""


class NotAuthentic(QualifyError):
    """A signed backup whose signature does not match (changed, or signed with another key), or
    one whose signing does not match what the restore expects."""


def _mac(key: str | None) -> hmac.HMAC | None:
    return hmac.new(key.encode(), digestmod=hashlib.sha256) if key else None


@dataclass(slots=True)
class Manifest:
    revision: str
    created_at: str
    counts: dict[str, int] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    secrets: bool = False  # whether the dashboard's session key is in it (`backup(..., secrets=True)`)
    signed: bool = False  # whether it carries an HMAC made with the operator's backup key

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "created_at": self.created_at,
            "counts": self.counts,
            "checksums": self.checksums,
            "secrets": self.secrets,
            "signed": self.signed,
        }


def _tables() -> list[Table]:
    return list(schema.metadata.sorted_tables)


def _encode(table: Table, row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in table.columns:
        value = row._mapping[column.name]
        out[column.name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _canonical(values: dict[str, Any]) -> bytes:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


# Rows of `workspace_settings` that are secrets: the dashboard's session key, from which anyone
# holding it could sign themselves in as an admin. Kept out of a backup unless asked for.
SECRET_SETTINGS = ("session_secret",)


def _rows(conn: Connection, table: Table, *, secrets: bool = True) -> Iterator[dict[str, Any]]:
    ordered = select(table).order_by(*table.primary_key.columns)
    if not secrets and table is schema.workspace_settings:
        ordered = ordered.where(table.c.key.not_in(SECRET_SETTINGS))
    for row in conn.execution_options(yield_per=BATCH).execute(ordered):
        yield _encode(table, row)


def _snapshot(workspace: Workspace) -> Connection:
    conn = workspace.engine.connect()
    if conn.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    else:
        conn = conn.execution_options(**{READ_ONLY: True})
    conn.begin()
    return conn


def backup(workspace: Workspace, path: Path, *, secrets: bool = False, key: str | None = None) -> Manifest:
    """Write every row of the workspace to `path` (gzip JSON Lines, readable by its owner only);
    return the manifest written. The session key stays out unless `secrets` (a workspace restored
    without it makes a new one: its dashboard sessions start afresh). With `key`, the backup is
    signed: an HMAC-SHA256 of every line and of the manifest, in the footer."""
    revision = schema_revision(workspace.engine) or "?"
    manifest = Manifest(revision, utcnow().isoformat(), secrets=secrets, signed=key is not None)
    mac = _mac(key)
    conn = _snapshot(workspace)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # personal data: the owner's only
    try:
        with gzip.open(partial, "wt", encoding="utf-8") as out:

            def write(line: str) -> None:
                out.write(line)
                if mac is not None:
                    mac.update(line.encode())

            header = {"format": FORMAT, "version": VERSION, "revision": revision, "created_at": manifest.created_at}
            write(json.dumps(header | {"signed": manifest.signed}) + "\n")
            for table in _tables():
                digest, count = hashlib.sha256(), 0
                for values in _rows(conn, table, secrets=secrets):
                    digest.update(_canonical(values))
                    write(json.dumps({"t": table.name, "r": values}, ensure_ascii=False) + "\n")
                    count += 1
                manifest.counts[table.name] = count
                manifest.checksums[table.name] = digest.hexdigest()
            footer: dict[str, Any] = {"footer": manifest.as_dict()}
            if mac is not None:
                mac.update(_canonical(manifest.as_dict()))
                footer["signature"] = f"hmac-sha256:{mac.hexdigest()}"
            out.write(json.dumps(footer) + "\n")
        partial.replace(path)  # a backup cut short never looks like a whole one
    finally:
        conn.rollback()
        conn.close()
        partial.unlink(missing_ok=True)
    return manifest


def verify(workspace: Workspace, manifest: Manifest) -> list[str]:
    """What differs between the workspace and a backup's manifest (empty: nothing)."""
    conn = _snapshot(workspace)
    problems = []
    try:
        for table in _tables():
            digest, count = hashlib.sha256(), 0
            for values in _rows(conn, table, secrets=manifest.secrets):
                digest.update(_canonical(values))
                count += 1
            want_count = manifest.counts.get(table.name, 0)
            if count != want_count:
                problems.append(f"{table.name}: {count} rows, the backup has {want_count}")
            elif digest.hexdigest() != manifest.checksums.get(table.name, hashlib.sha256().hexdigest()):
                problems.append(f"{table.name}: the rows' values differ from the backup's")
    finally:
        conn.rollback()
        conn.close()
    return problems


# The longest line a backup may hold: one row (the largest are stored predictive models, a few MB).
# A longer one is refused before it is read whole, so a crafted file cannot exhaust the memory.
MAX_LINE_CHARS = 64 << 20


def _read(handle: IO[str], source: str, mac: hmac.HMAC | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each line parsed, with its number; every line but the footer goes into `mac`."""
    number = 0
    while line := handle.readline(MAX_LINE_CHARS + 1):
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise InvalidInput(
                f"{source}, line {number}: longer than {MAX_LINE_CHARS:,} characters, which no row is; "
                "the backup is damaged or was not made by qualify backup",
                field="file",
            )
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise InvalidInput(f"{source}, line {number}: not JSON ({error.msg})", field="file") from error
        if not isinstance(item, dict):
            raise InvalidInput(f"{source}, line {number}: not a backup line", field="file")
        if mac is not None and "footer" not in item:
            mac.update(line.encode())
        yield number, item


def restore(url: str, path: Path, *, key: str | None = None, unsigned: bool = False) -> Manifest:
    """Restore the backup at `path` into the database at `url`, which must hold no rows of a
    workspace; then check that every table equals the backup. Returns the backup's manifest.

    Every row is checked as live input first. With `key`, the backup must be signed with it
    (NotAuthentic otherwise, nothing restored); a signed backup needs its key. `unsigned`
    restores without checking a signature (the rows are checked all the same)."""
    private_sqlite_file(url)  # a new SQLite file: the owner's only, as `qualify init` makes one
    engine = create_store_engine(url)
    mac = None if unsigned else _mac(key)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = _read(handle, str(path), mac)
            try:
                _, header = next(lines)
            except (StopIteration, OSError, EOFError) as error:
                raise InvalidInput(f"{path}: empty or not a gzip file", field="file") from error
            if header.get("format") != FORMAT or header.get("version") != VERSION:
                raise InvalidInput(f"{path}: not a Qualify backup (format {FORMAT} v{VERSION})", field="file")
            if not unsigned:
                _expect_signing(path, signed=header.get("signed") is True, key=key)
            revision = str(header.get("revision"))
            if revision != head_revision():
                raise InvalidInput(
                    f"{path}: the backup is of schema {revision}, this Qualify writes {head_revision()}: "
                    "restore it with the version that made it, then upgrade",
                    field="file",
                )
            migrate(engine)
            tables = {t.name: t for t in _tables()}
            with engine.begin() as conn:
                _refuse_rows(conn)
                footer, signature = _insert_all(conn, lines, tables, str(path))
                if mac is not None:  # checked before the transaction commits: a forgery leaves nothing
                    mac.update(_canonical(footer))
                    if not hmac.compare_digest(f"hmac-sha256:{mac.hexdigest()}", str(signature)):
                        raise NotAuthentic(
                            f"{path}: the signature does not match: the backup was changed after it was made, "
                            "or signed with another key; nothing was restored"
                        )
                if conn.dialect.name == "postgresql":
                    _move_sequences(conn)
    except (OSError, EOFError) as error:
        raise InvalidInput(f"{path}: cannot be read whole ({error}); the backup is damaged", field="file") from error
    finally:
        engine.dispose()
    manifest = Manifest(
        revision,
        str(footer.get("created_at")),
        dict(footer["counts"]),
        dict(footer["checksums"]),
        bool(footer.get("secrets", True)),  # backups made before kept every row
        mac is not None,
    )
    from qualify.service.unit_of_work import open_workspace
    from qualify.settings import Settings

    restored = open_workspace(Settings(database_url=url))
    try:
        problems = verify(restored, manifest)
    finally:
        restored.close()
    if problems:
        raise RestoreMismatch("the restored workspace differs from the backup: " + "; ".join(problems))
    return manifest


def _expect_signing(path: Path, *, signed: bool, key: str | None) -> None:
    """Refuse, before anything is written, a backup whose signing is not what the operator holds."""
    if key and not signed:
        raise NotAuthentic(
            f"{path}: the backup is not signed, and QUALIFY_BACKUP_KEY says backups must be: restore it "
            "with --unsigned if you know where it comes from"
        )
    if signed and not key:
        raise NotAuthentic(
            f"{path}: the backup is signed: set QUALIFY_BACKUP_KEY to the key it was made with, so that "
            "the restore can tell it was not changed (or --unsigned to restore it unchecked)"
        )


def _refuse_rows(conn: Connection) -> None:
    for table in _tables():
        if conn.execute(select(func.count()).select_from(table)).scalar():
            raise InvalidInput(
                f"the target already holds a workspace ({table.name} has rows): restore into an empty database",
                field="db",
            )


def _insert_all(
    conn: Connection, lines: Iterator[tuple[int, dict[str, Any]]], tables: dict[str, Table], source: str
) -> tuple[dict[str, Any], object]:
    """Insert every row, each checked as live input; returns the footer and its signature."""
    pending: list[dict[str, Any]] = []
    current: Table | None = None
    for number, item in lines:
        if "footer" in item:
            if current is not None and pending:
                conn.execute(current.insert(), pending)
            footer = item["footer"]
            if not isinstance(footer, dict) or not isinstance(footer.get("counts"), dict):
                raise InvalidInput(f"{source}, line {number}: not a backup's footer", field="file")
            if not isinstance(footer.get("checksums"), dict):
                raise InvalidInput(f"{source}, line {number}: not a backup's footer", field="file")
            return footer, item.get("signature")
        table = tables.get(str(item.get("t")))
        if table is None or not isinstance(item.get("r"), dict):
            raise InvalidInput(f"{source}, line {number}: unknown table {item.get('t')!r}", field="file")
        if table is not current or len(pending) >= BATCH:
            if current is not None and pending:
                conn.execute(current.insert(), pending)
            pending, current = [], table
        try:
            pending.append(checked_row(table, item["r"]))
        except InvalidInput as error:
            raise InvalidInput(
                f"{source}, line {number}: {error}; the product never writes such a value, so the backup was "
                "changed by hand or damaged: nothing was restored",
                field="file",
            ) from None
    raise InvalidInput(f"{source}: the backup ends before its footer: it was cut short", field="file")


def _move_sequences(conn: Connection) -> None:
    """Explicit ids do not move PostgreSQL's sequences: set each past the largest id restored."""
    for table in _tables():
        if "id" in table.columns and table.c.id.autoincrement in (True, "auto") and table.c.id.type.python_type is int:
            conn.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence(:t, 'id'), COALESCE((SELECT max(id) FROM "
                    + table.name
                    + "), 0) + 1, false)"
                ),
                {"t": table.name},
            )
