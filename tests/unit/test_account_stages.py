"""Accounts' stages and the roll-up the ingestion pipeline keeps: the model's `accounts.stages`
loads (every problem says where), the policy moves accounts on their scores and their people, a
person's action is checked, and the roll-up kept person by person in O(1) equals the account
counted from all its people and the account scored on demand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.test_account_scoring import ACCOUNTS, NOW
from tests.unit.test_model_loader import TINY, line_of, only_problem, replace_once

from qualify.domain.account_stages import AccountStage, check_account_action, decide_account, requalify_at
from qualify.domain.accounts import Mark, Person, Rollup, score_account
from qualify.domain.conditions import all_match
from qualify.domain.engagement import DAY, EngagementState
from qualify.domain.errors import IllegalTransition, InvalidInput
from qualify.domain.lifecycle import Actor, Stage
from qualify.domain.model_loader import load_default_model, load_model
from qualify.domain.scoring_model import AccountBar, AccountSpec

STAGES = """\
  stages:
    engaged: {engagement: 10}
    mqa: {fit: 40, engagement: 50, roles: 2}
    requalify_after_days: 14
"""
MODEL = TINY + ACCOUNTS + STAGES


def spec_of(text: str = MODEL) -> AccountSpec:
    spec = load_model(text).accounts
    assert spec is not None
    return spec


def test_the_stages_load_and_are_optional() -> None:
    spec = spec_of()
    assert spec.engaged == AccountBar(engagement=10) and spec.mqa == AccountBar(40, 50, 2)
    assert spec.requalify_after_days == 14
    bare = spec_of(TINY + ACCOUNTS)
    assert bare.engaged is None and bare.mqa is None and bare.requalify_after_days == 30
    default = load_default_model().accounts
    assert default is not None and default.mqa == AccountBar(45, 60, 2) and default.engaged == AccountBar(None, 10)


@pytest.mark.parametrize(
    ("old", "new", "path", "says"),
    [
        ("roles: 2}", "roles: 4}", "accounts.stages.mqa.roles", "the buying group defines 3"),
        ("roles: 2}", "roles: 1.5}", "accounts.stages.mqa.roles", "whole number of roles"),
        ("roles: 2}", "roles: 0}", "accounts.stages.mqa.roles", "whole number of roles"),
        ("engaged: {engagement: 10}", "engaged: {engagement: lots}", "accounts.stages.engaged.engagement",
         "must be a number"),
        ("engaged: {engagement: 10}", "engaged: {}", "accounts.stages.engaged", "at least one of"),
        ("engaged: {engagement: 10}", "engaged: {points: 10}", "accounts.stages.engaged.points", "unknown key"),
        ("requalify_after_days: 14", "requalify_after_days: -1", "accounts.stages.requalify_after_days", "must be ≥"),
        ("  stages:", "  stage:", "accounts.stage", "unknown key"),
    ],
)  # fmt: skip
def test_every_problem_of_the_stages_says_where(old: str, new: str, path: str, says: str) -> None:
    text = replace_once(MODEL, old, new)
    problem = only_problem(text)
    assert problem.path == path and says in problem.message, str(problem)
    assert problem.line == line_of(text, new.split(":")[0].strip() if new.startswith("  ") else new)


def test_a_bar_says_why_it_is_cleared_or_nothing() -> None:
    bar = AccountBar(fit=40, engagement=50, roles=2)
    assert bar.why(45, 50, 2) == "fit 45.0 ≥ 40 and engagement 50.0 ≥ 50 and roles covered 2 ≥ 2"
    assert bar.why(45, 49.9, 3) is None and bar.why(39, 80, 3) is None and bar.why(45, 80, 1) is None
    assert AccountBar(roles=1).why(0, 0, 1) == "roles covered 1 ≥ 1"


def test_the_policy_moves_accounts_on_their_scores() -> None:
    spec = spec_of()
    at = NOW

    def moves(stage: AccountStage, fit: float, engagement: float, covered: int, **kw: object) -> list[str]:
        found = decide_account(spec, stage, fit=fit, engagement=engagement, covered=covered, now=at, **kw)  # type: ignore[arg-type]
        return [m.to_stage.value for m in found]

    assert moves(AccountStage.TARGET, 0, 5, 0) == []
    assert moves(AccountStage.TARGET, 0, 12, 0) == ["engaged"]
    assert moves(AccountStage.TARGET, 50, 60, 2) == ["mqa"]  # straight to MQA: one move, not two
    assert moves(AccountStage.ENGAGED, 50, 60, 2) == ["mqa"]
    assert moves(AccountStage.ENGAGED, 50, 60, 1) == []  # one role is not a buying group
    assert moves(AccountStage.MQA, 50, 90, 4) == [] and moves(AccountStage.OPPORTUNITY, 50, 90, 4) == []
    # Sent back: not MQA again before requalify_at, then it is.
    back = requalify_at(spec, at - 13 * DAY)
    assert moves(AccountStage.ENGAGED, 50, 60, 2, requalify_at=back) == []
    assert moves(AccountStage.ENGAGED, 50, 60, 2, requalify_at=requalify_at(spec, at - 14 * DAY)) == ["mqa"]
    # Its people move it on, whatever its scores.
    assert moves(AccountStage.TARGET, 0, 0, 0, people=[Stage.OPPORTUNITY]) == ["opportunity"]
    assert moves(AccountStage.MQA, 0, 0, 0, people=[Stage.SQL, Stage.CUSTOMER]) == ["customer"]
    assert moves(AccountStage.OPPORTUNITY, 0, 0, 0, people=[Stage.OPPORTUNITY]) == []
    assert moves(AccountStage.CUSTOMER, 0, 0, 0, people=[Stage.EVANGELIST]) == []
    # Its people's last open opportunity lost: so is the account's (an account in another stage stays).
    assert moves(AccountStage.OPPORTUNITY, 90, 90, 4, lost=True) == ["engaged"]
    assert moves(AccountStage.MQA, 90, 90, 4, lost=True) == []
    [move] = decide_account(spec, AccountStage.ENGAGED, fit=50, engagement=60, covered=2, now=at)
    assert move.actor is Actor.MODEL and move.reason.startswith("fit 50.0 ≥ 40")
    # A model without stages moves accounts only on their people.
    assert (
        decide_account(spec_of(TINY + ACCOUNTS), AccountStage.TARGET, fit=100, engagement=900, covered=3, now=at) == []
    )


def test_a_persons_action_is_checked() -> None:
    assert check_account_action("accept", AccountStage.MQA, None, None).target is AccountStage.OPPORTUNITY
    assert check_account_action("reject", AccountStage.MQA, "no_budget", None).target is AccountStage.ENGAGED
    assert check_account_action("win", AccountStage.OPPORTUNITY, None, "signed").target is AccountStage.CUSTOMER
    with pytest.raises(IllegalTransition, match="cannot accept an account in stage engaged: accept applies to mqa"):
        check_account_action("accept", AccountStage.ENGAGED, None, None)
    with pytest.raises(InvalidInput, match="reject needs a reason code") as missing:
        check_account_action("reject", AccountStage.MQA, None, None)
    assert missing.value.field == "reason"
    with pytest.raises(InvalidInput, match="unknown reason code 'meh'"):
        check_account_action("lose", AccountStage.OPPORTUNITY, "meh", None)
    with pytest.raises(InvalidInput, match="'other' needs a note") as other:
        check_account_action("reject", AccountStage.MQA, "other", " ")
    assert other.value.field == "note"
    with pytest.raises(InvalidInput, match="unknown account action 'promote'"):
        check_account_action("promote", AccountStage.MQA, None, None)


# --- the roll-up -------------------------------------------------------------------------------

ROLE_VALUES = [
    {"seniority": "vp", "department": "finance"},  # economic buyer
    {"seniority": "manager", "department": "marketing"},  # champion
    {"seniority": "individual", "department": "it"},  # IT
    {"seniority": "individual", "department": "sales"},  # none
]
# (person, points, half-life in days or None, days before NOW): an event of one of six people
changes = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.floats(-5, 80, allow_nan=False).map(lambda x: round(x, 2)),
        st.sampled_from([None, 7.0, 30.0]),
        st.floats(0, 120, allow_nan=False).map(lambda x: round(x, 3)),
    ),
    min_size=1,
    max_size=25,
)


def roles_of(spec: AccountSpec, values: dict[str, object]) -> tuple[str, ...]:
    return tuple(r.name for r in spec.roles if all_match(r.conditions, values))


@settings(max_examples=150, deadline=None)
@given(changes, st.lists(st.integers(0, 3), min_size=6, max_size=6), st.sets(st.integers(0, 5), max_size=2))
def test_the_rollup_kept_person_by_person_is_the_account_counted_and_scored_on_demand(
    events: list[tuple[int, float, float | None, float]], kinds: list[int], leaving: set[int]
) -> None:
    """People's events arrive in time order; after each, the person's old mark is swapped for the
    new one (the account counted again only where `swap` says so). At the end some people leave.
    The roll-up then reads as the account counted from all its people's marks, and as
    `score_account` on the same people, at instants after the last change."""
    spec = spec_of()
    states = {n: EngagementState() for n in range(6)}
    last: dict[int, float | None] = dict.fromkeys(range(6))
    values = {n: ROLE_VALUES[kinds[n]] for n in range(6)}

    def mark(n: int) -> Mark:
        return Mark.of(spec, n, states[n], last[n], roles_of(spec, values[n]))

    rollup = Rollup.of([mark(n) for n in range(6)])
    recounts = 0
    for n, points, half_life, days in sorted(events, key=lambda e: -e[3]):
        before = mark(n)
        at = NOW - days * DAY
        states[n].add(points, half_life, at)
        last[n] = at
        if not rollup.swap(before, mark(n)):
            recounts += 1
            rollup = Rollup.of([mark(m) for m in range(6)])
    left: set[int] = set()
    for n in sorted(leaving):
        left.add(n)
        if not rollup.swap(mark(n), None):
            rollup = Rollup.of([mark(m) for m in range(6) if m not in left])
    staying = [m for m in range(6) if m not in leaving]
    counted = Rollup.of([mark(m) for m in staying])
    people = [Person(m, f"p{m}", values[m], states[m], last[m]) for m in staying]
    for later in (0.0, 3.0, 45.0):
        at = NOW + later * DAY
        scored = score_account(spec, {}, people, at)
        assert math.isclose(rollup.engagement_at(at), counted.engagement_at(at), rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(rollup.engagement_at(at), scored.engagement, rel_tol=1e-9, abs_tol=1e-6)
        assert rollup.covered_at(spec, at) == counted.covered_at(spec, at) == scored.covered


def test_a_holder_who_falls_back_asks_for_a_recount() -> None:
    """The holder of a role is the one person the roll-up remembers for it: when they stop
    covering it, someone else may still, so the account must be counted again."""
    spec = spec_of()
    vp = {"seniority": "vp"}
    a, b = EngagementState({"none": [20.0, NOW - DAY]}), EngagementState({"none": [20.0, NOW - 2 * DAY]})
    marks = [Mark.of(spec, 1, a, NOW - DAY, roles_of(spec, vp)), Mark.of(spec, 2, b, NOW - 2 * DAY, roles_of(spec, vp))]
    rollup = Rollup.of(marks)
    assert rollup.holders["economic buyer"][1] == 1
    assert not rollup.swap(marks[0], None)  # the holder left
    assert Rollup.of(marks[1:]).covered_at(spec, NOW) == ("economic buyer",)
    again = Rollup.of(marks)
    assert again.swap(marks[1], None)  # someone who was not the holder leaves: nothing to count again
    assert again.covered_at(spec, NOW) == ("economic buyer",)
    assert Rollup.from_json(again.to_json()) == again
