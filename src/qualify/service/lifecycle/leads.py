"""Upsert leads and accounts: insert new ones, merge what changed, rescore fit."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Literal

from qualify.adapters import repository as repo
from qualify.adapters.repository import LeadRecord
from qualify.domain.errors import InvalidInput
from qualify.domain.records import ACCOUNT_FIELDS, Account, Lead, merge_into
from qualify.service.lifecycle.accounts import recount_accounts
from qualify.service.lifecycle.lead_batch import LeadBatch
from qualify.service.pipeline import react
from qualify.service.unit_of_work import UnitOfWork, utcnow

_MERGED_FIELDS = tuple(
    f.name for f in fields(Lead) if f.name not in ("email", "external_id", "attributes", "created_at")
)


UpsertStatus = Literal["created", "updated", "unchanged", "rejected"]


@dataclass
class UpsertOutcome:
    """What happened to each input, in input order: created, updated, unchanged or rejected."""

    statuses: list[UpsertStatus] = field(default_factory=list)
    errors: dict[int, InvalidInput] = field(default_factory=dict)

    def count(self, status: UpsertStatus) -> int:
        return self.statuses.count(status)


def upsert_accounts(
    uow: UnitOfWork, accounts: list[Account], *, now: datetime | None = None, by: str = "import"
) -> UpsertOutcome:
    """Insert or merge accounts by domain; leads of a changed account get their fit rescored."""
    now = now or utcnow()
    outcome = UpsertOutcome()
    conn = uow.connection
    existing = repo.find_accounts(conn, [a.domain for a in accounts])
    to_insert: dict[str, Account] = {}
    to_update: dict[int, Account] = {}
    created_at: dict[str, int] = {}  # the place of each domain's "created" status
    for account in accounts:
        if account.domain in to_insert:
            _merge_account(to_insert[account.domain], account)
            outcome.statuses.append("updated")
        elif account.domain in existing:
            account_id, stored = existing[account.domain]
            if _merge_account(stored, account):
                to_update[account_id] = stored
                outcome.statuses.append("updated")
            else:
                outcome.statuses.append("unchanged")
        else:
            to_insert[account.domain] = account
            created_at[account.domain] = len(outcome.statuses)
            outcome.statuses.append("created")
    inserted = repo.insert_accounts(conn, list(to_insert.values()), now)
    # A domain another transaction created meanwhile: what this batch says is merged into it.
    for domain, (account_id, stored) in repo.find_accounts(conn, to_insert.keys() - inserted.keys()).items():
        changed = _merge_account(stored, to_insert[domain])
        if changed:
            to_update[account_id] = stored
        outcome.statuses[created_at[domain]] = "updated" if changed else "unchanged"
    repo.update_accounts(conn, list(to_update.items()), now)
    if to_update:
        _refit_account_leads(uow, list(to_update), now, by)
    # The account's own fit (and, for one with no people yet, its first scores).
    recount_accounts(uow, sorted({*inserted.values(), *to_update}), now=now)
    return outcome


def _merge_account(stored: Account, incoming: Account) -> bool:
    return merge_into(stored, incoming, ACCOUNT_FIELDS)


def _refit_account_leads(uow: UnitOfWork, account_ids: list[int], now: datetime, by: str) -> None:
    from sqlalchemy import select

    from qualify.adapters import schema

    leads = schema.leads
    for part in repo.chunks(account_ids):
        rows = uow.connection.execute(
            select(leads.c.email, leads.c.external_id).where(leads.c.account_id.in_(part))
        ).all()
        batch = LeadBatch(uow, uow.active_model(), now)
        batch.load(
            [r.email for r in rows if r.email],
            [r.external_id for r in rows if r.external_id and not r.email],
        )
        for record in batch.records():
            _rescore_profile(batch, record, by)
        react(uow, batch.write(), batch)


def _another_journey(current: LeadRecord, lead: Lead) -> bool:
    """Whether `lead` is another journey of the person `current` is the current journey of: the
    same email (not a merged lead's alias), each with its own CRM id."""
    stored = current.lead
    return bool(stored.email == lead.email and stored.external_id and lead.external_id != stored.external_id)


def _new_journey(batch: LeadBatch, lead: Lead, current: LeadRecord, by: str) -> LeadRecord:
    """A person's new lead (a returning buyer: a new inquiry in the CRM, under its own id).

    The newest journey, by creation, holds the email; the others keep it as `person_email`, so
    that events by email go to the person's newest journey whatever order the CRM's rows came in.
    A past journey is scored without the email (as the batch side reads it) at the person's account.
    """
    created = lead.created_at or batch.now
    email = lead.email
    assert email is not None
    if created >= current.created_at:
        current.person_email = email
        current.lead.email = None
        current.profile_changed = True
        _rescore_profile(batch, current, by)
        batch.by_email.pop(email, None)
        return batch.create(lead, at=created, by=by)
    past = Lead(**{**{f.name: getattr(lead, f.name) for f in fields(Lead)}, "email": None})
    record = batch.create(past, at=created, by=by, person_email=email, account_id=current.account_id)
    return record


def _rescore_profile(batch: LeadBatch, record: LeadRecord, by: str) -> None:
    rule = batch.refit(record)
    batch.record_moves(record, batch.evaluator.sweep(record.state, batch.now.timestamp(), rule))
    del by


def upsert_leads(
    uow: UnitOfWork,
    leads: list[Lead],
    *,
    accounts: list[Account] | None = None,
    now: datetime | None = None,
    by: str = "import",
) -> UpsertOutcome:
    """Insert new leads and merge known ones (by email, then external id), in input order.

    A field left empty keeps the stored value; attributes are merged key by key.
    A lead whose fit or disqualify rules change is moved by the policy at once.
    """
    now = now or utcnow()
    if accounts:
        upsert_accounts(uow, accounts, now=now, by=by)
    batch = LeadBatch(uow, uow.active_model(), now)
    emails = [lead.email for lead in leads if lead.email]
    external_ids = [lead.external_id for lead in leads if lead.external_id]
    batch.load(emails, external_ids)
    batch.claim(emails, external_ids)
    batch.ensure_accounts(lead.account_domain for lead in leads if lead.account_domain)
    outcome = UpsertOutcome()
    for index, lead in enumerate(leads):
        try:
            outcome.statuses.append(_upsert_one(batch, lead, by))
        except InvalidInput as error:
            outcome.statuses.append("rejected")
            outcome.errors[index] = error
    react(uow, batch.write(), batch)
    return outcome


def _upsert_one(batch: LeadBatch, lead: Lead, by: str) -> UpsertStatus:
    by_email = batch.by_email.get(lead.email) if lead.email else None
    by_external = batch.by_external.get(lead.external_id) if lead.external_id else None
    past_journey = by_external is not None and by_external.lead.email is None and by_external.person_email == lead.email
    if by_email is not None and by_external is not None and by_email is not by_external:
        if not past_journey:
            raise InvalidInput(
                f"email {lead.email} and external id {lead.external_id} belong to two different leads; merge them first",
                field="external_id",
            )
        by_email = None  # an earlier journey of the person: it is updated, the current one keeps the email
    if by_email is not None and by_external is None and _another_journey(by_email, lead):
        _new_journey(batch, lead, by_email, by)
        return "created"
    record = by_email or by_external
    if record is None:
        batch.create(lead, at=lead.created_at or batch.now, by=by)
        return "created"
    stored = record.lead
    # A key of a lead merged into this one names this lead: it neither conflicts nor replaces.
    aliased = {
        key
        for key, found in (("email", by_email), ("external_id", by_external))
        if found is record and getattr(lead, key) != getattr(stored, key)
    }
    if past_journey:
        aliased.add("email")
    for key in ("email", "external_id"):
        incoming, current = getattr(lead, key), getattr(stored, key)
        if key not in aliased and incoming and current and incoming != current:
            raise InvalidInput(
                f"{key} {incoming!r} differs from the stored {current!r} of the same lead",
                field=key,
            )
    changed = False
    for key in ("email", "external_id"):
        if key not in aliased and getattr(lead, key) and not getattr(stored, key):
            setattr(stored, key, getattr(lead, key))
            changed = True
    if lead.email and record.account_id is None and stored.account_domain:
        batch.ensure_accounts([stored.account_domain])
        record.account_id = batch.account_ids[stored.account_domain]
    changed = merge_into(stored, lead, _MERGED_FIELDS) or changed
    if not changed:
        return "unchanged"
    record.profile_changed = True
    batch.remember(record)
    _rescore_profile(batch, record, by)
    return "updated"
