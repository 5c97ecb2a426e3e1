"""Fit: who the lead is, scored against every persona; the best one wins and the parts add up."""

from __future__ import annotations

import pytest

from qualify.domain.fit import disqualifying_rule, profile_values, score_fit
from qualify.domain.model_loader import load_default_model, load_model
from qualify.domain.records import Account, Lead
from qualify.domain.scoring_model import ScoringModel

DEFAULT = load_default_model()

GENEROUS = """\
name: generous
fit:
  grades: {A: 80, B: 50, C: 20}
  rules:
    - name: any title
      when: {field: title, exists: true}
      points: 40
    - name: spammy source
      when: {field: source, equals: list purchase}
      points: -90
  personas:
    - name: everyone
      rules:
        - name: big company
          when: {field: account.employees, range: {min: 1000}}
          points: 80
    - name: nobody
      rules:
        - name: never
          when: {field: country, equals: XX}
          points: 5
engagement:
  rules:
    - {name: demo, event: demo_request, points: 30}
policy:
  mql:
    thresholds: {A: 25}
"""


def values(lead: Lead, account: Account | None = None) -> dict[str, object]:
    return profile_values(lead, account)


def assert_adds_up(model: ScoringModel, profile: dict[str, object]) -> None:
    result = score_fit(model, profile)
    assert sum(c.points for c in result.contributions) == result.score


def test_best_persona_wins_and_is_named() -> None:
    lead = Lead(email="ana@acme.com", seniority="vp", department="engineering")
    account = Account(domain="acme.com", employees=500, industry="Software", country="US")
    result = score_fit(DEFAULT, values(lead, account))
    # economic buyer: 35 + 25 = 60; technical evaluator: 25 + 20 + 20 = 65; both get the shared 25.
    assert result.persona == "technical evaluator"
    assert result.score == 90.0
    assert result.grade == "A"
    assert [c.rule for c in result.contributions] == [
        "target industry",
        "served market",
        "technical department",
        "manager or above",
        "company of 50 or more",
    ]


def test_economic_buyer_wins_for_an_executive_outside_engineering() -> None:
    lead = Lead(email="ceo@acme.com", seniority="C_Level", department="finance")
    account = Account(domain="acme.com", employees="1,200")  # type: ignore[arg-type]  # as CRMs send it
    result = score_fit(DEFAULT, values(lead, account))
    assert result.persona == "economic buyer"
    assert result.score == 60.0  # 35 executive + 25 company of 200 to 10,000
    assert result.grade == "B"


def test_shared_rules_apply_to_every_persona() -> None:
    lead = Lead(email="jo@acme.com", attributes={"budget": "25,000"})
    account = Account(domain="acme.com", industry="retail", country="GB")
    result = score_fit(DEFAULT, values(lead, account))
    # No persona rule matches: the shared rules alone decide, whichever persona is named.
    assert result.score == 35.0
    assert {c.rule for c in result.contributions} == {"target industry", "served market", "budget confirmed"}
    assert result.persona == "economic buyer"  # ties go to the first persona


def test_contribution_text_says_which_condition_matched() -> None:
    lead = Lead(email="ana@acme.com", seniority="director")
    result = score_fit(DEFAULT, values(lead))
    assert [(c.rule, c.points, c.text) for c in result.contributions] == [
        ("director seniority", 25.0, "director seniority (seniority = director)")
    ]


def test_fit_is_held_at_zero_with_a_bounds_contribution() -> None:
    result = score_fit(DEFAULT, values(Lead(email="kid@gmail.com")))
    assert result.score == 0.0
    assert result.grade == "D"
    assert [(c.rule, c.points) for c in result.contributions] == [("personal email address", -15.0), ("(bounds)", 15.0)]
    assert "between 0 and 100" in result.contributions[-1].text


def test_fit_is_held_at_one_hundred_with_a_bounds_contribution() -> None:
    model = load_model(GENEROUS)
    lead = Lead(email="ana@bigco.com", title="Head of Ops")
    result = score_fit(model, values(lead, Account(domain="bigco.com", employees=5000)))
    assert result.score == 100.0
    assert result.persona == "everyone"
    assert result.grade == "A"
    assert [(c.rule, c.points) for c in result.contributions] == [
        ("any title", 40.0),
        ("big company", 80.0),
        ("(bounds)", -20.0),
    ]


@pytest.mark.parametrize(
    ("lead", "account"),
    [
        (Lead(email="ana@bigco.com", title="Ops"), Account(domain="bigco.com", employees=5000)),
        (Lead(email="ana@bigco.com", title="Ops", source="List Purchase"), None),
        (Lead(email="ana@bigco.com", source="list purchase"), Account(domain="bigco.com", employees=5000)),
        (Lead(external_id="x"), None),
    ],
)
def test_contributions_add_up_to_the_score_exactly(lead: Lead, account: Account | None) -> None:
    assert_adds_up(load_model(GENEROUS), values(lead, account))
    assert_adds_up(DEFAULT, values(lead, account))


def test_no_bounds_contribution_when_the_bound_does_not_bite() -> None:
    result = score_fit(DEFAULT, values(Lead(email="ana@acme.com", seniority="vp")))
    assert result.score == 35.0
    assert all(c.rule != "(bounds)" for c in result.contributions)


@pytest.mark.parametrize(
    ("score", "grade"),
    [(100.0, "A"), (70.0, "A"), (69.99, "B"), (45.0, "B"), (44.9, "C"), (25.0, "C"), (24.99, "D"), (0.0, "D")],
)
def test_grade_bands(score: float, grade: str) -> None:
    assert DEFAULT.fit.grade(score) == grade


def test_profile_values_expose_lead_account_and_attributes() -> None:
    lead = Lead(email="Ana@Acme.com", title="CTO", attributes={"budget": 5000})
    account = Account(domain="acme.com", industry="software", employees=300, attributes={"tier": "gold"})
    profile = values(lead, account)
    assert profile["email_domain"] == "acme.com"
    assert profile["is_free_mail"] is False
    assert profile["title"] == "CTO"
    assert profile["attributes.budget"] == 5000
    assert profile["account.industry"] == "software"
    assert profile["account.employees"] == 300
    assert profile["account.attributes.tier"] == "gold"


def test_profile_values_without_account_or_email() -> None:
    profile = values(Lead(external_id="crm-1"))
    assert profile["email_domain"] is None
    assert profile["is_free_mail"] is None
    assert "account.industry" not in profile
    assert values(Lead(email="a@gmail.com"))["is_free_mail"] is True


@pytest.mark.parametrize(
    ("lead", "rule"),
    [
        (Lead(email="ana@uni.edu", title="PhD Student"), "student"),
        (Lead(email="ana@acme.com", title="Marketing Intern"), "student"),
        (Lead(email="spy@RivalScore.io"), "competitor"),
        (Lead(email="ana@acme.com", country="kp"), "country not served"),
        (Lead(email="ana@acme.com", title="Studentship coordinator"), None),  # \b: a word, not a prefix
        (Lead(email="ana@acme.com", title="VP Sales", country="US"), None),
    ],
)
def test_disqualifying_rule(lead: Lead, rule: str | None) -> None:
    found = disqualifying_rule(DEFAULT, values(lead))
    assert (found.name if found else None) == rule
