"""Rows in, domain objects out: the store's queries, in SQLAlchemy Core for speed."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from qualify.adapters import json_codec, schema
from qualify.domain.accounts import Mark
from qualify.domain.engagement import EngagementState
from qualify.domain.evaluator import LeadState
from qualify.domain.lifecycle import Stage
from qualify.domain.records import ACCOUNT_FIELDS, LEAD_FIELDS, Account, Lead

# Stay below every engine's limit on bound parameters in one statement.
CHUNK = 500


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(slots=True)
class LeadRecord:
    """A stored lead with its scoring state, as the use cases change it."""

    id: int | None
    lead: Lead
    account_id: int | None
    created_at: datetime
    state: LeadState
    model_version: str | None = None
    changed: bool = False  # scores or stage changed: write the score columns
    profile_changed: bool = False  # the person's fields changed too: write the whole row
    score_before: float | None = None  # fit + engagement when the use case began (score crossings)
    person_email: str | None = None  # the person's email, on a past journey too (whose `email` is None)
    # What the lead added to its account's roll-up when the use case began: (account id, mark);
    # (None, None) for a lead new to the store; None when not known (the account is counted again).
    account_before: tuple[int | None, Mark | None] | None = None


def profile_from_row(row: Row[Any], created_at: datetime) -> Lead:
    """The person's fields of a lead row (the profile columns it holds)."""
    m = row._mapping
    return Lead.stored(**{name: m[name] for name in PROFILE_COLUMNS if name in m}, created_at=created_at)


def lead_from_row(row: Row[Any]) -> LeadRecord:
    m = row._mapping
    lead = profile_from_row(row, m["created_at"])
    state = LeadState(
        stage=Stage(m["stage"]),
        stage_entered=m["stage_entered_at"].timestamp(),
        fit=m["fit_score"],
        grade=m["fit_grade"],
        persona=m["persona"],
        engagement=EngagementState.from_json(m["engagement_state"]),
        last_event=m["last_event_at"].timestamp() if m["last_event_at"] else None,
        probability=m.get("probability"),
        roles=tuple(m.get("buying_roles") or ()),
    )
    return LeadRecord(
        m["id"], lead, m["account_id"], m["created_at"], state, m["model_version"], person_email=m.get("person_email")
    )


PROFILE_COLUMNS = (*LEAD_FIELDS, "attributes")
SCORE_COLUMNS = (
    "stage",
    "stage_entered_at",
    "persona",
    "buying_roles",
    "fit_score",
    "fit_grade",
    "engagement_score",
    "engagement_state",
    "scored_at",
    "last_event_at",
    "model_version",
    "updated_at",
)


def lead_values(record: LeadRecord, *, scored_at: datetime, now: datetime) -> dict[str, Any]:
    """The row for `record`; engagement_score is its value at `scored_at`."""
    lead, state = record.lead, record.state
    values: dict[str, Any] = {name: getattr(lead, name) for name in LEAD_FIELDS}
    values["do_not_email"] = bool(lead.do_not_email)
    values["do_not_call"] = bool(lead.do_not_call)
    values.update(
        attributes=lead.attributes,
        person_email=lead.email or record.person_email,
        account_id=record.account_id,
        created_at=record.created_at,
        updated_at=now,
        stage=state.stage.value,
        stage_entered_at=datetime.fromtimestamp(state.stage_entered, scored_at.tzinfo),
        persona=state.persona,
        buying_roles=list(state.roles),
        fit_score=state.fit,
        fit_grade=state.grade,
        engagement_score=state.engagement_at(scored_at.timestamp()),
        engagement_state=state.engagement.to_json(),
        scored_at=scored_at,
        last_event_at=datetime.fromtimestamp(state.last_event, scored_at.tzinfo)
        if state.last_event is not None
        else None,
        model_version=record.model_version,
    )
    return values


def find_leads(
    conn: Connection, emails: Iterable[str], external_ids: Iterable[str], *, profile: bool = True
) -> list[LeadRecord]:
    """Leads by email or external id; without `profile`, only what scoring events needs."""
    out: list[LeadRecord] = []
    for column, keys in (
        (schema.leads.c.email, sorted(set(emails))),
        (schema.leads.c.external_id, sorted(set(external_ids))),
    ):
        for part in chunks(keys):
            if profile:
                out += [lead_from_row(r) for r in conn.execute(locked_leads().where(column.in_(part)))]
            else:
                out += _scoring_states(conn, column.name, part)
    return out


def locked_leads() -> Any:
    """SELECT leads … FOR UPDATE in id order: every read of a lead that a use case writes back
    holds its row until commit on PostgreSQL, so a concurrent writer cannot slip in between
    (SQLite ignores it: its writers take turns already)."""
    return select(schema.leads).order_by(schema.leads.c.id).with_for_update()


LEAD_KEY_LOCKS = 256  # lead keys share this many advisory locks: a batch holds at most as many
_LEAD_KEY_LOCK_CLASS = 0x5175  # the first key of those advisory locks ("Qu"), apart from any other use


def lock_lead_keys(conn: Connection, keys: Iterable[str]) -> bool:
    """Hold, until the transaction ends, the locks of these lead keys (emails, and external ids
    as `ext:<id>`), so that two transactions cannot both create a lead for one key: the second
    waits for the first to commit and then finds its lead. Keys hash onto `LEAD_KEY_LOCKS`
    locks taken in order (no two batches deadlock on them, and a batch holds a bounded number).
    PostgreSQL only: SQLite's writers take turns already. Returns whether it locked anything."""
    if conn.dialect.name != "postgresql":
        return False
    buckets = sorted({zlib.crc32(key.encode()) % LEAD_KEY_LOCKS for key in keys})
    if buckets:
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:lock_class, b) FROM unnest(CAST(:buckets AS integer[])) AS b"),
            {"lock_class": _LEAD_KEY_LOCK_CLASS, "buckets": buckets},
        )
    return bool(buckets)


def find_leads_by_id(conn: Connection, ids: Iterable[int], *, profile: bool = True) -> list[LeadRecord]:
    out: list[LeadRecord] = []
    for part in chunks(sorted(set(ids))):
        if profile:
            out += [lead_from_row(r) for r in conn.execute(locked_leads().where(schema.leads.c.id.in_(part)))]
        else:
            out += _scoring_states(conn, "id", part)
    return out


def alias_targets(conn: Connection, emails: Iterable[str], external_ids: Iterable[str]) -> dict[str, int]:
    """Keys of merged leads → the lead they were merged into, as `email` or `ext:<id>` keys."""
    aliases = schema.lead_aliases
    out: dict[str, int] = {}
    for column, keys, prefix in (
        (aliases.c.email, sorted(set(emails)), ""),
        (aliases.c.external_id, sorted(set(external_ids)), "ext:"),
    ):
        for part in chunks(keys):
            for key, lead_id in conn.execute(select(column, aliases.c.lead_id).where(column.in_(part))):
                out[f"{prefix}{key}"] = lead_id
    return out


def _scoring_states(conn: Connection, key: str, values: Sequence[Any]) -> list[LeadRecord]:
    """The scoring state of leads, read through the driver: on the ingestion path, per-row
    result processing by SQLAlchemy cost more than the query itself."""
    quote, mark = conn.dialect.identifier_preparer.quote, _placeholder(conn)
    names = (
        "id",
        "email",
        "external_id",
        "account_id",
        "created_at",
        "stage",
        "stage_entered_at",
        "persona",
        "fit_score",
        "fit_grade",
        "engagement_state",
        "last_event_at",
        "model_version",
        "probability",
        "buying_roles",
    )
    sql = f"SELECT {', '.join(quote(n) for n in names)} FROM leads WHERE {quote(key)} IN ({', '.join([mark] * len(values))})"
    if conn.dialect.name == "postgresql":
        # Two processes scoring events of the same lead must not both read the old state and
        # write over each other; locking in id order keeps concurrent batches from deadlocking.
        sql += " ORDER BY id FOR UPDATE"
    time, doc = _driver_readers(conn)
    out = []
    for (
        lead_id,
        email,
        external_id,
        account_id,
        created,
        stage,
        entered,
        persona,
        fit,
        grade,
        state,
        last,
        version,
        probability,
        roles,
    ) in conn.exec_driver_sql(sql, tuple(values)):
        created_at = time(created)
        last_event = time(last)
        out.append(
            LeadRecord(
                lead_id,
                Lead.stored(email=email, external_id=external_id, created_at=created_at),
                account_id,
                created_at,
                LeadState(
                    Stage(stage),
                    time(entered).timestamp(),
                    fit,
                    grade,
                    persona,
                    EngagementState.from_json(doc(state)),
                    last_event.timestamp() if last_event else None,
                    probability,
                    tuple(doc(roles) or ()),
                ),
                version,
            )
        )
    return out


def _driver_readers(conn: Connection) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    if conn.dialect.name == "sqlite":
        return (lambda t: None if t is None else datetime.fromisoformat(t).replace(tzinfo=UTC)), json_codec.loads
    return (lambda t: t), (lambda d: d)


def lead_by_key(conn: Connection, email: str | None, external_id: str | None) -> LeadRecord | None:
    """The lead an email (else an external id) names exactly, or the lead it was merged into. No
    key syntax: an external id `#5` or `ext:x` names the lead whose external id it is, nothing else
    (a stream's ids are anyone's words)."""
    if email is None and external_id is None:
        return None
    leads, aliases = schema.leads, schema.lead_aliases
    own = leads.c.email == email if email is not None else leads.c.external_id == external_id
    row = conn.execute(select(leads).where(own)).first()
    if row is not None:
        return lead_from_row(row)
    alias = aliases.c.email == email if email is not None else aliases.c.external_id == external_id
    merged_into = conn.execute(select(aliases.c.lead_id).where(alias)).scalar()
    return find_lead(conn, f"#{merged_into}") if merged_into is not None else None


def find_lead(conn: Connection, key: str, *, for_update: bool = False) -> LeadRecord | None:
    """A lead by email, external id (or `ext:<external id>`, as `qualify leads` shows a lead without
    an email), or `#<id>`; `for_update` locks its row until commit."""
    row = find_lead_row(conn, key, for_update=for_update)
    return lead_from_row(row) if row else None


def key_id(key: str) -> int | None:
    """The id a `#<id>` key names (a lead's, an account's), or None for any other key. An id past
    the largest the store holds reads as 0, which no row has: SQLite could not bind it."""
    if not (key.startswith("#") and key[1:].isdigit()):
        return None
    number = int(key[1:])
    return number if number <= schema.MAX_ID else 0


def find_lead_row(conn: Connection, key: str, *, for_update: bool = False) -> Row[Any] | None:
    """The whole row of the lead `find_lead` finds (every column: its owner, its probability)."""
    leads = schema.leads
    if (number := key_id(key)) is not None:
        condition = leads.c.id == number
    elif key.startswith("ext:") and key[4:].strip():
        return find_lead_row(conn, key[4:], for_update=for_update)
    else:
        condition = or_(leads.c.email == key.strip().lower(), leads.c.external_id == key.strip())
    statement = select(leads).where(condition)
    if for_update:
        statement = statement.with_for_update()  # ignored by SQLite, whose writers are serialised anyway
    row = conn.execute(statement).first()
    if row is None and not key.startswith("#"):
        aliases = schema.lead_aliases
        merged_into = conn.execute(
            select(aliases.c.lead_id).where(
                or_(aliases.c.email == key.strip().lower(), aliases.c.external_id == key.strip())
            )
        ).scalar()
        if merged_into is not None:
            return find_lead_row(conn, f"#{merged_into}", for_update=for_update)
    return row


def insert_leads(conn: Connection, records: list[LeadRecord], *, scored_at: datetime, now: datetime) -> None:
    if not records:
        return
    rows = [lead_values(r, scored_at=scored_at, now=now) for r in records]
    ids = (
        conn.execute(schema.leads.insert().returning(schema.leads.c.id, sort_by_parameter_order=True), rows)
        .scalars()
        .all()
    )
    for record, new_id in zip(records, ids, strict=True):
        record.id = new_id
        record.changed = False


def update_leads(conn: Connection, records: list[LeadRecord], *, scored_at: datetime, now: datetime) -> None:
    """Write changed leads: the whole row where the profile changed, else only the score columns."""
    whole = [{**lead_values(r, scored_at=scored_at, now=now), "b_id": r.id} for r in records if r.profile_changed]
    if whole:
        conn.execute(update(schema.leads).where(schema.leads.c.id == bindparam("b_id")), whole)
    _update_scores(conn, [r for r in records if not r.profile_changed], scored_at, now)
    for record in records:
        record.changed = record.profile_changed = False


def _update_scores(conn: Connection, records: list[LeadRecord], scored_at: datetime, now: datetime) -> None:
    """The score columns of many leads, converted straight to driver values (the ingestion path)."""
    if not records:
        return
    time, doc = _driver_converters(conn)
    quote, mark = conn.dialect.identifier_preparer.quote, _placeholder(conn)
    sql = f"UPDATE leads SET {', '.join(f'{quote(c)} = {mark}' for c in SCORE_COLUMNS)} WHERE id = {mark}"
    at, scored, updated, zone = scored_at.timestamp(), time(scored_at), time(now), scored_at.tzinfo
    values = []
    for r in records:
        state = r.state
        last = None if state.last_event is None else time(datetime.fromtimestamp(state.last_event, zone))
        values.append(
            (
                state.stage.value,
                time(datetime.fromtimestamp(state.stage_entered, zone)),
                state.persona,
                doc(list(state.roles)),
                state.fit,
                state.grade,
                state.engagement.value_at(at),
                doc(state.engagement.json_view()),
                scored,
                last,
                r.model_version,
                updated,
                r.id,
            )
        )
    # On PostgreSQL one UPDATE … FROM unnest(arrays) was tried in its place: the server's part
    # took 5 ms for 1,000 leads, but psycopg's dumping of the arrays in Python 15 more, where the
    # prepared statement's executemany (pipelined) takes 11 ms in all.
    _driver_executemany(conn, sql, values)


def account_from_row(row: Row[Any]) -> Account:
    m = row._mapping
    return Account(
        domain=m["domain"],
        name=m["name"],
        industry=m["industry"],
        employees=m["employees"],
        revenue=m["revenue"],
        country=m["country"],
        attributes=dict(m["attributes"] or {}),
    )


def find_accounts(conn: Connection, domains: Iterable[str]) -> dict[str, tuple[int, Account]]:
    out: dict[str, tuple[int, Account]] = {}
    for part in chunks(sorted(set(domains))):
        for row in conn.execute(select(schema.accounts).where(schema.accounts.c.domain.in_(part))):
            out[row.domain] = (row.id, account_from_row(row))
    return out


def accounts_by_id(conn: Connection, ids: Iterable[int]) -> dict[int, Account]:
    out: dict[int, Account] = {}
    for part in chunks(sorted(set(ids))):
        for row in conn.execute(select(schema.accounts).where(schema.accounts.c.id.in_(part))):
            out[row.id] = account_from_row(row)
    return out


def account_values(account: Account) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(account, name) for name in ACCOUNT_FIELDS}
    values["domain"] = account.domain
    values["attributes"] = account.attributes
    return values


def insert_accounts(conn: Connection, accounts: list[Account], now: datetime) -> dict[str, int]:
    """Insert accounts (distinct domains); returns the id of each one inserted, by domain.

    A domain another transaction inserted first is left out of the answer, not an error: on
    PostgreSQL the insert waits for that transaction to end, so `find_accounts` then reads its
    account. Two batches naming one new company thus both go through on their first try."""
    if not accounts:
        return {}
    rows = [{**account_values(a), "created_at": now, "updated_at": now} for a in accounts]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(schema.accounts)
        .on_conflict_do_nothing(index_elements=[schema.accounts.c.domain])
        .returning(schema.accounts.c.domain, schema.accounts.c.id)
    )
    return {row.domain: row.id for row in conn.execute(statement, rows)}


def update_accounts(conn: Connection, accounts: list[tuple[int, Account]], now: datetime) -> None:
    if not accounts:
        return
    rows = [{**account_values(a), "updated_at": now, "b_id": i} for i, a in accounts]
    conn.execute(update(schema.accounts).where(schema.accounts.c.id == bindparam("b_id")), rows)


def existing_event_ids(conn: Connection, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    column = schema.events.c.event_id
    for part in chunks(list(event_ids)):
        found.update(conn.execute(select(column).where(column.in_(part))).scalars())
    return found


_EVENT_COLUMNS = ("event_id", "lead_id", "type", "occurred_at", "received_at", "properties", "awards")


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert event rows; the hottest write of ingestion, so it goes to the driver directly."""
    if not rows:
        return
    time, doc = _driver_converters(conn)
    received = {id(r["received_at"]): time(r["received_at"]) for r in rows[:1]}  # one instant per batch
    values = [
        (
            r["event_id"],
            r["lead_id"],
            r["type"],
            time(r["occurred_at"]),
            received.get(id(r["received_at"])) or time(r["received_at"]),
            doc(r["properties"]),
            doc(r["awards"]),
        )
        for r in rows
    ]
    if conn.dialect.name == "postgresql":
        _copy_rows(conn, "events", _EVENT_COLUMNS, values)
    else:
        _driver_executemany(conn, _insert_sql(conn, "events", _EVENT_COLUMNS), values)


def update_awards(conn: Connection, rows: list[tuple[int, list[list[Any]]]]) -> None:
    """Set the awards of events by id (a rebuild scores events again), through the driver."""
    if not rows:
        return
    _, doc = _driver_converters(conn)
    quote, mark = conn.dialect.identifier_preparer.quote, _placeholder(conn)
    sql = f"UPDATE {quote('events')} SET {quote('awards')} = {mark} WHERE {quote('id')} = {mark}"
    _driver_executemany(conn, sql, [(doc(awards), event_id) for event_id, awards in rows])


def _driver_converters(conn: Connection) -> tuple[Callable[[datetime | None], Any], Callable[[Any], str]]:
    """Python values as the columns' types would bind them, done once per value, in C where possible."""
    if conn.dialect.name == "sqlite":
        return (lambda t: None if t is None else schema.sqlite_time(t)), _json_text
    return (lambda t: t), _json_text


def _json_text(value: Any) -> str:
    return json_codec.dumps(value)


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _insert_sql(conn: Connection, table: str, columns: Sequence[str]) -> str:
    quote = conn.dialect.identifier_preparer.quote
    marks = ", ".join([_placeholder(conn)] * len(columns))
    return f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) VALUES ({marks})"


def _copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert rows with PostgreSQL's COPY, in the connection's transaction: one stream instead of
    a statement per row (`benchmarks/http_ingest.py`, the in-process rate: docs/benchmarks.md)."""
    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    driver = conn.dialect.loaded_dbapi
    try:
        with conn.connection.driver_connection.cursor().copy(sql) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
    except driver.Error as error:
        # As SQLAlchemy raises a statement's error (an IntegrityError that `retrying` retries), and
        # without the rows in the message, as the engine's hide_parameters has it.
        raise DBAPIError.instance(sql, None, error, driver.Error, hide_parameters=True, dialect=conn.dialect) from error


def _driver_executemany(conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    # SQLAlchemy would rebuild and type-process every parameter set in Python; the values are
    # already converted above, so the DBAPI cursor takes them as they are.
    conn.exec_driver_sql(sql, rows)


# What the accounts reaction reads of an account it keeps (the rest is read only to score its fit).
ACCOUNT_STATE_COLUMNS = (
    "id", "domain", "stage", "requalify_at", "owner", "owner_assigned_at", "fit_score", "fit_grade",
    "engagement_score", "covered_roles", "rollup", "model_version", "pending_since",
)  # fmt: skip


def lock_account_states(conn: Connection, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The state of these accounts (`ACCOUNT_STATE_COLUMNS`), their rows locked until commit in id
    order on PostgreSQL; read through the driver, as the ingestion path reads leads."""
    quote, mark = conn.dialect.identifier_preparer.quote, _placeholder(conn)
    time, doc = _driver_readers(conn)
    out = []
    for part in chunks(sorted(set(ids))):
        sql = (
            f"SELECT {', '.join(quote(n) for n in ACCOUNT_STATE_COLUMNS)} FROM accounts "
            f"WHERE id IN ({', '.join([mark] * len(part))}) ORDER BY id"
        )
        if conn.dialect.name == "postgresql":
            sql += " FOR UPDATE"
        for row in conn.exec_driver_sql(sql, tuple(part)):
            state = dict(zip(ACCOUNT_STATE_COLUMNS, row, strict=True))
            state["requalify_at"], state["owner_assigned_at"], state["pending_since"] = (
                time(state["requalify_at"]),
                time(state["owner_assigned_at"]),
                time(state["pending_since"]),
            )
            state["rollup"] = doc(state["rollup"]) if state["rollup"] is not None else None
            out.append(state)
    return out


def account_people(
    conn: Connection, ids: Sequence[int], leaving: int | None = None
) -> Iterator[tuple[int, int, dict[str, Any] | None, datetime | None, list[str] | None, datetime]]:
    """The live people of these accounts as their roll-ups count them, through the driver:
    (lead id, account id, engagement state, last event at, buying roles, stage entered at), in
    lead id order within each chunk of accounts; without the lead `leaving`."""
    mark = _placeholder(conn)
    time, doc = _driver_readers(conn)
    for part in chunks(sorted(set(ids))):
        sql = (
            "SELECT id, account_id, engagement_state, last_event_at, buying_roles, stage_entered_at FROM leads"
            f" WHERE account_id IN ({', '.join([mark] * len(part))}) AND erased_at IS NULL"
        )
        params: tuple[Any, ...] = tuple(part)
        if leaving is not None:
            sql, params = sql + f" AND id <> {mark}", (*params, leaving)
        for lead_id, account_id, state, last, roles, entered in conn.exec_driver_sql(sql + " ORDER BY id", params):
            yield (
                lead_id,
                account_id,
                doc(state) if state is not None else None,
                time(last),
                doc(roles) if roles is not None else None,
                time(entered),
            )


ACCOUNT_SCORE_COLUMNS = (
    "fit_score",
    "fit_grade",
    "engagement_score",
    "covered_roles",
    "rollup",
    "scored_at",
    "model_version",
)


def update_account_scores(
    conn: Connection, rows: list[tuple[int, float, str, float, int, dict[str, Any], datetime, str]]
) -> None:
    """Write the scores of many accounts: (id, then `ACCOUNT_SCORE_COLUMNS` in order), converted
    straight to driver values (the ingestion path). Kept, an account is no longer pending."""
    if not rows:
        return
    time, doc = _driver_converters(conn)
    quote, mark = conn.dialect.identifier_preparer.quote, _placeholder(conn)
    sets = ", ".join(f"{quote(c)} = {mark}" for c in ACCOUNT_SCORE_COLUMNS)
    sql = f"UPDATE accounts SET {sets}, pending_since = NULL WHERE id = {mark}"
    _driver_executemany(
        conn,
        sql,
        [(fit, grade, engagement, covered, doc(rollup), time(at), version, account_id)
         for account_id, fit, grade, engagement, covered, rollup, at, version in rows],
    )  # fmt: skip


def mark_accounts_pending(conn: Connection, ids: Sequence[int], now: datetime) -> None:
    """Leave these accounts to the worker (`pending_since`, kept where it was set already: an
    account pending already is not written again). Through the driver, as the ingestion path.

    On PostgreSQL every one of them is locked first, in id order, pending or not: a worker keeping
    one then waits for this change to commit before it reads the account's people (else it could
    read them without this change and clear the mark this change relied on); on SQLite a writing
    transaction holds the whole database already."""
    time, _ = _driver_converters(conn)
    mark = _placeholder(conn)
    for part in chunks(sorted(set(ids))):
        within = f"id IN ({', '.join([mark] * len(part))})"
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT id FROM accounts WHERE {within} ORDER BY id FOR UPDATE", tuple(part))
        conn.exec_driver_sql(
            f"UPDATE accounts SET pending_since = {mark} WHERE pending_since IS NULL AND {within}",
            (time(now), *part),
        )


def pending_accounts(conn: Connection, limit: int) -> list[int]:
    """Up to `limit` accounts left to the worker, those waiting longest first."""
    a = schema.accounts
    query = select(a.c.id).where(a.c.pending_since.is_not(None)).order_by(a.c.pending_since, a.c.id).limit(limit)
    return list(conn.execute(query).scalars())


def insert_history(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(schema.stage_history.insert(), rows)


def awards_between(conn: Connection, lead_id: int, start: datetime, end: datetime) -> list[list[Any]]:
    """The awards of a lead's events in [start, end): for per-day caps of late events."""
    e = schema.events
    rows = conn.execute(
        select(e.c.awards).where(e.c.lead_id == lead_id, e.c.occurred_at >= start, e.c.occurred_at < end)
    )
    return [award for (awards,) in rows for award in awards]


def lead_events(
    conn: Connection,
    lead_id: int,
    *,
    limit: int | None = None,
    offset: int = 0,
    newest_first: bool = True,
) -> list[Row[Any]]:
    e = schema.events
    order = (e.c.occurred_at.desc(), e.c.id.desc()) if newest_first else (e.c.id,)
    statement = select(e).where(e.c.lead_id == lead_id).order_by(*order).offset(offset)
    if limit is not None:
        statement = statement.limit(limit)
    return list(conn.execute(statement))


def lead_history(conn: Connection, lead_id: int) -> list[Row[Any]]:
    h = schema.stage_history
    return list(conn.execute(select(h).where(h.c.lead_id == lead_id).order_by(h.c.at, h.c.id)))


# --- leads waiting for a rebuild in time order ------------------------------------------------------


def queue_rebuild(conn: Connection, lead_ids: Iterable[int], *, now: datetime, history_before: datetime) -> None:
    """Queue these leads for a rebuild (a lead already queued keeps its place, with the later cutoff)."""
    q = schema.rebuild_queue
    wanted = sorted(set(lead_ids))
    for part in chunks(wanted):
        known = set(conn.execute(select(q.c.lead_id).where(q.c.lead_id.in_(part))).scalars())
        new = [{"lead_id": i, "queued_at": now, "history_before": history_before} for i in part if i not in known]
        if new:
            conn.execute(q.insert(), new)
        if known:
            conn.execute(
                update(q)
                .where(q.c.lead_id.in_(sorted(known)), q.c.history_before < history_before)
                .values(history_before=history_before)
            )


def queued_for_rebuild(conn: Connection, lead_ids: Iterable[int]) -> set[int]:
    q = schema.rebuild_queue
    out: set[int] = set()
    for part in chunks(sorted(set(lead_ids))):
        out.update(conn.execute(select(q.c.lead_id).where(q.c.lead_id.in_(part))).scalars())
    return out
