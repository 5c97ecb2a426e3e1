"""A batch of lead changes inside one unit of work: load once, score in memory, write once."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from qualify.adapters import repository as repo
from qualify.adapters.repository import LeadRecord
from qualify.domain.accounts import Mark
from qualify.domain.conditions import all_match
from qualify.domain.evaluator import AppliedMove, LeadState, OnlineEvaluator
from qualify.domain.fit import disqualifying_rule, profile_values, score_fit
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.records import Account, Lead
from qualify.domain.scoring_model import DisqualifyRule, ScoringModel
from qualify.service.pipeline import Changed, Move
from qualify.service.unit_of_work import UnitOfWork, from_ts


class LeadBatch:
    """Leads loaded for one use case, changed in memory and written back by `write`."""

    def __init__(self, uow: UnitOfWork, model: ScoringModel, now: datetime, *, accounts_later: bool = False) -> None:
        self.conn = uow.connection
        self.accounts_later = accounts_later  # accounts left to the worker: no marks to swap
        self.model = model
        self.evaluator = OnlineEvaluator(model)
        self.now = now
        self.by_email: dict[str, LeadRecord] = {}
        self.by_external: dict[str, LeadRecord] = {}
        self.accounts: dict[int, Account] = {}
        self.account_ids: dict[str, int] = {}
        self.new: list[LeadRecord] = []
        self.history: list[Move] = []  # stage moves recorded, written by `write`
        self.late: dict[int, LeadRecord] = {}  # leads waiting for a rebuild in time order, by id()

    # --- loading -------------------------------------------------------------------------
    def load(self, emails: Iterable[str], external_ids: Iterable[str], *, profile: bool = True) -> None:
        """Load leads by key; without `profile`, only their scoring state (for events)."""
        emails = [e for e in emails if e not in self.by_email]
        external_ids = [x for x in external_ids if x not in self.by_external]
        records = repo.find_leads(self.conn, emails, external_ids, profile=profile)
        for record in records:
            self.remember(record)
        records += self._load_aliases(
            [e for e in emails if e not in self.by_email],
            [x for x in external_ids if x not in self.by_external],
            profile,
        )
        if not profile:
            return
        missing = {r.account_id for r in records if r.account_id is not None} - self.accounts.keys()
        self.accounts.update(repo.accounts_by_id(self.conn, missing))

    def claim(self, emails: Iterable[str], external_ids: Iterable[str], *, profile: bool = True) -> None:
        """Before creating leads for keys `load` did not find: lock those keys (`lock_lead_keys`)
        and load them again, so that a lead another transaction created meanwhile is found
        rather than made twice (which its unique key would refuse, failing the whole batch)."""
        emails = sorted({e for e in emails if e and e not in self.by_email})
        external_ids = sorted({x for x in external_ids if x and x not in self.by_external})
        if not emails and not external_ids:
            return
        if repo.lock_lead_keys(self.conn, [*emails, *(f"ext:{x}" for x in external_ids)]):
            self.load(emails, external_ids, profile=profile)

    def _load_aliases(self, emails: list[str], external_ids: list[str], profile: bool) -> list[LeadRecord]:
        """Keys of merged leads find the lead they were merged into."""
        targets = repo.alias_targets(self.conn, emails, external_ids) if emails or external_ids else {}
        if not targets:
            return []
        known = {r.id: r for r in self.records()}
        loaded = {
            r.id: r for r in repo.find_leads_by_id(self.conn, set(targets.values()) - known.keys(), profile=profile)
        }
        for record in loaded.values():
            self.remember(record)
        known.update(loaded)
        for key, lead_id in targets.items():
            if key.startswith("ext:"):
                self.by_external[key[4:]] = known[lead_id]
            else:
                self.by_email[key] = known[lead_id]
        return list(loaded.values())

    def remember(self, record: LeadRecord) -> None:
        if record.score_before is None and record.id is not None:
            record.score_before = record.state.fit + record.state.engagement_at(self.now.timestamp())
            spec = self.model.accounts
            if spec is not None and record.account_before is None and not self.accounts_later:
                mark = Mark.of_lead(spec, record.id, record.state) if record.account_id is not None else None
                record.account_before = (record.account_id, mark)
        if record.lead.email:
            self.by_email[record.lead.email] = record
        if record.lead.external_id:
            self.by_external[record.lead.external_id] = record

    def get(self, email: str | None, external_id: str | None) -> LeadRecord | None:
        """The lead the keys name: by external id first (it names one journey of a person), else
        by email (the person's current journey)."""
        if external_id and external_id in self.by_external:
            return self.by_external[external_id]
        if email and email in self.by_email:
            return self.by_email[email]
        return None

    def records(self) -> list[LeadRecord]:
        seen: dict[int, LeadRecord] = {}
        for record in (*self.by_email.values(), *self.by_external.values()):
            seen[id(record)] = record
        return list(seen.values())

    # --- accounts ------------------------------------------------------------------------
    def ensure_accounts(self, domains: Iterable[str]) -> None:
        """Make sure an account exists for every domain (free-mail domains never get one)."""
        wanted = {d for d in domains if d and d not in self.account_ids}
        if not wanted:
            return
        for domain, (account_id, account) in repo.find_accounts(self.conn, wanted).items():
            self.account_ids[domain] = account_id
            self.accounts[account_id] = account
        missing = sorted(wanted - self.account_ids.keys())
        inserted = repo.insert_accounts(self.conn, [Account(domain=d) for d in missing], self.now)
        for domain, account_id in inserted.items():
            self.account_ids[domain] = account_id
            self.accounts[account_id] = Account(domain=domain)
        # Made meanwhile by another transaction (now committed): read as it is.
        for domain, (account_id, account) in repo.find_accounts(self.conn, set(missing) - inserted.keys()).items():
            self.account_ids[domain] = account_id
            self.accounts[account_id] = account

    def account_of(self, record: LeadRecord) -> Account | None:
        return self.accounts.get(record.account_id) if record.account_id is not None else None

    # --- scoring -------------------------------------------------------------------------
    def refit(self, record: LeadRecord) -> DisqualifyRule | None:
        """Recompute fit from the lead and its account; return a matching disqualify rule."""
        values = profile_values(record.lead, self.account_of(record))
        fit = score_fit(self.model, values)
        state = record.state
        state.fit, state.grade, state.persona = fit.score, fit.grade, fit.persona
        spec = self.model.accounts
        state.roles = tuple(r.name for r in spec.roles if all_match(r.conditions, values)) if spec else ()
        record.model_version = self.model.version
        record.changed = True
        return disqualifying_rule(self.model, values)

    def create(
        self,
        lead: Lead,
        *,
        at: datetime,
        by: str,
        person_email: str | None = None,
        account_id: int | None = None,
    ) -> LeadRecord:
        """A new lead in stage `lead`, linked to its account, with fit scored and the policy applied.

        `person_email` and `account_id` are for a person's past journey, which has no email of its own."""
        domain = lead.account_domain
        if domain:
            self.ensure_accounts([domain])
        created = lead.created_at or at
        record = LeadRecord(
            id=None,
            lead=lead,
            account_id=self.account_ids.get(domain) if domain else account_id,
            created_at=created,
            state=LeadState(stage=Stage.LEAD, stage_entered=created.timestamp()),
            person_email=person_email,
            account_before=(None, None),
        )
        lead.created_at = created
        rule = self.refit(record)
        self.record_history(record, None, Stage.LEAD, created, Actor.SYSTEM, by, "created")
        self.record_moves(record, self.evaluator.sweep(record.state, created.timestamp(), rule))
        self.new.append(record)
        self.remember(record)
        return record

    def record_moves(self, record: LeadRecord, moves: list[AppliedMove], by: str | None = None) -> None:
        for move in moves:
            who = by or (self.model.version if move.actor is Actor.MODEL else "decay-out timer")
            self.history.append(
                Move(
                    record,
                    {
                        "from_stage": move.from_stage.value,
                        "to_stage": move.to_stage.value,
                        "at": from_ts(move.at),
                        "actor": move.actor.value,
                        "by": who,
                        "reason": move.reason[:300],
                        "note": None,
                        "fit_score": move.fit,
                        "fit_grade": move.grade,
                        "engagement_score": move.engagement,
                        "persona": move.persona,
                        "model_version": self.model.version,
                    },
                )
            )
            record.changed = True

    def record_history(
        self,
        record: LeadRecord,
        from_stage: Stage | None,
        to_stage: Stage,
        at: datetime,
        actor: Actor,
        by: str,
        reason: str | None,
        note: str | None = None,
    ) -> None:
        state = record.state
        self.history.append(
            Move(
                record,
                {
                    "from_stage": from_stage.value if from_stage else None,
                    "to_stage": to_stage.value,
                    "at": at,
                    "actor": actor.value,
                    "by": by,
                    "reason": reason,
                    "note": note,
                    "fit_score": state.fit,
                    "fit_grade": state.grade,
                    "engagement_score": state.engagement_at(at.timestamp()),
                    "persona": state.persona,
                    "model_version": self.model.version,
                },
            )
        )
        record.changed = True

    # --- writing -------------------------------------------------------------------------
    def write(self, event_rows: Iterable[tuple[LeadRecord, dict[str, Any]]] = ()) -> Changed:
        """Write new and changed leads, then the events and history that point at them; return what
        changed, for the pipeline of reactions (`pipeline.react`). Writing reacts to nothing."""
        new_ids = {id(r) for r in self.new}
        changed = [r for r in self.records() if r.changed and id(r) not in new_ids]
        # Updates first: a person's journey that gave up its email to a new one must have let go of it.
        repo.update_leads(self.conn, changed, scored_at=self.now, now=self.now)
        repo.insert_leads(self.conn, self.new, scored_at=self.now, now=self.now)
        self.new = []
        rows = []
        for record, row in event_rows:
            row["lead_id"] = record.id
            rows.append(row)
        repo.insert_events(self.conn, rows)
        for move in self.history:
            move.values["lead_id"] = move.record.id
        repo.insert_history(self.conn, [move.values for move in self.history])
        touched = [*changed, *(r for r in self.records() if id(r) in new_ids)]
        at = self.now.timestamp()
        scores = []
        for record in touched:
            after = record.state.fit + record.state.engagement_at(at)
            if record.id is not None:
                scores.append((record.id, record.score_before, after))
            record.score_before = after  # a second write in the same use case reports only new moves
        moves, self.history = self.history, []
        return Changed(
            self.now, self.model, records=touched, moves=moves, events=rows, scores=scores,
            accounts_later=self.accounts_later,
        )  # fmt: skip
