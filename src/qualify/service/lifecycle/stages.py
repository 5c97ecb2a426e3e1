"""Stage actions by people: accept, reject, disqualify, open-opportunity, win, lose, advocate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qualify.adapters import repository as repo
from qualify.domain.errors import IllegalTransition, InvalidInput, NotFound, NotYourLead, QualifyError
from qualify.domain.lifecycle import Actor, Stage, check_action
from qualify.service.audit import record_audit
from qualify.service.lifecycle.events import CLOCK_SKEW
from qualify.service.lifecycle.lead_batch import LeadBatch
from qualify.service.lifecycle.lead_ops import owner_of
from qualify.service.lifecycle.stage_facts import StageFact, record_decision
from qualify.service.pipeline import react
from qualify.service.unit_of_work import UnitOfWork, utcnow


@dataclass(frozen=True, slots=True)
class StageChange:
    lead: str
    from_stage: Stage
    to_stage: Stage
    at: datetime
    timer_moves: tuple[tuple[Stage, Stage, str], ...]  # moves the policy made before the action

    def as_dict(self, action: str) -> dict[str, Any]:
        """The answer of the CLI (`--json`) and the API alike."""
        return {
            "lead": self.lead,
            "action": action,
            "from": self.from_stage.value,
            "to": self.to_stage.value,
            "at": self.at,
            "timer_moves": [{"from": f.value, "to": t.value, "reason": r} for f, t, r in self.timer_moves],
        }


def apply_stage_action(
    uow: UnitOfWork,
    lead_key: str,
    action: str,
    *,
    by: str,
    reason: str | None = None,
    note: str | None = None,
    at: datetime | None = None,
    now: datetime | None = None,
    key_id: str | None = None,
    owned_by: str | None = None,
) -> StageChange:
    """Apply a person's stage action to a lead, recording who, when and why.

    The lead is first brought up to `at` (a decay-out timer may have fired), so the
    action is checked against the stage the lead really is in at that moment. With
    `owned_by` (a sales rep acting), a lead that rep does not own raises NotYourLead.
    """
    if not by or not by.strip():
        raise InvalidInput("say who acts: --by NAME", field="by")
    now = now or utcnow()
    at = at or now
    record = repo.find_lead(uow.connection, lead_key, for_update=True)
    if record is None:
        raise NotFound(f"no lead {lead_key!r}")
    if owned_by is not None:
        assert record.id is not None
        if owner_of(uow, record.id) != owned_by:
            raise NotYourLead(f"{lead_key} is not {owned_by}'s lead: a sales rep acts only on the leads they own")
    if at > now + CLOCK_SKEW:
        raise InvalidInput(f"an action cannot be dated in the future ({at.isoformat()})", field="at")
    if at.timestamp() < record.state.stage_entered:
        raise IllegalTransition(
            f"{lead_key} entered {record.state.stage.value} at "
            f"{datetime.fromtimestamp(record.state.stage_entered, at.tzinfo).isoformat()}; "
            f"an action cannot be dated before that ({at.isoformat()})"
        )
    batch = LeadBatch(uow, uow.active_model(), now)
    batch.remember(record)
    batch.accounts.update(repo.accounts_by_id(uow.connection, [record.account_id] if record.account_id else []))
    timer_moves = batch.evaluator.run_timers(record.state, at.timestamp())
    if timer_moves:
        batch.record_moves(record, timer_moves)
    state = record.state
    checked = check_action(action, state.stage, reason, note)
    before = state.stage
    batch.record_history(record, before, checked.target, at, Actor.USER, by.strip(), reason, note)
    assert record.id is not None
    decision = StageFact(at, checked.target, by.strip()[:200], action, before, reason, note)
    record_decision(uow, record.id, decision, now)
    state.stage = checked.target
    state.stage_entered = at.timestamp()
    record.changed = True
    changed = batch.write()
    changed.judge = False  # a person decided: the probability (the stage is a feature) is not judged again
    react(uow, changed, batch)
    record_audit(
        uow,
        actor=by.strip(),
        key_id=key_id,
        action=f"stage.{action}",
        target=record.lead.key,
        at=now,
        details={"from": before.value, "to": checked.target.value, "reason": reason, "at": at.isoformat()},
    )
    return StageChange(
        record.lead.key,
        before,
        checked.target,
        at,
        tuple((m.from_stage, m.to_stage, m.reason) for m in timer_moves),
    )


def queue_stage_action(
    uow: UnitOfWork,
    lead_id: int,
    action: str,
    *,
    by: str,
    own_leads_only: bool,
    reason: str | None = None,
    note: str | None = None,
) -> str | None:
    """A person's stage action on a lead of the sales queue (the dashboard's accept, reject and
    disqualify). A sales rep (`own_leads_only`) may act only on the leads they own.

    Raises NotFound when there is no such lead (or it was erased) and NotYourLead when it is not
    theirs; returns why the lifecycle refused the action (the lead is left as it was), else None.
    """
    owner_of(uow, lead_id)  # NotFound when there is no such lead, or it was erased
    try:
        apply_stage_action(
            uow, f"#{lead_id}", action, by=by, reason=reason, note=note, owned_by=by if own_leads_only else None
        )
    except NotYourLead:
        raise
    except QualifyError as problem:
        return str(problem)
    return None
