"""An account's stages and the moves between them, as the model and people make them.

target → engaged → mqa → opportunity → customer
mqa → engaged (sales rejects the account, with a reason code)
opportunity → engaged (the account's deal is lost: a person says why, or its people's last open
opportunity is lost)

The model moves an account on its scores (`accounts.stages` of the scoring model): to `engaged`
and to `mqa` (a marketing-qualified account) when it clears the stage's bars. Its people move it
on: one of them in `opportunity` makes the account an opportunity, one who is a customer makes it
a customer, and when the last of their open opportunities is lost, so is the account's. People act on it: sales accepts an MQA (it is worked as an opportunity) or rejects it
with a reason code; an account sent back is not MQA again before `requalify_after_days`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from qualify.domain.engagement import DAY
from qualify.domain.errors import IllegalTransition, InvalidInput
from qualify.domain.lifecycle import Actor, Stage, check_reason
from qualify.domain.scoring_model import AccountSpec


class AccountStage(StrEnum):
    TARGET = "target"
    ENGAGED = "engaged"
    MQA = "mqa"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"


@dataclass(frozen=True, slots=True)
class AccountAction:
    """Something a person does to an account: `accept`, `reject`, `lose`, `win`."""

    name: str
    sources: frozenset[AccountStage]
    target: AccountStage
    needs_reason: bool
    summary: str


ACCOUNT_ACTIONS: dict[str, AccountAction] = {
    a.name: a
    for a in (
        AccountAction(
            "accept",
            frozenset({AccountStage.MQA}),
            AccountStage.OPPORTUNITY,
            False,
            "sales accepts an MQA: the account is worked as an opportunity",
        ),
        AccountAction(
            "reject",
            frozenset({AccountStage.MQA}),
            AccountStage.ENGAGED,
            True,
            "sales rejects an MQA with a reason code: back to engaged",
        ),
        AccountAction(
            "lose",
            frozenset({AccountStage.OPPORTUNITY}),
            AccountStage.ENGAGED,
            True,
            "the account's opportunity is lost, with a reason code: back to engaged",
        ),
        AccountAction(
            "win",
            frozenset({AccountStage.OPPORTUNITY}),
            AccountStage.CUSTOMER,
            False,
            "the account's opportunity is won: customer",
        ),
    )
}
# The actions after which the account waits `requalify_after_days` before it may be MQA again.
SENT_BACK = frozenset({"reject", "lose"})

_OPEN = (AccountStage.TARGET, AccountStage.ENGAGED)
_BEFORE_OPPORTUNITY = (*_OPEN, AccountStage.MQA)


@dataclass(frozen=True, slots=True)
class AccountMove:
    to_stage: AccountStage
    actor: Actor
    reason: str


def check_account_action(name: str, current: AccountStage, reason: str | None, note: str | None) -> AccountAction:
    """The action if it may be taken on an account in `current`, or why not (field and words)."""
    action = ACCOUNT_ACTIONS.get(name)
    if action is None:
        raise InvalidInput(
            f"unknown account action {name!r}; expected one of: {', '.join(ACCOUNT_ACTIONS)}", field="action"
        )
    if current not in action.sources:
        allowed = ", ".join(sorted(s.value for s in action.sources))
        raise IllegalTransition(f"cannot {name} an account in stage {current.value}: {name} applies to {allowed}")
    check_reason(name, action.needs_reason, reason, note)
    return action


def decide_account(
    spec: AccountSpec,
    stage: AccountStage,
    *,
    fit: float,
    engagement: float,
    covered: int,
    people: Iterable[Stage] = (),
    now: float,
    requalify_at: float | None = None,
    lost: bool = False,
) -> list[AccountMove]:
    """Where the policy takes an account in `stage` with these scores, as of `now`.

    `people` are the stages of the account's people that just changed: one who became a customer
    makes the account a customer, one in opportunity makes it an opportunity; `lost` says the last
    open opportunity of its people was just lost, which sends an opportunity back to engaged.
    Otherwise the scores decide: `mqa`'s bars (not before `requalify_at`, for an account sent back), else
    `engaged`'s, for an account still a target."""
    stages = set(people)
    if stages & {Stage.CUSTOMER, Stage.EVANGELIST} and stage is not AccountStage.CUSTOMER:
        return [AccountMove(AccountStage.CUSTOMER, Actor.SYSTEM, "one of its people became a customer")]
    if Stage.OPPORTUNITY in stages and stage in _BEFORE_OPPORTUNITY:
        return [AccountMove(AccountStage.OPPORTUNITY, Actor.SYSTEM, "one of its people has an open opportunity")]
    if lost and stage is AccountStage.OPPORTUNITY:
        return [AccountMove(AccountStage.ENGAGED, Actor.SYSTEM, "its people's open opportunities were lost")]
    if stage not in _OPEN:
        return []
    cooling = requalify_at is not None and now < requalify_at
    if spec.mqa is not None and not cooling and (why := spec.mqa.why(fit, engagement, covered)):
        return [AccountMove(AccountStage.MQA, Actor.MODEL, why)]
    if (
        stage is AccountStage.TARGET
        and spec.engaged is not None
        and (why := spec.engaged.why(fit, engagement, covered))
    ):
        return [AccountMove(AccountStage.ENGAGED, Actor.MODEL, why)]
    return []


def requalify_at(spec: AccountSpec, at: float) -> float:
    """When an account sent back at `at` may be MQA again."""
    return at + spec.requalify_after_days * DAY
