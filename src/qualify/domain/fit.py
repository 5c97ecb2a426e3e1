"""Fit: who the lead is, scored against each persona; the best persona wins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qualify.domain.conditions import all_match
from qualify.domain.explain import Contribution
from qualify.domain.records import ACCOUNT_FIELDS, FREE_MAIL_DOMAINS, Account, Lead, email_domain
from qualify.domain.scoring_model import DisqualifyRule, FitRule, ScoringModel

FIT_MAX = 100.0


@dataclass(frozen=True, slots=True)
class FitResult:
    score: float
    grade: str
    persona: str | None
    contributions: tuple[Contribution, ...]


def profile_values(lead: Lead, account: Account | None) -> dict[str, Any]:
    """The values fit and disqualify rules may test, by the field names of the model."""
    domain = email_domain(lead.email) if lead.email else None
    values: dict[str, Any] = {
        "email": lead.email,
        "email_domain": domain,
        "is_free_mail": domain in FREE_MAIL_DOMAINS if domain else None,
        "external_id": lead.external_id,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "title": lead.title,
        "seniority": lead.seniority,
        "department": lead.department,
        "country": lead.country,
        "source": lead.source,
        "channel": lead.channel,
        "do_not_email": lead.do_not_email,
        "do_not_call": lead.do_not_call,
    }
    for key, value in lead.attributes.items():
        values[f"attributes.{key}"] = value
    if account is not None:
        values.update(account_fields(account))
    return values


def account_fields(account: Account) -> dict[str, Any]:
    """The `account.*` values rules may test: what a lead's fit reads of its account, and all
    that an account's own fit reads."""
    values: dict[str, Any] = {f"account.{name}": getattr(account, name) for name in ("domain", *ACCOUNT_FIELDS)}
    for key, value in account.attributes.items():
        values[f"account.attributes.{key}"] = value
    return values


def _matched(rules: tuple[FitRule, ...], values: dict[str, Any]) -> list[Contribution]:
    return [
        Contribution(rule.name, rule.points, f"{rule.name} ({rule.describe()})")
        for rule in rules
        if all_match(rule.conditions, values)
    ]


def score_fit(model: ScoringModel, values: dict[str, Any]) -> FitResult:
    """Score every persona, keep the best; the contributions add up to the score.

    A persona's score is the sum of its matched rules and the shared rules, held in 0–100;
    when the bound bites, a contribution says so, so the explanation still adds up.
    """
    common = _matched(model.fit.rules, values)
    best: FitResult | None = None
    for persona in model.fit.personas:
        parts = common + _matched(persona.rules, values)
        raw = sum(c.points for c in parts)
        score = min(max(raw, 0.0), FIT_MAX)
        if score != raw:
            parts.append(Contribution("(bounds)", score - raw, f"fit is held between 0 and {FIT_MAX:g}"))
        if best is None or score > best.score:
            best = FitResult(score, model.fit.grade(score), persona.name, tuple(parts))
    assert best is not None  # the loader refuses a model without personas
    return best


def disqualifying_rule(model: ScoringModel, values: dict[str, Any]) -> DisqualifyRule | None:
    for rule in model.disqualify:
        if all_match(rule.conditions, values):
            return rule
    return None
