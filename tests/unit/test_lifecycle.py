"""The lifecycle: which stage actions a person may take from which stage, and with which reasons."""

from __future__ import annotations

import pytest

from qualify.domain.errors import IllegalTransition, InvalidInput
from qualify.domain.lifecycle import Stage, check_action, check_automatic

# The funnel as sales and marketing know it, written out rather than read back from the code.
LEGAL: dict[str, tuple[set[Stage], Stage, bool]] = {
    "accept": ({Stage.MQL}, Stage.SQL, False),
    "reject": ({Stage.MQL}, Stage.NURTURE, True),
    "disqualify": (
        {Stage.LEAD, Stage.MQL, Stage.SQL, Stage.OPPORTUNITY, Stage.NURTURE},
        Stage.DISQUALIFIED,
        True,
    ),
    "open-opportunity": ({Stage.SQL}, Stage.OPPORTUNITY, False),
    "win": ({Stage.OPPORTUNITY}, Stage.CUSTOMER, False),
    "lose": ({Stage.SQL, Stage.OPPORTUNITY}, Stage.NURTURE, True),
    "advocate": ({Stage.CUSTOMER}, Stage.EVANGELIST, False),
}

CASES = [(action, stage) for action in LEGAL for stage in Stage]


def reason_for(action: str) -> str | None:
    return "no_budget" if LEGAL[action][2] else None


@pytest.mark.parametrize(("action", "stage"), [c for c in CASES if c[1] in LEGAL[c[0]][0]])
def test_legal_actions_lead_to_their_target(action: str, stage: Stage) -> None:
    checked = check_action(action, stage, reason_for(action), None)
    assert checked.name == action
    assert checked.target is LEGAL[action][1]


@pytest.mark.parametrize(("action", "stage"), [c for c in CASES if c[1] not in LEGAL[c[0]][0]])
def test_illegal_actions_name_the_stage(action: str, stage: Stage) -> None:
    with pytest.raises(IllegalTransition) as caught:
        check_action(action, stage, reason_for(action), None)
    message = str(caught.value)
    assert f"cannot {action} a lead in stage {stage.value}" in message
    for source in LEGAL[action][0]:
        assert source.value in message.split(":", 1)[1], "the message says where the action applies"


def test_terminal_stages_allow_almost_nothing() -> None:
    for action in LEGAL:
        with pytest.raises(IllegalTransition):
            check_action(action, Stage.DISQUALIFIED, "spam", None)
    assert [a for a in LEGAL if Stage.EVANGELIST in LEGAL[a][0]] == []


def test_unknown_action_is_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_action("promote", Stage.MQL, None, None)
    assert caught.value.field == "action"
    assert "unknown stage action 'promote'" in str(caught.value)
    assert "accept" in str(caught.value)


@pytest.mark.parametrize("action", [a for a, (_, _, needs) in LEGAL.items() if needs])
@pytest.mark.parametrize("reason", [None, ""])
def test_reasons_are_required_where_needed(action: str, reason: str | None) -> None:
    stage = next(iter(sorted(LEGAL[action][0])))
    with pytest.raises(InvalidInput) as caught:
        check_action(action, stage, reason, None)
    assert caught.value.field == "reason"
    assert f"{action} needs a reason code" in str(caught.value)


@pytest.mark.parametrize("action", [a for a, (_, _, needs) in LEGAL.items() if not needs])
def test_actions_that_need_no_reason_accept_none(action: str) -> None:
    stage = next(iter(sorted(LEGAL[action][0])))
    assert check_action(action, stage, None, None).target is LEGAL[action][1]


def test_unknown_reason_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_action("reject", Stage.MQL, "too_busy", None)
    assert caught.value.field == "reason"
    assert "unknown reason code 'too_busy'" in str(caught.value)
    assert "no_budget" in str(caught.value)


@pytest.mark.parametrize("note", [None, "", "   "])
def test_other_needs_a_note(note: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_action("lose", Stage.OPPORTUNITY, "other", note)
    assert caught.value.field == "note"


def test_other_with_a_note_is_accepted() -> None:
    assert check_action("reject", Stage.MQL, "other", "asked to be called next year").target is Stage.NURTURE


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (Stage.LEAD, Stage.MQL),
        (Stage.NURTURE, Stage.MQL),
        (Stage.MQL, Stage.SQL),
        (Stage.MQL, Stage.NURTURE),
        (Stage.LEAD, Stage.DISQUALIFIED),
        (Stage.MQL, Stage.DISQUALIFIED),
        (Stage.NURTURE, Stage.DISQUALIFIED),
    ],
)
def test_moves_the_model_may_make(source: Stage, target: Stage) -> None:
    check_automatic(source, target)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (Stage.LEAD, Stage.SQL),  # fast-track to SQL goes through MQL
        (Stage.SQL, Stage.NURTURE),
        (Stage.SQL, Stage.DISQUALIFIED),
        (Stage.SQL, Stage.OPPORTUNITY),
        (Stage.OPPORTUNITY, Stage.CUSTOMER),
        (Stage.NURTURE, Stage.LEAD),
        (Stage.DISQUALIFIED, Stage.MQL),
        (Stage.CUSTOMER, Stage.EVANGELIST),
    ],
)
def test_moves_only_a_person_or_nobody_may_make(source: Stage, target: Stage) -> None:
    with pytest.raises(IllegalTransition) as caught:
        check_automatic(source, target)
    assert str(caught.value) == f"the model cannot move a lead from {source.value} to {target.value}"


def test_an_action_without_reason_codes_refuses_one_and_points_to_the_note() -> None:
    from qualify.domain.errors import InvalidInput
    from qualify.domain.lifecycle import Stage, check_action

    with pytest.raises(InvalidInput, match="accept takes no reason code; say why with a note"):
        check_action("accept", Stage.MQL, "no_budget", None)
    assert check_action("accept", Stage.MQL, None, "called back, keen").target is Stage.SQL
