"""Two-way CRM sync: the CRM's people, companies and deals in; scores, stage and reason out.

**In** (`pull`): each object the sync mapping names, changed since its cursor, page by page,
through the same import as files (qualify.service.imports.files: upserts by key, deals and
lifecycle dates as history, rejects with their field and reason). Each person pulled is linked to
its lead (`crm_records`), and a change of its sales status to a value the mapping maps becomes a
stage action dated by the record (an imported stage fact: the lead is rebuilt in time order, and
nothing is announced). The cursor is saved after each page, so an interrupted pull goes on
where it stopped; records modified in the cursor's own instant are pulled again and change nothing.

**Out** (`push_due`): the `crm` reaction queues a push for every touched lead the CRM holds (or
every lead, when the mapping creates people) in the change's own transaction: the outbox. A worker
pass claims due pushes like webhooks (leases, retries with backoff, dead letters), reads the
leads' current rows and writes the mapped columns, a batch a request; values equal to those last
written are not sent again. A refused token stops the pass without spending attempts.

The vendors are behind qualify.adapters.crm; `clients` is the seam tests put a loopback server
behind.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from qualify.adapters import schema
from qualify.adapters.crm import CrmClient, CrmError, PushItem, PushResult, open_client
from qualify.adapters.readers import BadValue, RawRow, parse_value
from qualify.domain.errors import InvalidInput, NotFound
from qualify.domain.records import Account, Lead
from qualify.service import delivery
from qualify.service.audit import record_audit
from qualify.service.connectors.crm_mapping import (
    Pull,
    Push,
    Status,
    SyncMapping,
    load_sync_mapping,
    parse_sync_mapping,
)
from qualify.service.connectors.crm_outbox import DEAD, ERASED, PENDING, PUSHED, QUEUE, SENDING, queue_pushes
from qualify.service.imports.files import ImportSummary, RowConverter, import_rows, writing
from qualify.service.lifecycle.stage_facts import KeyedFact, StageFact, imported_fact, rebuild_pending, record_facts
from qualify.service.reading.lead_export import account_rows, lead_rows
from qualify.service.unit_of_work import UnitOfWork, Workspace, utcnow
from qualify.settings import Settings

log = logging.getLogger(__name__)

AUTH_RETRY = 60.0  # seconds before pushes a CRM refused as a whole are tried again
PULL_LEASE = timedelta(minutes=30)  # how long a pull holds its CRM without saving a cursor
WORKER_PULL_LIMIT = 5000  # records a worker pass pulls at most: a first sync of a large CRM takes several
PAGE_BATCH = 500  # pulled records imported per transaction
SAMPLES = 20  # rejected records kept in a sync's summary
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "crm"

ClientFactory = Callable[[str, Settings], CrmClient]


def default_mapping(crm: str) -> Path:
    """The sync mapping Qualify ships for `crm` (`qualify examples` writes it as examples/crm/<crm>-sync.yaml)."""
    return EXAMPLES / f"{crm}-sync.yaml"


# --- connecting ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Connection:
    crm: str
    account: str | None
    mapping_name: str
    push_to: str
    cursors: dict[str, str]
    pulled_at: datetime | None
    last_error: str | None
    last_summary: dict[str, Any] | None
    pending: int = 0
    dead: int = 0
    pushed: int = 0
    linked: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pulled_at"] = self.pulled_at.isoformat() if self.pulled_at else None
        return out


@dataclass(slots=True)
class Connected:
    crm: str
    account: str
    notes: list[str]
    created_fields: list[str]
    mapping_name: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def connect(
    workspace: Workspace,
    crm: str,
    *,
    mapping_path: Path | None = None,
    clients: ClientFactory = open_client,
    by: str = "cli",
    now: datetime | None = None,
) -> Connected:
    """Check the credentials and the mapping against the CRM (creating the fields the push writes,
    where the CRM and the mapping allow it), then store the connection. A connection made again
    keeps its cursors: the next sync goes on from where the last one stopped."""
    now = now or utcnow()
    path = mapping_path or default_mapping(crm)
    mapping = load_sync_mapping(path)
    if mapping.crm != crm:
        raise InvalidInput(f"{path.name} is a mapping for {mapping.crm}, not {crm}", field="crm")
    client = clients(crm, workspace.settings)
    try:
        account = client.check()
        created = []
        for push in (mapping.push, mapping.push_accounts):
            if push is not None:
                created += client.ensure_fields(push.object, push.specs(), create=push.create_fields)
    finally:
        client.close()
    push_to = "none" if mapping.push is None else "all" if mapping.push.create else "linked"
    table = schema.crm_connections
    with workspace.unit_of_work() as uow:
        values = {
            "mapping": mapping.text,
            "mapping_name": path.name,
            "account": account.description[:300],
            "push_to": push_to,
            "push_accounts": mapping.push_accounts.object if mapping.push_accounts else None,
            "updated_at": now,
            "last_error": None,
        }
        if uow.connection.execute(select(table.c.crm).where(table.c.crm == crm)).first() is None:
            uow.connection.execute(table.insert().values(crm=crm, cursors={}, created_at=now, **values))
        else:
            uow.connection.execute(update(table).where(table.c.crm == crm).values(**values))
        record_audit(
            uow,
            actor=by,
            action="crm.connect",
            target=crm,
            at=now,
            details={"mapping": path.name, "created_fields": created},
        )
    return Connected(crm, account.description, account.notes, created, path.name)


def connections(workspace: Workspace) -> list[Connection]:
    """Every connected CRM, with its outbox and link counts (`qualify crm status`)."""
    c, p, r = schema.crm_connections, schema.crm_pushes, schema.crm_records
    out = []
    with workspace.unit_of_work(read_only=True) as uow:
        conn = uow.connection
        for row in conn.execute(select(c).order_by(c.c.crm)):
            item = Connection(
                row.crm,
                row.account,
                row.mapping_name,
                row.push_to,
                dict(row.cursors),
                row.pulled_at,
                row.last_error,
                row.last_summary,
            )
            grouped = select(p.c.status, func.count()).where(p.c.crm == row.crm).group_by(p.c.status)
            counts: dict[str, int] = {status: int(n) for status, n in conn.execute(grouped)}
            item.pending = counts.get(PENDING, 0) + counts.get(SENDING, 0)
            item.dead, item.pushed = counts.get(DEAD, 0), counts.get(PUSHED, 0)
            item.linked = int(
                conn.execute(
                    select(func.count()).select_from(r).where(r.c.crm == row.crm, r.c.lead_id.is_not(None))
                ).scalar_one()
            )
            out.append(item)
    return out


def _connection(uow: UnitOfWork, crm: str) -> tuple[SyncMapping, dict[str, str], datetime | None]:
    c = schema.crm_connections
    row = uow.connection.execute(
        select(c.c.mapping, c.c.mapping_name, c.c.cursors, c.c.pulled_at).where(c.c.crm == crm)
    ).first()
    if row is None:
        raise NotFound(f"{crm} is not connected: run `qualify crm connect {crm}` first")
    return parse_sync_mapping(row.mapping, row.mapping_name), dict(row.cursors), row.pulled_at


# --- pulling ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class PullSummary:
    """What a pull did, per object: records read, written, unchanged, rejected; status actions."""

    objects: dict[str, dict[str, int]] = field(default_factory=dict)
    actions: int = 0
    complete: bool = True  # False: stopped at its limit; the next pull goes on from the cursors
    rebuilt: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # the first SAMPLES

    def count(self, obj: str, name: str, n: int = 1) -> None:
        counts = self.objects.setdefault(obj, {"read": 0, "created": 0, "updated": 0, "unchanged": 0, "rejected": 0})
        counts[name] = counts.get(name, 0) + n

    @property
    def read(self) -> int:
        return sum(c["read"] for c in self.objects.values())

    @property
    def changed(self) -> int:
        return sum(c["created"] + c["updated"] for c in self.objects.values()) + self.actions


class _Rejected:
    """The rejects of a pull: counted, the first few kept with the record's id, field and reason."""

    def __init__(self, summary: PullSummary, obj: str) -> None:
        self.summary, self.obj, self.count = summary, obj, 0

    def add(self, row: RawRow, field_name: str | None, reason: str) -> None:
        self.count += 1
        if len(self.summary.rejected) < SAMPLES:
            self.summary.rejected.append({"object": self.obj, "record": row.raw, "field": field_name, "reason": reason})


def pull(
    workspace: Workspace,
    crm: str,
    client: CrmClient,
    *,
    now: datetime | None = None,
    full: bool = False,
    dry_run: bool = False,
    limit: int | None = None,
) -> PullSummary:
    """Pull every object of the mapping changed since its cursor (`full`: since the start).

    One pull of a CRM runs at a time (a lease on its connection; another is refused). `limit`
    stops after about that many records: the cursors keep the place, and the next pull goes on
    from it (`complete` is False). `dry_run` reads and checks every record, and counts what would
    be created and which status changes would become actions, without writing anything."""
    now = now or utcnow()
    with workspace.unit_of_work(read_only=True) as uow:
        mapping, cursors, _ = _connection(uow, crm)
    summary = PullSummary()
    if not dry_run:
        _lease_pull(workspace, crm)
    try:
        for spec in mapping.pulls:
            if not _pull_object(
                workspace,
                crm,
                client,
                mapping,
                spec,
                None if full else cursors.get(spec.object),
                summary,
                now,
                dry_run,
                limit,
            ):
                summary.complete = False
                break
        if not dry_run:
            summary.rebuilt = rebuild_pending(workspace, now)
    finally:
        if not dry_run:
            _end_pull(workspace, crm, now if summary.complete else None)
    return summary


def _pull_object(
    workspace: Workspace,
    crm: str,
    client: CrmClient,
    mapping: SyncMapping,
    spec: Pull,
    since: str | None,
    summary: PullSummary,
    now: datetime,
    dry_run: bool,
    limit: int | None,
) -> bool:
    """Pull one object; False when `limit` stopped it before the end."""
    converter = RowConverter.for_file(spec.mapping, spec.kind, None, Path(f"{crm}:{spec.object}"))  # type: ignore[arg-type]
    converter.received_at = now
    target, history = writing(workspace, spec.kind, spec.mapping, now)  # type: ignore[arg-type]
    status = mapping.status if mapping.status and mapping.status.object == spec.object else None
    read = 0
    for page in client.pull(spec.object, mapping.fields_of(spec), since, [status.field] if status else []):
        for start in range(0, len(page.records), PAGE_BATCH):
            records = page.records[start : start + PAGE_BATCH]
            rows = [RawRow(read + i + 1, r, f"{spec.object} {r.get(client.id_field)}") for i, r in enumerate(records)]
            read += len(records)
            summary.count(spec.object, "read", len(records))
            if spec.kind == "leads":
                rows = _not_erased(workspace, crm, spec.object, rows, client.id_field, summary)
            if dry_run:
                _check_rows(workspace, crm, converter, rows, spec, status, summary, client.id_field)
            else:
                _import_page(target, crm, spec, mapping, converter, rows, summary, now, history, client.id_field)
        if not dry_run and page.cursor:
            _save_cursor(workspace, crm, spec.object, page.cursor, now)
        if limit is not None and summary.read >= limit:
            return False
    return True


def _lease_pull(workspace: Workspace, crm: str) -> None:
    """Hold the CRM's pull lease, or `CrmError` when another pull holds it (on the wall clock: a
    pull of history passes `now` in the past)."""
    c, at = schema.crm_connections, utcnow()
    with workspace.unit_of_work() as uow:
        taken = uow.connection.execute(
            update(c)
            .where(c.c.crm == crm, or_(c.c.pulling_until.is_(None), c.c.pulling_until < at))
            .values(pulling_until=at + PULL_LEASE)
        ).rowcount
        if not taken:
            until = uow.connection.execute(select(c.c.pulling_until).where(c.c.crm == crm)).scalar()
            raise CrmError(
                f"another pull of {crm} is running (its lease ends {until:%H:%M:%S} UTC); try again then",
                retryable=True,
            )


def _end_pull(workspace: Workspace, crm: str, completed: datetime | None) -> None:
    c = schema.crm_connections
    values: dict[str, Any] = {"pulling_until": None}
    if completed is not None:
        values.update(pulled_at=completed, last_error=None, failed_at=None)
    with workspace.unit_of_work() as uow:
        uow.connection.execute(update(c).where(c.c.crm == crm).values(**values))


def _import_page(
    workspace: Workspace,
    crm: str,
    spec: Pull,
    mapping: SyncMapping,
    converter: RowConverter,
    rows: list[RawRow],
    summary: PullSummary,
    now: datetime,
    history: bool,
    id_field: str,
) -> None:
    counts = ImportSummary(spec.kind, Path(spec.object))
    rejects = _Rejected(summary, spec.object)
    records = import_rows(workspace, converter, rows, rejects, counts, now, history)
    for name in ("created", "updated", "unchanged"):
        summary.count(spec.object, name, getattr(counts, name) + (counts.accepted if name == "created" else 0))
    summary.count(spec.object, "rejected", rejects.count)
    if spec.kind == "accounts":
        _link_accounts(workspace, crm, spec, mapping, rows, records, id_field, now)
    if spec.kind != "leads":
        return
    people = [(row, record) for row, record in zip(rows, records, strict=True) if isinstance(record, Lead)]
    status = mapping.status if mapping.status and mapping.status.object == spec.object else None
    links = schema.crm_records
    # The links, the statuses seen and the actions they are: one transaction, so that a status is
    # never marked seen without its action (the stage facts are history: nothing announced).
    stages, _ = writing(workspace, "stages", converter.mapping, now)
    with stages.unit_of_work() as uow:
        ids = _lead_ids(uow, [record for _, record in people])
        ids_of = [str(row.values.get(id_field)) for row, _ in people]
        known = _links(uow, crm, spec.object, ids_of)
        linked: set[int] = set()
        facts: list[tuple[RawRow, KeyedFact]] = []
        for (row, record), record_id in zip(people, ids_of, strict=True):
            lead_id = ids.get((record.email, record.external_id))
            before = known.get(record_id)
            value = str(row.values.get(status.field) or "") if status else None
            if lead_id is not None and (before is None or before[1] != lead_id):
                linked.add(lead_id)  # a person newly linked: written back once, changed or not
            values = {"lead_id": lead_id, "status": value}
            if before is not None:
                uow.connection.execute(
                    update(links)
                    .where(links.c.crm == crm, links.c.object == spec.object, links.c.record_id == record_id)
                    .values(**values)
                )
            else:
                uow.connection.execute(
                    links.insert().values(crm=crm, object=spec.object, record_id=record_id, **values)
                )
            if status is not None and _acts(status, value, before):
                try:
                    facts.append(
                        (row, (record.email, record.external_id, _status_fact(crm, status, row.values, value)))
                    )
                except InvalidInput as error:
                    rejects.add(row, f"status.{status.at}", error.message)
                    summary.count(spec.object, "rejected")
        if facts:
            done = record_facts(
                uow, [fact for _, fact in facts], source=f"{crm}:{spec.object}", now=now, create_unknown=False
            )
            summary.actions += sum(1 for s in done.statuses if s == "created")
            for index, (_, problem) in done.problems.items():
                rejects.add(facts[index][0], "status", problem)
                summary.count(spec.object, "rejected")
        if linked and mapping.push is not None and mapping.push.object == spec.object:
            queue_pushes(uow.connection, crm, linked, now)


def _link_accounts(
    workspace: Workspace,
    crm: str,
    spec: Pull,
    mapping: SyncMapping,
    rows: list[RawRow],
    records: list[Any],
    id_field: str,
    now: datetime,
) -> None:
    """Each pulled company linked to its account (by domain); one newly linked is written back once."""
    pulled = [
        (str(row.values.get(id_field)), record.domain)
        for row, record in zip(rows, records, strict=True)
        if isinstance(record, Account)
    ]
    if not pulled:
        return
    links, accounts = schema.crm_records, schema.accounts
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        ids = dict(
            conn.execute(
                select(accounts.c.domain, accounts.c.id).where(accounts.c.domain.in_({d for _, d in pulled}))
            ).all()
        )
        known = dict(
            conn.execute(
                select(links.c.record_id, links.c.account_id).where(
                    links.c.crm == crm, links.c.object == spec.object, links.c.record_id.in_([r for r, _ in pulled])
                )
            ).all()
        )
        linked = set()
        for record_id, domain in pulled:
            account_id = ids.get(domain)
            if record_id in known:
                if known[record_id] == account_id:
                    continue
                where = (links.c.crm == crm, links.c.object == spec.object, links.c.record_id == record_id)
                conn.execute(update(links).where(*where).values(account_id=account_id))
            else:
                conn.execute(
                    links.insert().values(crm=crm, object=spec.object, record_id=record_id, account_id=account_id)
                )
            if account_id is not None:
                linked.add(account_id)
        push = mapping.push_accounts
        if linked and push is not None and push.object == spec.object:
            queue_pushes(conn, crm, linked, now, column="account_id")


def _links(uow: UnitOfWork, crm: str, obj: str, record_ids: list[str]) -> dict[str, tuple[str | None, int | None]]:
    """The known links among these records: record id -> (status seen, lead id)."""
    links = schema.crm_records
    rows = uow.connection.execute(
        select(links.c.record_id, links.c.status, links.c.lead_id).where(
            links.c.crm == crm, links.c.object == obj, links.c.record_id.in_(record_ids)
        )
    )
    return {r.record_id: (r.status, r.lead_id) for r in rows}


def _acts(status: Status, value: str | None, before: tuple[str | None, int | None] | None) -> bool:
    """Whether a status value seen is an action: mapped, and not the value seen last time."""
    return value is not None and value in status.actions and (before is None or before[0] != value)


def _status_fact(crm: str, status: Status, values: dict[str, Any], value: str | None) -> StageFact:
    """The stage fact of a status change: dated when the field took the value where the CRM says
    (`<field>@at`, from its history), otherwise by the record's `at` field."""
    action = status.actions[str(value)]
    raw = values.get(f"{status.field}@at") or values.get(status.at)
    return imported_fact(
        at=_when(raw), action=action.action, by=crm, reason=action.reason, note=action.note or f"{status.field} {value}"
    )


def _when(raw: Any) -> datetime:
    if raw in (None, ""):
        raise InvalidInput("no value: the status change needs its date")
    try:
        moment = parse_value(raw, "timestamp", timestamp_format=None, zone=UTC)
    except BadValue as error:
        raise InvalidInput(str(error)) from None
    assert isinstance(moment, datetime)
    return moment


def _lead_ids(uow: UnitOfWork, leads: list[Lead]) -> dict[tuple[str | None, str | None], int]:
    """Each pulled person's lead id, by the keys it was imported with."""
    if not leads:
        return {}
    t = schema.leads
    emails = sorted({lead.email for lead in leads if lead.email})
    external = sorted({lead.external_id for lead in leads if lead.external_id})
    rows = list(
        uow.connection.execute(
            select(t.c.id, t.c.email, t.c.external_id).where(
                or_(t.c.email.in_(emails), t.c.external_id.in_(external)), t.c.erased_at.is_(None)
            )
        )
    )
    by_email = {row.email: row.id for row in rows if row.email}
    by_external = {row.external_id: row.id for row in rows if row.external_id}
    out = {}
    for lead in leads:
        found = by_external.get(lead.external_id) if lead.external_id else None
        found = found or (by_email.get(lead.email) if lead.email else None)
        if found is not None:
            out[(lead.email, lead.external_id)] = found
    return out


def _check_rows(
    workspace: Workspace,
    crm: str,
    converter: RowConverter,
    rows: list[RawRow],
    spec: Pull,
    status: Status | None,
    summary: PullSummary,
    id_field: str,
) -> None:
    """A dry run's page: each record converted (rejects counted), people counted new or known,
    and status changes that would be actions counted."""
    rejects = _Rejected(summary, spec.object)
    people: list[tuple[RawRow, Lead]] = []
    for row in rows:
        try:
            record = converter.convert(row.values)
        except InvalidInput as error:
            rejects.add(row, error.field, error.message)
            continue
        if isinstance(record, Lead):
            people.append((row, record))
        else:
            summary.count(spec.object, "updated")  # written again: the count of what a real pull sends through
    summary.count(spec.object, "rejected", rejects.count)
    if not people:
        return
    with workspace.unit_of_work(read_only=True) as uow:
        known = _lead_ids(uow, [lead for _, lead in people])
        seen = _links(uow, crm, spec.object, [str(row.values.get(id_field)) for row, _ in people])
    for row, lead in people:
        summary.count(spec.object, "updated" if (lead.email, lead.external_id) in known else "created")
        value = str(row.values.get(status.field) or "") if status else None
        if status is not None and _acts(status, value, seen.get(str(row.values.get(id_field)))):
            summary.actions += 1


def _save_cursor(workspace: Workspace, crm: str, obj: str, cursor: str, now: datetime) -> None:
    """Keep the place reached, and hold the pull's lease a while longer."""
    c = schema.crm_connections
    with workspace.unit_of_work() as uow:
        row = uow.connection.execute(select(c.c.cursors).where(c.c.crm == crm).with_for_update()).first()
        if row is not None:
            values = {
                "cursors": {**dict(row.cursors), obj: cursor},
                "updated_at": now,
                "pulling_until": utcnow() + PULL_LEASE,
            }
            uow.connection.execute(update(c).where(c.c.crm == crm).values(**values))


# --- pushing ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class PushSummary:
    pushed: int = 0  # people written to the CRM
    accounts: int = 0  # companies written to the CRM
    unchanged: int = 0  # the CRM had these values already
    failed: int = 0  # to be tried again
    dead: int = 0
    errors: list[str] = field(default_factory=list)  # the first SAMPLES


def push_due(
    workspace: Workspace,
    crm: str,
    client: CrmClient,
    now: datetime,
    *,
    rng: random.Random | None = None,
) -> PushSummary:
    """Write every due push of `crm`, people's then accounts', a batch a request; each batch's
    outcomes in one transaction of their own."""
    policy = delivery.webhook_policy(workspace.settings)
    summary = PushSummary()
    with workspace.unit_of_work(read_only=True) as uow:
        mapping, _, _ = _connection(uow, crm)
    started = time.monotonic()
    with workspace.unit_of_work() as uow:  # pushes a dead worker held are due again (at least once)
        delivery.expire_leases(uow.connection, QUEUE, now)
    run = _PushRun(workspace, crm, client, policy, rng or random.Random(), summary, now, started)
    if mapping.push is not None:
        # Without `create`, a person is found by the record the pull linked it to.
        run.subject("lead_id", mapping.push, mapping.pull_of(mapping.push.object) is not None)
    if mapping.push_accounts is not None:
        run.subject("account_id", mapping.push_accounts, True)
    return summary


@dataclass(slots=True)
class _PushRun:
    workspace: Workspace
    crm: str
    client: CrmClient
    policy: delivery.RetryPolicy
    rng: random.Random
    summary: PushSummary
    now: datetime
    started: float

    def subject(self, column: str, push: Push, by_link: bool) -> None:
        """Every due push of one kind of subject (`lead_id` or `account_id`)."""
        table = QUEUE.table
        # A claim outlasts the slowest request of a batch: every record of it sent alone, timing out.
        lease = self.policy.lease(self.client.push_limit)
        while True:
            at = _at(self.now, self.started)
            with self.workspace.unit_of_work() as uow:
                where = and_(table.c.crm == self.crm, table.c[column].is_not(None))
                ids = delivery.claim(uow.connection, QUEUE, at, limit=self.client.push_limit, lease=lease, where=where)
                claims = _claims(uow, ids, column)
                subjects = sorted({subject for _, subject, _ in claims})
                rows = account_rows(uow, subjects) if column == "account_id" else lead_rows(uow, subjects)
                linked = _linked(uow, self.crm, push.object if by_link else None, list(rows), column)
            items: list[tuple[int, int, PushItem]] = []
            unchanged: list[tuple[int, int]] = []
            for row_id, subject, attempts in claims:
                row = rows.get(subject)
                record_id, pushed = linked.get(subject, (None, None))
                values = {name: _pushed_value(row.get(field)) for name, field in push.fields.items()} if row else None
                if values is None or (record_id is None and not push.create) or pushed == values:
                    unchanged.append((row_id, attempts))  # gone, not in the CRM, or written already
                    continue
                items.append((row_id, attempts, PushItem(subject, record_id, (row or {}).get("email"), values)))
            try:
                sent = [item for _, _, item in items]
                results = {r.lead_id: r for r in self.client.push(push.object, sent)} if sent else {}
            except CrmError as error:  # not the records' fault (a refused token, a spent allowance): no attempt spent
                _hold(self.workspace, ids, at + timedelta(seconds=error.retry_after or AUTH_RETRY))
                raise
            self._record(column, push, unchanged, items, results, _at(self.now, self.started))
            if len(ids) < self.client.push_limit:
                return

    def _record(
        self,
        column: str,
        push: Push,
        unchanged: list[tuple[int, int]],
        items: list[tuple[int, int, PushItem]],
        results: dict[int, PushResult],
        at: datetime,
    ) -> None:
        summary, record = (
            self.summary,
            partial(delivery.record_attempt, queue=QUEUE, now=at, policy=self.policy, rng=self.rng),
        )
        with self.workspace.unit_of_work() as uow:
            for row_id, attempts in unchanged:
                record(uow.connection, row_id=row_id, attempts=attempts, result="done", done={"pushed_at": at})
                summary.unchanged += 1
            for row_id, attempts, item in items:
                result = results.get(item.lead_id)
                outcome: delivery.Result = (
                    "done"
                    if result and result.error is None
                    else "failed"
                    if result and result.retryable
                    else "refused"
                )
                problem = None if result is None else result.error
                status = record(
                    uow.connection, row_id=row_id, attempts=attempts, result=outcome,
                    values={"last_error": problem if outcome != "done" else None}, done={"pushed_at": at},
                )  # fmt: skip
                if outcome == "done" and result is not None:
                    _remember(uow, self.crm, push.object, item, result.record_id, column)
                    if column == "account_id":
                        summary.accounts += 1
                    else:
                        summary.pushed += 1
                else:
                    summary.dead += status == DEAD
                    summary.failed += status != DEAD
                    if problem and len(summary.errors) < SAMPLES:
                        summary.errors.append(f"{column.removesuffix('_id')} {item.lead_id}: {problem}")


def _hold(workspace: Workspace, ids: list[int], until: datetime) -> None:
    """Claims the CRM refused as a whole go back to pending, due at `until`, attempts untouched."""
    t = QUEUE.table
    with workspace.unit_of_work() as uow:
        uow.connection.execute(
            update(t).where(t.c.id.in_(ids), t.c.status == SENDING).values(status=PENDING, next_attempt_at=until)
        )


def _at(now: datetime, started: float) -> datetime:
    """The pass's `now` plus the time the pass has taken so far: claims and backoff count from
    when they happen, not from the start of a pass a slow CRM made long."""
    return now + timedelta(seconds=time.monotonic() - started)


def _claims(uow: UnitOfWork, ids: list[int], column: str) -> list[tuple[int, int, int]]:
    """The claimed pushes: (row id, lead or account id, attempts so far)."""
    p = schema.crm_pushes
    if not ids:
        return []
    rows = uow.connection.execute(select(p.c.id, p.c[column], p.c.attempts).where(p.c.id.in_(ids)).order_by(p.c.id))
    return [(row[0], row[1], row[2]) for row in rows]


def _linked(
    uow: UnitOfWork, crm: str, obj: str | None, ids: list[int], column: str
) -> dict[int, tuple[str | None, dict[str, Any] | None]]:
    """Each lead's (or account's) CRM record and the values last written to it."""
    links = schema.crm_records
    key = links.c[column]
    statement = select(key, links.c.record_id, links.c.pushed).where(links.c.crm == crm, key.in_(ids))
    if obj is not None:
        statement = statement.where(links.c.object == obj)
    return {row[0]: (row[1], row[2]) for row in uow.connection.execute(statement.order_by(links.c.record_id))}


def _remember(uow: UnitOfWork, crm: str, obj: str, item: PushItem, record_id: str | None, column: str) -> None:
    links = schema.crm_records
    record_id = item.record_id or record_id
    if record_id is None:
        return
    where = (links.c.crm == crm, links.c.object == obj, links.c.record_id == record_id)
    values = {column: item.lead_id, "pushed": item.values, "pushed_at": utcnow()}
    if uow.connection.execute(update(links).where(*where).values(**values)).rowcount == 0:
        uow.connection.execute(links.insert().values(crm=crm, object=obj, record_id=record_id, **values))


def _pushed_value(value: Any) -> Any:
    """A value as written and remembered: times as ISO text, numbers to two decimals."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 2)
    return value


# --- the whole sync, and the worker's share --------------------------------------------------------


@dataclass(slots=True)
class SyncSummary:
    crm: str
    pulled: PullSummary
    pushed: PushSummary
    dry_run: bool = False
    pending: int = 0  # pushes waiting (a dry run sends none)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync(
    workspace: Workspace,
    crm: str,
    *,
    clients: ClientFactory = open_client,
    now: datetime | None = None,
    dry_run: bool = False,
    full: bool = False,
) -> SyncSummary:
    """Pull what changed, then push what is due (`qualify crm sync`). A failure is kept on the
    connection (`qualify crm status`) and raised."""
    now = now or utcnow()
    client = clients(crm, workspace.settings)
    try:
        pulled = pull(workspace, crm, client, now=now, full=full, dry_run=dry_run)
        pushed = PushSummary() if dry_run else push_due(workspace, crm, client, now)
    except CrmError as error:
        _fail(workspace, crm, error.message, now)
        raise
    finally:
        client.close()
    summary = SyncSummary(crm, pulled, pushed, dry_run, _pending(workspace, crm, now))
    if not dry_run:
        c = schema.crm_connections
        with workspace.unit_of_work() as uow:
            uow.connection.execute(update(c).where(c.c.crm == crm).values(last_summary=_brief(summary), updated_at=now))
    return summary


def run_due(workspace: Workspace, now: datetime, *, clients: ClientFactory = open_client) -> int:
    """The worker's share: each connected CRM's due pushes, and its pull once the last one (or the
    last failure) is older than `QUALIFY_CRM_SYNC_INTERVAL`, `WORKER_PULL_LIMIT` records a pass.
    A failure is kept on the connection and stops neither the other CRM nor the pushes.
    Returns how many records were written either way."""
    interval = timedelta(seconds=workspace.settings.crm_sync_interval)
    c = schema.crm_connections
    with workspace.unit_of_work(read_only=True) as uow:
        due = list(uow.connection.execute(select(c.c.crm, c.c.pulled_at, c.c.failed_at).order_by(c.c.crm)))
    done = 0
    for crm, pulled_at, failed_at in due:
        try:
            client = clients(crm, workspace.settings)
        except CrmError as error:
            _fail(workspace, crm, error.message, now)
            continue
        try:
            last = max((t for t in (pulled_at, failed_at) if t is not None), default=None)
            if interval and (last is None or now - last >= interval):
                done += _guarded_part(workspace, crm, now, _pulling, client)
            done += _guarded_part(workspace, crm, now, _pushing, client)
        finally:
            client.close()
    return done


def _pulling(workspace: Workspace, crm: str, client: CrmClient, now: datetime) -> int:
    return pull(workspace, crm, client, now=now, limit=WORKER_PULL_LIMIT).changed


def _pushing(workspace: Workspace, crm: str, client: CrmClient, now: datetime) -> int:
    pushed = push_due(workspace, crm, client, now)
    return pushed.pushed + pushed.accounts


def _guarded_part(
    workspace: Workspace,
    crm: str,
    now: datetime,
    part: Callable[[Workspace, str, CrmClient, datetime], int],
    client: CrmClient,
) -> int:
    try:
        return part(workspace, crm, client, now)
    except Exception as error:  # a CRM's answer, or the store: kept on the connection, tried again later
        message = error.message if isinstance(error, CrmError) else f"{type(error).__name__}: {error}"
        log.warning("crm sync with %s failed: %s", crm, message, exc_info=not isinstance(error, CrmError))
        _fail(workspace, crm, message, now)
        return 0


def _pending(workspace: Workspace, crm: str, now: datetime) -> int:
    p = schema.crm_pushes
    with workspace.unit_of_work(read_only=True) as uow:
        return int(
            uow.connection.execute(
                select(func.count()).select_from(p).where(p.c.crm == crm, p.c.status == PENDING)
            ).scalar_one()
        )


def _fail(workspace: Workspace, crm: str, message: str, now: datetime) -> None:
    c = schema.crm_connections
    with workspace.unit_of_work() as uow:
        values = {"last_error": f"{now.isoformat()}: {message[:1000]}", "failed_at": now}
        uow.connection.execute(update(c).where(c.c.crm == crm).values(**values))


def _brief(summary: SyncSummary) -> dict[str, Any]:
    return {
        "accounts": summary.pushed.accounts,
        "objects": summary.pulled.objects,
        "actions": summary.pulled.actions,
        "pushed": summary.pushed.pushed,
        "dead": summary.pushed.dead,
    }


def _not_erased(
    workspace: Workspace, crm: str, obj: str, rows: list[RawRow], id_field: str, summary: PullSummary
) -> list[RawRow]:
    """The pulled people not erased in Qualify; an erased one is left out and counted as rejected."""
    links = schema.crm_records
    ids = [str(row.values.get(id_field)) for row in rows]
    with workspace.unit_of_work(read_only=True) as uow:
        erased = set(
            uow.connection.execute(
                select(links.c.record_id).where(
                    links.c.crm == crm, links.c.object == obj, links.c.status == ERASED, links.c.record_id.in_(ids)
                )
            ).scalars()
        )
    if not erased:
        return rows
    rejects = _Rejected(summary, obj)
    for row, record_id in zip(rows, ids, strict=True):
        if record_id in erased:
            rejects.add(row, None, "erased in Qualify: not imported again (delete it in the CRM too)")
    summary.count(obj, "rejected", rejects.count)
    return [row for row, record_id in zip(rows, ids, strict=True) if record_id not in erased]
