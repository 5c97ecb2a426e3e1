"""The funnel's stages and the legal moves between them.

lead → mql → sql → opportunity → customer → evangelist
mql / sql / opportunity → nurture (rejected, lost, decayed out) → mql again
lead / mql / sql / opportunity / nurture → disqualified
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from qualify.domain.errors import IllegalTransition, InvalidInput


class Stage(StrEnum):
    LEAD = "lead"
    MQL = "mql"
    SQL = "sql"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    EVANGELIST = "evangelist"
    NURTURE = "nurture"
    DISQUALIFIED = "disqualified"


FUNNEL = (Stage.LEAD, Stage.MQL, Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER, Stage.EVANGELIST)


class Actor(StrEnum):
    MODEL = "model"  # the scoring model's policy
    USER = "user"  # a person: sales, marketing
    SYSTEM = "system"  # timers and sweeps (decay-out)


@dataclass(frozen=True, slots=True)
class StageAction:
    """Something a person does to a lead: `accept`, `reject`, ..."""

    name: str
    sources: frozenset[Stage]
    target: Stage
    needs_reason: bool
    summary: str


STAGE_ACTIONS: dict[str, StageAction] = {
    a.name: a
    for a in (
        StageAction(
            "accept",
            frozenset({Stage.MQL}),
            Stage.SQL,
            False,
            "sales accepts an MQL: it becomes SQL",
        ),
        StageAction(
            "reject",
            frozenset({Stage.MQL}),
            Stage.NURTURE,
            True,
            "sales rejects an MQL with a reason code: back to nurture",
        ),
        StageAction(
            "disqualify",
            frozenset({Stage.LEAD, Stage.MQL, Stage.SQL, Stage.OPPORTUNITY, Stage.NURTURE}),
            Stage.DISQUALIFIED,
            True,
            "not a prospect at all (student, competitor, spam): out of the funnel",
        ),
        StageAction(
            "open-opportunity",
            frozenset({Stage.SQL}),
            Stage.OPPORTUNITY,
            False,
            "an SQL turns into a deal in the pipeline",
        ),
        StageAction(
            "win",
            frozenset({Stage.OPPORTUNITY}),
            Stage.CUSTOMER,
            False,
            "the deal is won: customer",
        ),
        StageAction(
            "lose",
            frozenset({Stage.SQL, Stage.OPPORTUNITY}),
            Stage.NURTURE,
            True,
            "the deal is lost: back to nurture",
        ),
        StageAction(
            "advocate",
            frozenset({Stage.CUSTOMER}),
            Stage.EVANGELIST,
            False,
            "a customer who promotes us: evangelist",
        ),
    )
}

# Moves the model and the system may make on their own.
AUTOMATIC_MOVES: frozenset[tuple[Stage, Stage]] = frozenset(
    {
        (Stage.LEAD, Stage.MQL),
        (Stage.NURTURE, Stage.MQL),
        (Stage.MQL, Stage.SQL),  # fast-track to SQL-ready
        (Stage.MQL, Stage.NURTURE),  # decay-out
        (Stage.LEAD, Stage.DISQUALIFIED),
        (Stage.MQL, Stage.DISQUALIFIED),
        (Stage.NURTURE, Stage.DISQUALIFIED),
    }
)

# Reason codes for reject, lose and disqualify; "other" wants a note.
REASON_CODES = (
    "no_budget",
    "no_authority",
    "no_need",
    "bad_timing",
    "not_reachable",
    "wrong_contact",
    "duplicate",
    "competitor",
    "student",
    "spam",
    "lost_to_competitor",
    "price",
    "not_ready",
    "other",
)
# Each reason code in words, for people reading pages and reports.
REASON_WORDS = {
    "no_budget": "no budget",
    "no_authority": "no authority to buy",
    "no_need": "no need",
    "bad_timing": "bad timing",
    "not_reachable": "could not be reached",
    "wrong_contact": "wrong contact",
    "duplicate": "a duplicate",
    "competitor": "a competitor",
    "student": "a student",
    "spam": "spam",
    "lost_to_competitor": "lost to a competitor",
    "price": "price",
    "not_ready": "not ready",
    "other": "other (see the note)",
}
assert set(REASON_WORDS) == set(REASON_CODES)


@dataclass(frozen=True, slots=True)
class Transition:
    """A recorded stage change, with the scores at that moment."""

    from_stage: Stage | None
    to_stage: Stage
    at: datetime
    actor: Actor
    by: str
    reason: str | None = None
    note: str | None = None
    scores: dict[str, Any] | None = None


def check_action(action_name: str, current: Stage, reason: str | None, note: str | None) -> StageAction:
    """Return the action if it may be applied to a lead in `current`, or raise why not."""
    action = STAGE_ACTIONS.get(action_name)
    if action is None:
        raise InvalidInput(
            f"unknown stage action {action_name!r}; expected one of: {', '.join(STAGE_ACTIONS)}",
            field="action",
        )
    if current not in action.sources:
        allowed = ", ".join(sorted(s.value for s in action.sources))
        raise IllegalTransition(
            f"cannot {action_name} a lead in stage {current.value}: {action_name} applies to {allowed}"
        )
    check_reason(action_name, action.needs_reason, reason, note)
    return action


def check_reason(action_name: str, needs_reason: bool, reason: str | None, note: str | None) -> None:
    """Refuse a reason code an action takes none of, or a missing, unknown or unexplained one
    ("other" wants a note) where it needs one."""
    if reason and not needs_reason:
        raise InvalidInput(f"{action_name} takes no reason code; say why with a note instead", field="reason")
    if needs_reason:
        if not reason:
            raise InvalidInput(
                f"{action_name} needs a reason code: one of {', '.join(REASON_CODES)}",
                field="reason",
            )
        if reason not in REASON_CODES:
            raise InvalidInput(
                f"unknown reason code {reason!r}; expected one of: {', '.join(REASON_CODES)}",
                field="reason",
            )
        if reason == "other" and not (note and note.strip()):
            raise InvalidInput("reason 'other' needs a note saying why", field="note")


def check_automatic(current: Stage, target: Stage) -> None:
    if (current, target) not in AUTOMATIC_MOVES:
        raise IllegalTransition(f"the model cannot move a lead from {current.value} to {target.value}")
