"""A batch of lead changes inside one unit of work: load once, score in memory, write once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qualify.adapters import repository as repo
from qualify.adapters.repository import LeadRecord
from qualify.domain.evaluator import AppliedMove, LeadState, OnlineEvaluator
from qualify.domain.fit import disqualifying_rule, profile_values, score_fit
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.records import Account, Lead
from qualify.domain.scoring_model import DisqualifyRule, ScoringModel
from qualify.service.automation import engine as automation
from qualify.service.integrations import announcements as outbox
from qualify.service.lifecycle import handoff
from qualify.service.unit_of_work import UnitOfWork, from_ts


def _lead_ref(record: LeadRecord) -> dict[str, Any]:
    return {"id": record.id, "email": record.lead.email, "external_id": record.lead.external_id}


def _history_payload(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "from": values["from_stage"],
        "to": values["to_stage"],
        "at": values["at"].isoformat(),
        "actor": values["actor"],
        "by": values["by"],
        "reason": values["reason"],
        "note": values["note"],
        "scores": {
            "fit": values["fit_score"],
            "grade": values["fit_grade"],
            "engagement": values["engagement_score"],
            "persona": values["persona"],
        },
        "model_version": values["model_version"],
    }


@dataclass(slots=True)
class _PendingHistory:
    record: LeadRecord
    values: dict[str, Any]


class LeadBatch:
    """Leads loaded for one use case, changed in memory and written back by `flush`."""

    def __init__(self, uow: UnitOfWork, model: ScoringModel, now: datetime) -> None:
        self.uow = uow
        self.conn = uow.connection
        self.model = model
        self.evaluator = OnlineEvaluator(model)
        self.now = now
        self.by_email: dict[str, LeadRecord] = {}
        self.by_external: dict[str, LeadRecord] = {}
        self.accounts: dict[int, Account] = {}
        self.account_ids: dict[str, int] = {}
        self.new: list[LeadRecord] = []
        self.history: list[_PendingHistory] = []

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
        if record.lead.email:
            self.by_email[record.lead.email] = record
        if record.lead.external_id:
            self.by_external[record.lead.external_id] = record

    def get(self, email: str | None, external_id: str | None) -> LeadRecord | None:
        if email and email in self.by_email:
            return self.by_email[email]
        if external_id and external_id in self.by_external:
            return self.by_external[external_id]
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
        created = [Account(domain=d) for d in missing]
        for account, account_id in zip(created, repo.insert_accounts(self.conn, created, self.now), strict=True):
            self.account_ids[account.domain] = account_id
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
        record.model_version = self.model.version
        record.changed = True
        return disqualifying_rule(self.model, values)

    def create(self, lead: Lead, *, at: datetime, by: str) -> LeadRecord:
        """A new lead in stage `lead`, linked to its account, with fit scored and the policy applied."""
        domain = lead.account_domain
        if domain:
            self.ensure_accounts([domain])
        created = lead.created_at or at
        record = LeadRecord(
            id=None,
            lead=lead,
            account_id=self.account_ids.get(domain) if domain else None,
            created_at=created,
            state=LeadState(stage=Stage.LEAD, stage_entered=created.timestamp()),
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
                _PendingHistory(
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
            _PendingHistory(
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
    def flush(self, event_rows: list[tuple[LeadRecord, dict[str, Any]]] = ()) -> None:  # type: ignore[assignment]
        """Write new and changed leads, then the events and history that point at them."""
        scored_at = self.now
        repo.insert_leads(self.conn, self.new, scored_at=scored_at, now=self.now)
        new_ids = {id(r) for r in self.new}
        self.new = []
        changed = [r for r in self.records() if r.changed and id(r) not in new_ids]
        repo.update_leads(self.conn, changed, scored_at=scored_at, now=self.now)
        rows = []
        for record, row in event_rows:
            row["lead_id"] = record.id
            rows.append(row)
        repo.insert_events(self.conn, rows)
        history = []
        for pending in self.history:
            pending.values["lead_id"] = pending.record.id
            history.append(pending.values)
        repo.insert_history(self.conn, history)
        touched = [*changed, *(r for r in self.records() if id(r) in new_ids)]
        changes = self._automation_changes(touched, rows)
        self._hand_off_and_announce(changed_or_new=touched)
        self.history = []
        automation.after_flush(self.uow, changes)

    def _automation_changes(self, touched: list[LeadRecord], events: list[dict[str, Any]]) -> automation.Changes:
        """What segments and workflow triggers need to know of this flush (before scores move on)."""
        at = self.now.timestamp()
        return automation.Changes(
            lead_ids=[r.id for r in touched if r.id is not None],
            now=self.now,
            stage_entries=[(p.record.id, p.values["to_stage"]) for p in self.history if p.record.id is not None],
            events=[(row["lead_id"], row["type"], row["properties"]) for row in events],
            scores=[
                (r.id, r.score_before, r.state.fit + r.state.engagement_at(at)) for r in touched if r.id is not None
            ],
        )

    def _hand_off_and_announce(self, changed_or_new: list[LeadRecord]) -> None:
        """New MQLs go to sales; stage changes and score crossings go to the outbox, in this transaction."""
        subscriptions = outbox.active_subscriptions(self.conn)
        announcements: list[outbox.Announcement] = []
        for pending in self.history:
            values = pending.values
            if values["to_stage"] == Stage.MQL.value:
                handoff.on_qualified(self.conn, self.model, pending.record, values["at"])
            if values["from_stage"] is None or not subscriptions:
                continue
            payload = {"lead": _lead_ref(pending.record), **_history_payload(values)}
            announcements.append(outbox.Announcement("stage.changed", payload))
            if values["to_stage"] == Stage.MQL.value:
                announcements.append(outbox.Announcement("lead.mql", payload))
        if any(sub.thresholds for sub in subscriptions):
            at = self.now.timestamp()
            for record in changed_or_new:
                after = record.state.fit + record.state.engagement_at(at)
                announcements += outbox.score_crossings(
                    subscriptions, _lead_ref(record), record.score_before, after, self.now
                )
                record.score_before = after  # a second flush in the same use case announces only new crossings
        outbox.enqueue(self.conn, announcements, self.now, subscriptions)
