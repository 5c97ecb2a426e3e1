"""The batch evaluator: every lead's fit and engagement as of any instant, as one query.

It reproduces the online evaluator (domain/evaluator.py) for events that occurred up to the
instant: awards with the per-day and total caps counted in application order (event id), each
decayed to the instant with its rule's half-life, and the bonus of each `score_bonus` event (its
`points`, read as domain/engagement.py reads them) decayed with the default half-life. Fit is
the best persona's bounded sum.
Inputs are Ibis tables shaped like the Parquet export (adapters/parquet_export.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from qualify.analytics.conditions import condition_expr
from qualify.domain.conditions import Condition
from qualify.domain.engagement import BONUS_AWARD, BONUS_EVENT, BONUS_LIMIT, BONUS_MIN, BONUS_POINTS_PATTERN
from qualify.domain.errors import QualifyError
from qualify.domain.fit import FIT_MAX
from qualify.domain.model_loader import batch_problems
from qualify.domain.records import ACCOUNT_FIELDS, FREE_MAIL_DOMAINS, LEAD_FIELDS
from qualify.domain.scoring_model import EngagementRule, FitRule, ScoringModel

DAY_SECONDS = 86_400.0
_LEAD_COLUMNS = LEAD_FIELDS
_ACCOUNT_COLUMNS = ("domain", *ACCOUNT_FIELDS)


@dataclass(frozen=True)
class Sources:
    """The tables the batch side reads: leads, accounts, events, stage history and deals of one workspace."""

    leads: ir.Table
    accounts: ir.Table
    events: ir.Table
    history: ir.Table | None = None
    deals: ir.Table | None = None  # exports older than the deals' import have none


@ibis.udf.scalar.builtin(name="jsonb_extract_path_text")  # type: ignore[untyped-decorator]
def _jsonb_text(doc: dt.JSON, key: str) -> str:  # type: ignore[empty-body]
    """PostgreSQL's text of one key of a JSONB document: numbers as written, true/false."""


def value_text(document: ir.Value, key: str) -> ir.StringValue:
    """The text of one attribute or property: from a text map (Parquet) or a JSON document (the store)."""
    if document.type().is_json():
        return _jsonb_text(document, key)
    return document[key]


def _as_text(value: ir.Value) -> ir.StringValue:
    if value.type().is_boolean():
        return value.ifelse("true", "false")
    if value.type().is_floating():
        # 200.0 reads as "200", as Python's str() of an int column would.
        return ibis.ifelse(value == value.round(), value.cast("int64").cast("string"), value.cast("string"))
    return value.cast("string")


def _profile_text(profile: ir.Table, field: str) -> ir.StringValue:
    """The text of one field of a lead's profile (lead and account columns, attribute maps)."""
    if field.startswith("account.attributes."):
        return value_text(profile.account_attributes, field.removeprefix("account.attributes."))
    if field.startswith("attributes."):
        return value_text(profile.attributes, field.removeprefix("attributes."))
    if field.startswith("account."):
        return _as_text(profile[f"account_{field.removeprefix('account.')}"])
    if field == "email_domain":
        return profile.email.re_extract("@(.*)$", 1).nullif("")
    if field == "is_free_mail":
        domain = profile.email.re_extract("@(.*)$", 1)
        return ibis.ifelse(
            profile.email.isnull(), ibis.null("string"), domain.isin(sorted(FREE_MAIL_DOMAINS)).ifelse("true", "false")
        )
    return _as_text(profile[field])


def _account_profile(accounts: ir.Table) -> ir.Table:
    """Accounts as profiles read them: `account_key` and the columns prefixed `account_`."""
    return accounts.select(
        account_key=accounts.id,
        **{f"account_{c}": accounts[c] for c in _ACCOUNT_COLUMNS},
        account_attributes=accounts.attributes,
    )


def profiles(sources: Sources) -> ir.Table:
    """Leads joined to their accounts, with account columns prefixed `account_`."""
    leads = sources.leads
    renamed = _account_profile(sources.accounts)
    joined = leads.left_join(renamed, leads.account_id == renamed.account_key)
    return joined.select(
        "id", *_LEAD_COLUMNS, "attributes", *(f"account_{c}" for c in _ACCOUNT_COLUMNS), "account_attributes"
    )


def _profile_number(profile: ir.Table, field: str) -> ir.FloatingValue | None:
    """A numeric column's value as a number, or None where the value is text."""
    if field.startswith("account.") and not field.startswith("account.attributes."):
        column = profile[f"account_{field.removeprefix('account.')}"]
    elif field in _LEAD_COLUMNS:
        column = profile[field]
    else:
        return None
    return column.cast("float64") if column.type().is_numeric() else None


def _all(profile: ir.Table, conditions: tuple[Condition, ...]) -> ir.BooleanValue:
    return ibis.and_(
        *(condition_expr(c, _profile_text(profile, c.field), _profile_number(profile, c.field)) for c in conditions)
    )


def _fit_points(model: ScoringModel, sources: Sources) -> tuple[ir.Table, list[tuple[str, int, FitRule]]]:
    """One column per fit rule (`shared_i`, `p{persona}_i`): its points where its conditions hold,
    else 0; and the (group, index, rule) of each column. Each condition is evaluated once per lead."""
    profile = profiles(sources)
    rules = [("shared", i, r) for i, r in enumerate(model.fit.rules)]
    rules += [(f"p{p}", i, r) for p, persona in enumerate(model.fit.personas) for i, r in enumerate(persona.rules)]
    points = profile.select(
        "id",
        **{f"{group}_{i}": _all(profile, r.conditions).ifelse(_float(r.points), _float(0.0)) for group, i, r in rules},
    )
    return points, rules


def _raw_scores(model: ScoringModel, points: ir.Table) -> dict[str, ir.FloatingValue]:
    """Each persona's unbounded sum of points, shared rules included."""
    shared = _sum([_zero(points.id), *(points[f"shared_{i}"] for i in range(len(model.fit.rules)))])
    return {
        f"raw_{p}": shared + _sum([points[f"p{p}_{i}"] for i in range(len(persona.rules))])
        for p, persona in enumerate(model.fit.personas)
    }


def _best_persona(model: ScoringModel, points: ir.Table) -> ir.Table:
    """points + raw_p, score_p (held in 0–100) per persona, best, and `chosen`: the index of the
    best persona, the first on a tie."""
    raw = _raw_scores(model, points)
    scored = points.mutate(**raw)
    scored = scored.mutate(
        **{f"score_{p}": scored[f"raw_{p}"].clip(lower=0.0, upper=FIT_MAX) for p in range(len(model.fit.personas))}
    )
    columns = [scored[f"score_{p}"] for p in range(len(model.fit.personas))]
    scored = scored.mutate(best=ibis.greatest(*columns) if len(columns) > 1 else columns[0])
    chosen = ibis.cases(
        *((scored[f"score_{p}"] == scored.best, p) for p in range(len(model.fit.personas))), else_=ibis.null("int64")
    )
    return scored.mutate(chosen=chosen)


def fit_scores(model: ScoringModel, sources: Sources) -> ir.Table:
    """lead_id, fit (0–100), grade (A–D) and persona: the best persona, the first on a tie.

    Built in steps (rule points, then persona scores, then the best) so that each condition is
    evaluated once per lead, not once for every place it is used.
    """
    points, _ = _fit_points(model, sources)
    scored = _best_persona(model, points)
    persona = ibis.cases(
        *((scored.chosen == p, persona.name) for p, persona in enumerate(model.fit.personas)),
        else_=ibis.null("string"),
    )
    grade = _grade(model.fit.grades, scored.best)
    return scored.select(lead_id=scored.id, fit=scored.best.cast("float64"), grade=grade, persona=persona)


def _grade(bands: dict[str, float], score: ir.FloatingValue) -> ir.StringValue:
    """A score's grade by falling bands, as `scoring_model.grade_of` gives it."""
    return ibis.cases((score >= bands["A"], "A"), (score >= bands["B"], "B"), (score >= bands["C"], "C"), else_="D")


def fit_explanations(model: ScoringModel, sources: Sources) -> ir.Table:
    """lead_id, rule, points: the fit rules that count for each lead's best persona (shared ones
    included), and a `(bounds)` row where the 0–100 bounds changed the sum, as the online
    explanation gives them: they add up to the fit score."""
    points, rules = _fit_points(model, sources)
    scored = _best_persona(model, points)
    parts = []
    for group, i, rule in rules:
        column = scored[f"{group}_{i}"]
        counts = column != 0
        if group != "shared":
            counts = counts & (scored.chosen == int(group[1:]))
        parts.append(scored.filter(counts).select(lead_id=scored.id, rule=ibis.literal(rule.name), points=column))
    raw = ibis.cases(
        *((scored.chosen == p, scored[f"raw_{p}"]) for p in range(len(model.fit.personas))), else_=_float(0.0)
    )
    bounded = scored.mutate(adjust=scored.best - raw)
    parts.append(
        bounded.filter(bounded.adjust != 0).select(
            lead_id=bounded.id, rule=ibis.literal("(bounds)"), points=bounded.adjust.cast("float64")
        )
    )
    return ibis.union(*parts)


def _float(value: float) -> ir.FloatingValue:
    return ibis.literal(float(value), type="float64")


def _zero(column: ir.IntegerValue) -> ir.FloatingValue:
    """A double precision 0 from a column: PostgreSQL reads a bare 0.0 literal as NUMERIC, and a
    sum of literals would stay NUMERIC; one double in the sum makes all of it double."""
    return column.cast("float64") * 0


def _sum(values: list[ir.Value]) -> ir.FloatingValue:
    total: ir.FloatingValue = _float(0.0)
    for value in values:
        total = total + value
    return total


def _bounded(value: ir.FloatingValue, upper: ir.FloatingValue | float) -> ir.FloatingValue:
    """max(0, min(value, upper)) for values that are never null (clip adds null handling that
    repeats its argument, window sums included, several times over)."""
    return ibis.greatest(ibis.least(value, upper), 0.0)


def _rule_awards(rule: EngagementRule, events: ir.Table, as_of: datetime | str) -> ir.Table:
    """This rule's award for each matching event up to `as_of`, after its caps, decayed to `as_of`:
    one instant, or the name of a column of `events` with each lead's own instant (a cutoff)."""
    limit = ibis.literal(as_of) if isinstance(as_of, datetime) else events[as_of]
    matches = events.filter(events.type.isin(list(rule.events)), events.occurred_at <= limit)
    for condition in rule.where:
        matches = matches.filter(condition_expr(condition, value_text(matches.properties, condition.field)))
    size = abs(rule.points)
    # Only what the caps and the decay need travels through the windows.
    carried = [] if isinstance(as_of, datetime) else [as_of]
    matches = matches.select("id", "lead_id", "occurred_at", *carried, award=_zero(matches.id) + size)
    if rule.cap_per_day is not None:
        matches = matches.mutate(day=matches.occurred_at.date())
        upto = ibis.window(group_by=[matches.lead_id, matches.day], order_by=matches.id, preceding=None, following=0)
        # Points this rule already gave this lead on this UTC day, in application order.
        matches = matches.mutate(taken=matches.award.sum().over(upto) - matches.award)
        matches = matches.mutate(award=_bounded(rule.cap_per_day - matches.taken, size))
    if rule.cap is not None:
        upto_all = ibis.window(group_by=matches.lead_id, order_by=matches.id, preceding=None, following=0)
        matches = matches.mutate(given=matches.award.sum().over(upto_all) - matches.award)
        matches = matches.mutate(award=_bounded(rule.cap - matches.given, matches.award))
    sign = 1.0 if rule.points > 0 else -1.0
    instant = ibis.literal(as_of) if isinstance(as_of, datetime) else matches[as_of]
    decay = _decay(rule.half_life_days, instant, matches.occurred_at)
    return matches.filter(matches.award > 0).select(
        lead_id=matches.lead_id,
        event_id=matches.id,
        occurred_at=matches.occurred_at,
        rule=ibis.literal(rule.name),
        points=matches.award * sign,
        now=matches.award * sign * decay,
    )


def _decay(half_life_days: float | None, instant: ir.TimestampValue, occurred: ir.TimestampValue) -> ir.FloatingValue:
    """2^-(age/h): what an award made at `occurred` is worth at `instant` (1: it never decays)."""
    if half_life_days is None:
        return _float(1.0)
    age_days = (instant.epoch_seconds() - occurred.epoch_seconds()) / DAY_SECONDS
    return _float(2.0).pow(-age_days / half_life_days)


def _bonus_points(text: ir.StringValue) -> ir.FloatingValue:
    """`bonus_points` of domain/engagement.py on the text of `points`: null where it awards nothing.

    The pattern guards the cast (PostgreSQL has no TRY_CAST), and a text holding anything but
    digits, signs and a point is refused outright: Java's `$` also matches before a final line
    break, which would let "15\n" through on Spark.
    """
    plain = text.re_search(BONUS_POINTS_PATTERN) & ~text.re_search("[^0-9.+-]")
    number = ibis.cases((plain, text.cast("float64")), else_=ibis.null("float64"))
    held = ibis.greatest(ibis.least(number, BONUS_LIMIT), -BONUS_LIMIT)
    return ibis.cases((number.abs() >= BONUS_MIN, held), else_=ibis.null("float64"))


def _bonus_awards(model: ScoringModel, events: ir.Table, as_of: datetime | str) -> ir.Table:
    """The bonus of each `score_bonus` event up to `as_of`, decayed to it with the model's default
    half-life: no caps, so no windows (`as_of` as for `_rule_awards`)."""
    limit = ibis.literal(as_of) if isinstance(as_of, datetime) else events[as_of]
    bonuses = events.filter(events.type == BONUS_EVENT, events.occurred_at <= limit)
    carried = [] if isinstance(as_of, datetime) else [as_of]
    bonuses = bonuses.select(
        "id", "lead_id", "occurred_at", *carried, award=_bonus_points(value_text(bonuses.properties, "points"))
    )
    bonuses = bonuses.filter(bonuses.award.notnull())
    instant = ibis.literal(as_of) if isinstance(as_of, datetime) else bonuses[as_of]
    decay = _decay(model.default_half_life_days, instant, bonuses.occurred_at)
    return bonuses.select(
        lead_id=bonuses.lead_id,
        event_id=bonuses.id,
        occurred_at=bonuses.occurred_at,
        rule=ibis.literal(BONUS_AWARD),
        points=bonuses.award.cast("float64"),
        now=bonuses.award.cast("float64") * decay,
    )


def engagement_awards(model: ScoringModel, sources: Sources, as_of: datetime | str) -> ir.Table:
    """One row per award: lead_id, event_id, occurred_at, rule, points (undecayed), now (decayed);
    a bonus's rule is `bonus`."""
    parts = [_rule_awards(rule, sources.events, as_of) for rule in model.engagement_rules]
    parts.append(_bonus_awards(model, sources.events, as_of))
    return ibis.union(*parts) if len(parts) > 1 else parts[0]


def engagement_at_cutoffs(model: ScoringModel, sources: Sources, cutoffs: ir.Table) -> ir.Table:
    """lead_id and engagement as of each lead's own instant (`cutoffs`: lead_id, cutoff), for the
    leads of `cutoffs` (0 without awards): what the online score was at that moment."""
    events = sources.events.join(cutoffs, sources.events.lead_id == cutoffs.lead_id).select(
        *sources.events.columns, "cutoff"
    )
    awards = engagement_awards(model, Sources(sources.leads, sources.accounts, events), "cutoff")
    return _engagement_per_lead(cutoffs.select(lead_id=cutoffs.lead_id), awards)


def _engagement_per_lead(leads: ir.Table, awards: ir.Table | None) -> ir.Table:
    """lead_id and the sum of its decayed awards, for every lead of `leads` (0 without awards)."""
    if awards is None:
        return leads.mutate(engagement=_float(0.0))
    totals = awards.group_by("lead_id").aggregate(engagement=awards.now.sum())
    joined = leads.left_join(totals, leads.lead_id == totals.lead_id)
    return joined.select(lead_id=leads.lead_id, engagement=totals.engagement.fill_null(0.0).cast("float64"))


def engagement_scores(model: ScoringModel, sources: Sources, as_of: datetime) -> ir.Table:
    """lead_id and engagement as of `as_of`, for every lead (0 without awards)."""
    leads = sources.leads.select(lead_id=sources.leads.id)
    return _engagement_per_lead(leads, engagement_awards(model, sources, as_of))


class UnsupportedModel(QualifyError):
    """A model the batch engines cannot run the way the online evaluator does."""


def require_portable(model: ScoringModel) -> None:
    problems = batch_problems(model)
    if problems:
        raise UnsupportedModel(f"model {model.version} cannot run on the batch engines:\n  " + "\n  ".join(problems))


def scores_as_of(model: ScoringModel, sources: Sources, as_of: datetime) -> ir.Table:
    """Every lead's fit, grade, persona and engagement as of `as_of`: the batch evaluator."""
    require_portable(model)
    fit = fit_scores(model, sources)
    engagement = engagement_scores(model, sources, as_of)
    joined = fit.join(engagement, fit.lead_id == engagement.lead_id)
    return joined.select(fit.lead_id, fit.fit, fit.grade, fit.persona, engagement.engagement)


def explanations(model: ScoringModel, sources: Sources, as_of: datetime) -> ir.Table:
    """Every lead's score explained as of `as_of`, one row per contribution: lead_id, kind (`fit`
    or `engagement`), rule (`bonus` for a score_bonus event's), points (engagement awards decayed
    to `as_of`), and for engagement the event_id (as sent) and occurred_at of the event that earned
    it. Per lead and kind the points add up to the score, as the online explanation's contributions do."""
    require_portable(model)
    fit = fit_explanations(model, sources)
    parts = [
        fit.select(
            "lead_id",
            kind=ibis.literal("fit"),
            rule=fit.rule,
            points=fit.points,
            event_id=ibis.null("string"),
            occurred_at=ibis.null("timestamp('UTC')"),
        )
    ]
    awards = engagement_awards(model, sources, as_of)
    # The public event_id (the sender's), not the store's row id the awards carry.
    public = sources.events.select(row_id=sources.events.id, public_id=sources.events.event_id)
    named = awards.join(public, awards.event_id == public.row_id)
    parts.append(
        named.select(
            "lead_id",
            kind=ibis.literal("engagement"),
            rule=named.rule,
            points=named.now,
            event_id=named.public_id.cast("string"),
            occurred_at=named.occurred_at.cast("timestamp('UTC')"),
        )
    )
    return ibis.union(*parts)


def account_scores_as_of(model: ScoringModel, sources: Sources, as_of: datetime) -> ir.Table:
    """Every account's scores as of `as_of`, as the ingestion pipeline keeps them
    (`domain.accounts`): account_id, fit and grade on its own fields, engagement (its live people's
    shares: each one's engagement at `as_of`, scaled by the cap over their engagement right after
    their latest activity where that was above it), covered (how many roles are covered) and one
    boolean `role_<i>` per role of the buying group, in the model's order (someone who fills it was
    active within `within_days` and had at least `min_engagement` right after that activity)."""
    return account_scores_at_cutoffs(model, sources, [as_of]).drop("cutoff")


def _cutoff_table(cutoffs: Sequence[datetime]) -> ir.Table:
    import pandas as pd

    instants = pd.to_datetime(list(cutoffs), utc=True).astype("datetime64[us, UTC]")
    return ibis.memtable(pd.DataFrame({"cutoff_number": range(len(instants)), "cutoff": instants}))


def people_at_cutoffs(
    model: ScoringModel, sources: Sources, cutoffs: Sequence[datetime], *, recent_days: float = 30.0
) -> ir.Table:
    """Each live person of an account at each of `cutoffs`, as one query: lead_id, account_id,
    cutoff, engagement (at the cutoff), last_at (their latest event up to it, null if none), after
    (their engagement right after that event), recent (their events in the `recent_days` before
    the cutoff) and `fills_<i>` for each role of the model's buying group. Each (person, cutoff)
    pair is scored as a lead of its own, on its events up to its cutoff."""
    require_portable(model)
    spec = model.accounts
    if spec is None:
        raise UnsupportedModel(f"model {model.version} scores no accounts (it has no accounts section)")
    leads = sources.leads
    live = leads.filter(leads.account_id.notnull())
    if "erased_at" in leads.columns:
        live = live.filter(live.erased_at.isnull())
    cut = _cutoff_table(cutoffs)
    count = max(len(cutoffs), 1)
    pairs = live.select(person=live.id, account_id=live.account_id).cross_join(cut)
    pairs = pairs.mutate(pair=pairs.person * count + pairs.cutoff_number)
    events = sources.events
    seen = events.join(pairs, events.lead_id == pairs.person).filter(events.occurred_at <= pairs.cutoff)
    paired = seen.select(*(seen[c] if c != "lead_id" else seen.pair.name("lead_id") for c in events.columns))
    own = Sources(sources.leads, sources.accounts, paired)
    now = engagement_at_cutoffs(model, own, pairs.select(lead_id=pairs.pair, cutoff=pairs.cutoff))
    recent = (seen.occurred_at.epoch_seconds() > seen.cutoff.epoch_seconds() - recent_days * DAY_SECONDS).ifelse(1, 0)
    last = seen.group_by(last_id=seen.pair).aggregate(last_at=seen.occurred_at.max(), recent=recent.sum())
    after = engagement_at_cutoffs(model, own, last.select(lead_id=last.last_id, cutoff=last.last_at))
    profile = profiles(sources)
    roles = profile.select(
        role_key=profile.id, **{f"fills_{i}": _all(profile, r.conditions) for i, r in enumerate(spec.roles)}
    )
    now = now.select(now_id="lead_id", engagement="engagement")
    after = after.select(after_id="lead_id", after="engagement")
    joined = (
        pairs.join(now, pairs.pair == now.now_id)
        .left_join(last, pairs.pair == last.last_id)
        .left_join(after, pairs.pair == after.after_id)
        .join(roles, pairs.person == roles.role_key)
    )
    return joined.select(
        lead_id=joined.person,
        account_id=joined.account_id,
        cutoff=joined.cutoff,
        engagement=joined.engagement,
        last_at=joined.last_at,
        after=joined.after.fill_null(0.0),
        recent=joined.recent.fill_null(0),
        **{f"fills_{i}": joined[f"fills_{i}"] for i in range(len(spec.roles))},
    )


def account_scores_at_cutoffs(
    model: ScoringModel, sources: Sources, cutoffs: Sequence[datetime], *, people: ir.Table | None = None
) -> ir.Table:
    """`account_scores_as_of` at each of `cutoffs` as one query, with a `cutoff` column: every
    account at every cutoff (its people's shares and roles from `people_at_cutoffs`, or `people`:
    its result at the same cutoffs, where the caller has it already)."""
    people = people if people is not None else people_at_cutoffs(model, sources, cutoffs)
    spec = model.accounts
    assert spec is not None  # people_at_cutoffs refuses a model without accounts
    factor: ir.FloatingValue = _float(1.0)
    if spec.person_cap is not None:
        capped = people.last_at.notnull() & (people.after > spec.person_cap)
        factor = ibis.ifelse(capped, _float(spec.person_cap) / people.after, _float(1.0))
    covers = (
        people.last_at.notnull()
        & (people.after >= spec.min_engagement)
        & (people.last_at.epoch_seconds() + spec.within_days * DAY_SECONDS >= people.cutoff.epoch_seconds())
    )
    shares = people.select(
        account_id=people.account_id,
        at=people.cutoff,
        share=people.engagement * factor,
        **{f"covers_{i}": (people[f"fills_{i}"] & covers).ifelse(1, 0) for i in range(len(spec.roles))},
    )
    rolled = shares.group_by("account_id", "at").aggregate(
        engagement=shares.share.sum(), **{f"role_{i}": shares[f"covers_{i}"].max() for i in range(len(spec.roles))}
    )
    own = _account_profile(sources.accounts)
    raw = _sum(
        [_zero(own.account_key), *(_all(own, r.conditions).ifelse(_float(r.points), _float(0.0)) for r in spec.rules)]
    )
    fitted = own.select(own.account_key, fit=raw.clip(lower=0.0, upper=FIT_MAX).cast("float64"))
    fitted = fitted.cross_join(_cutoff_table(cutoffs).select("cutoff"))
    scored = fitted.left_join(rolled, (fitted.account_key == rolled.account_id) & (fitted.cutoff == rolled.at))
    role_columns = {f"role_{i}": scored[f"role_{i}"].fill_null(0) == 1 for i in range(len(spec.roles))}
    covered = _sum([_zero(scored.account_key), *(c.ifelse(_float(1.0), _float(0.0)) for c in role_columns.values())])
    return scored.select(
        account_id=scored.account_key,
        cutoff=scored.cutoff,
        fit=scored.fit,
        grade=_grade(spec.grades, scored.fit),
        engagement=scored.engagement.fill_null(0.0).cast("float64"),
        covered=covered.cast("int64"),
        **role_columns,
    )
