"""Point-in-time training sets: one row per lead, built only from what was known at its cutoff.

A lead's **cutoff** is the instant a prediction would have been made: `created+K` (K days after
the lead was created) or `mql` (when it first became MQL). Its **label** is whether it reached
the target stage (sql, opportunity, customer) within N days after the cutoff. Leaves out, and
counts, the leads that cannot be judged: those whose cutoff lies in the future or whose N days
are not over by the end of the data and that have not reached the target yet (censored: a lead
that did reach it within its N days, by the end of the data, is a positive whatever the end), and
those that had reached the target already.

Features (all at the cutoff): the lead's and its account's fields; its stage and the days it had
been in it; per event kind (a workflow's `score_bonus` is none: it is not the lead's behaviour), how many
events and how many in the last 7 days, and days since the last one; whether it engaged with
each of the most common content items; its engagement score at that instant and its fit score
and grade under the scoring model (the rule scores); days from creation to the cutoff. Built with
Ibis over the batch side's tables, so it runs on DuckDB, PostgreSQL or Spark.

Profiles are read as they are now (the store keeps no history of them): `leakage` in
training.py names fields that look filled in after the outcome.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from qualify.analytics.batch_evaluator import DAY_SECONDS, Sources, engagement_at_cutoffs, fit_scores, value_text
from qualify.analytics.reports import TARGETS, content_item, days_between, first_entries
from qualify.domain.content import CONTENT_KEYS
from qualify.domain.engagement import BONUS_EVENT
from qualify.domain.errors import InvalidInput
from qualify.domain.scoring_model import ScoringModel
from qualify.domain.values import as_text
from qualify.predictive.models import FeatureSpec
from qualify.predictive.recipe import (
    ACCOUNT_CATEGORIES,
    ACCOUNT_COLUMNS,
    ACCOUNT_NUMBERS,
    DIGITS,
    HALF_LIFE_DAYS,
    LEAD_CATEGORIES,
    LEAD_FLAGS,
    NUMBER_PATTERN,
    OPPORTUNITY,
    QUALIFIED,
    Recipe,
)

CONTENT_ITEMS = 15
ATTRIBUTES = 60  # lead attributes as features, the most common first
ATTRIBUTE_MIN_LEADS = 20  # an attribute on fewer leads is no feature
PROPERTY_MIN_EVENTS = 20  # a property (or a value of one) on fewer events is no feature
NUMERIC_PROPERTIES = 20  # numeric event properties as features (a sum and a mean each), the most common first
PROPERTY_VALUES = 30  # frequent values of categorical event properties as features (a count each)
VALUES_PER_PROPERTY = 3
PROPERTY_MAX_VALUES = 20  # a property with more different values is an identifier or free text
DISCOVERY_EVENTS = 200_000  # the properties are found among the oldest this many events
# Families of features `--without` can leave out by name (docs/predictive.md): the event properties'
# sums, means and value counts, the recency-weighted counts, the deal features, the account roll-ups.
FAMILIES = ("event-properties", "recency-weights", "deals", "account-roll-ups")
_CUTOFF = re.compile(r"^(created\+(\d+)|mql)$")


@dataclass
class TrainingSet:
    frame: pd.DataFrame  # features, plus lead_id, cutoff, label, rule_score
    spec: FeatureSpec
    target: str
    within_days: int
    cutoff: str
    end: datetime
    recipe: Recipe
    left_out: dict[str, int] = field(default_factory=dict)
    attributes_left_out: dict[str, str] = field(default_factory=dict)  # attribute -> why it is no feature
    known_early: int = 0  # positives whose N days were not over by `end` (their outcome known already)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.frame["label"].to_numpy(dtype=int))

    @property
    def times(self) -> np.ndarray:
        return np.asarray(self.frame["cutoff"].to_numpy())

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "within_days": self.within_days,
            "cutoff": self.cutoff,
            "end": self.end.isoformat(),
            "rows": len(self.frame),
            "positives": int(self.labels.sum()),
            "left_out": self.left_out,
            "known_early": self.known_early,
            "features": len(self.spec.columns),
            "attributes": sorted(self.recipe.attributes.values()),
            "attributes_left_out": self.attributes_left_out,
        }


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]


def _popular_items(items: ir.Table) -> dict[str, str]:
    """The CONTENT_ITEMS items the most leads engaged with, by column name."""
    popular = (
        items.distinct()
        .group_by("item")
        .aggregate(n=lambda t: t.count())
        .order_by([ibis.desc("n"), "item"])
        .limit(CONTENT_ITEMS)
    )
    return {f"engaged_{_slug(row['item'])}": row["item"] for row in popular.to_pyarrow().to_pylist()}


def _stages_at(history: ir.Table, rows: ir.Table) -> ir.Table:
    """Each row's stage at its cutoff and when it entered it: the last stage change at or before the
    cutoff (of changes at the same instant, the one recorded last)."""
    joined = history.join(rows, history.lead_id == rows.lead_id).select(
        stage_lead=history.lead_id, to_stage=history.to_stage, entered=history.at, order=history.id, cutoff=rows.cutoff
    )
    joined = joined.filter(joined.entered <= joined.cutoff)
    latest = ibis.window(group_by=joined.stage_lead, order_by=[ibis.desc(joined.entered), ibis.desc(joined.order)])
    ranked = joined.mutate(rank=ibis.row_number().over(latest))
    return ranked.filter(ranked.rank == 0).select("stage_lead", stage=ranked.to_stage, stage_entered=ranked.entered)


def _cutoffs(sources: Sources, cutoff: str) -> ir.Table:
    match = _CUTOFF.match(cutoff)
    if match is None:
        raise InvalidInput(f"cutoff {cutoff!r}: expected created+DAYS (e.g. created+14) or mql", field="cutoff")
    leads = sources.leads
    if "erased_at" in leads.columns:  # an erased lead's profile and events are gone: nothing to learn from
        leads = leads.filter(leads.erased_at.isnull())
    if match.group(2) is not None:
        return leads.select(lead_id=leads.id, cutoff=leads.created_at + ibis.interval(days=int(match.group(2))))
    assert sources.history is not None
    entered = first_entries(sources.history, "mql", "lead_id", "cutoff")
    return entered.filter(entered.lead_id.isin(leads.id))


def training_set(
    model: ScoringModel,
    sources: Sources,
    *,
    target: str = "customer",
    within_days: int = 90,
    cutoff: str = "created+14",
    end: datetime,
    recipe: Recipe | None = None,
    without: tuple[str, ...] = (),
    exclude: Collection[int] = (),
) -> TrainingSet:
    """The rows to learn from (module doc); `end` is the end of the data (nothing after it exists).
    With a `recipe` (a stored model's), exactly its behaviour features are built; without, the
    event kinds in the data and its most common content items. The leads whose ids are in
    `exclude` are left out before anything is learnt from the data (counted as `excluded`).

    A lead is censored when its N days are not over by `end` and it has not reached the target
    within them by `end`: one that has is a positive, its outcome known (a row, also counted as
    `known_early`). Its label is still the same test — reached
    after the cutoff, within N days of it — and nothing after `end` is read."""
    if target not in TARGETS:
        raise InvalidInput(f"unknown target {target!r}; expected one of: {', '.join(TARGETS)}", field="target")
    if sources.history is None:
        raise InvalidInput("a training set needs the stage history", field="history")
    history = sources.history
    cuts = _cutoffs(sources, cutoff)
    excluded = 0
    if exclude:
        kept = ~cuts.lead_id.isin(sorted({int(i) for i in exclude}))
        excluded = int(cuts.aggregate(n=(~kept).ifelse(1, 0).sum()).to_pyarrow().to_pylist()[0]["n"] or 0)
        cuts = cuts.filter(kept)
    first = first_entries(history, target, "reached_lead", "reached")
    framed = cuts.left_join(first, cuts.lead_id == first.reached_lead)
    horizon = framed.cutoff + ibis.interval(days=within_days)
    last = ibis.literal(end)
    reached_in_window = framed.reached.notnull() & (framed.reached > framed.cutoff) & (framed.reached <= horizon)
    open_window = horizon > last
    known = reached_in_window & (framed.reached <= last)  # converted in its window, and known to have by `end`
    framed = framed.select(
        "lead_id",
        "cutoff",
        censored=open_window & ~known,
        early=open_window & known,
        before=framed.reached.notnull() & (framed.reached <= framed.cutoff),
        label=reached_in_window.ifelse(1, 0),
    )
    counts = (
        framed.aggregate(
            censored=framed.censored.ifelse(1, 0).sum(),
            early=framed.early.ifelse(1, 0).sum(),
            before=(framed.before & ~framed.censored).ifelse(1, 0).sum(),
        )
        .to_pyarrow()
        .to_pylist()[0]
    )
    rows = framed.filter(~framed.censored & ~framed.before).select("lead_id", "cutoff", "label")

    frame, spec, recipe, skipped = _features(model, sources, rows, recipe, order=["cutoff", "lead_id"], without=without)
    left_out = {
        "censored": int(counts["censored"] or 0),
        "reached_before_cutoff": int(counts["before"] or 0),
        "excluded": excluded,
    }
    early = int(counts["early"] or 0)
    return TrainingSet(frame, spec, target, within_days, cutoff, end, recipe, left_out, skipped, early)


def features_as_of(model: ScoringModel, sources: Sources, as_of: datetime, recipe: Recipe) -> pd.DataFrame:
    """Every lead's features as of one instant under a stored model's `recipe` — the training
    set's features with `as_of` as every lead's cutoff, so nothing after it is read but the
    profile (as it is now): the leads created by then and not erased, by lead_id. What a served
    probability at that instant is computed from (`Predictor.probabilities`, tested equal)."""
    if sources.history is None:
        raise InvalidInput(
            "the probability needs the stage history (the stage is a feature): this export has no "
            "stage_history.parquet",
            field="history",
        )
    leads = sources.leads
    if "erased_at" in leads.columns:  # an erased lead keeps no probability
        leads = leads.filter(leads.erased_at.isnull())
    instant = ibis.literal(as_of, type=leads.created_at.type())
    rows = leads.filter(leads.created_at <= instant).select(lead_id=leads.id, cutoff=instant)
    frame, _, _, _ = _features(model, sources, rows, recipe, order=["lead_id"])
    return frame


def outcome_set(
    model: ScoringModel,
    sources: Sources,
    outcomes: pd.DataFrame,
    *,
    name: str,
    recipe: Recipe | None = None,
    without: tuple[str, ...] = (),
) -> TrainingSet:
    """Rows for known outcomes that carry no stage history (a snapshot export that only knows who
    converted): `outcomes` has `lead_id`, `label` (0/1) and `at`, the instant the features are
    taken at (NaT: the lead's newest activity — its newest event, or its creation if that is
    later — the instant a served probability is computed at). Nothing after a row's instant is
    read but the profile, which is as it is now. `name` says where the labels came from; attributes
    named in `without` (the label's own column among them) are no features."""
    if outcomes.empty:
        raise InvalidInput("no leads with a known outcome to learn from or judge on", field="label")
    given = pd.DataFrame(
        {
            "given_lead": outcomes["lead_id"].astype("int64"),
            "given_at": pd.to_datetime(outcomes["at"], utc=True).astype("datetime64[us, UTC]"),
            "given_label": outcomes["label"].astype("int64"),
        }
    )
    table = ibis.memtable(given)
    leads = sources.leads
    newest = ibis.greatest(leads.created_at, leads.last_event_at.fill_null(leads.created_at))
    joined = table.join(leads, table.given_lead == leads.id)
    rows = joined.select(
        lead_id=joined.given_lead,
        cutoff=joined.given_at.fill_null(newest),
        label=joined.given_label,
    )
    frame, spec, recipe, skipped = _features(model, sources, rows, recipe, order=["lead_id"], without=without)
    dated = bool(given["given_at"].notna().all())
    end = frame["cutoff"].max().to_pydatetime() if len(frame) else datetime.now().astimezone()
    cutoff = "given instants" if dated else "newest activity" if given["given_at"].isna().all() else "mixed"
    return TrainingSet(frame, spec, name, 0, cutoff, end, recipe, {}, skipped)


def _scored_at_cutoffs(model: ScoringModel, sources: Sources, rows: pd.DataFrame) -> pd.DataFrame:
    """fit, grade and engagement under `model` of each row (`lead_id`, `cutoff`) as of its cutoff,
    by lead_id, as the engines give them."""
    table = ibis.memtable(
        pd.DataFrame(
            {
                "lead_id": rows["lead_id"].astype("int64"),
                "cutoff": pd.to_datetime(rows["cutoff"], utc=True).astype("datetime64[us, UTC]"),
            }
        )
    )
    fit = fit_scores(model, sources)
    engagement = engagement_at_cutoffs(model, sources, table)
    joined = table.left_join(fit, table.lead_id == fit.lead_id).drop("lead_id_right")
    joined = joined.left_join(engagement, joined.lead_id == engagement.lead_id).drop("lead_id_right")
    return joined.select("lead_id", "fit", "grade", "engagement").to_pandas().set_index("lead_id")


def rule_scores(model: ScoringModel, sources: Sources, rows: pd.DataFrame) -> np.ndarray:
    """fit + engagement under `model` of each row (`lead_id`, `cutoff`) as of its cutoff, in the
    rows' order: the rule score a training set holds, for another scoring model."""
    found = _scored_at_cutoffs(model, sources, rows)
    total = found["fit"].fillna(0.0).astype(float) + found["engagement"].fillna(0.0).astype(float)
    return np.asarray(total.reindex(rows["lead_id"].to_numpy()).fillna(0.0).to_numpy(dtype=float))


def scores_at_cutoffs(model: ScoringModel, sources: Sources, rows: pd.DataFrame) -> pd.DataFrame:
    """`fit_score`, `fit_grade` and `engagement_score` under `model` of each row (`lead_id`, `cutoff`)
    as of its cutoff, by lead_id: what a training set of the same rows built with `model` holds in
    those columns (rounded as it rounds them), without building every other feature again."""
    found = _scored_at_cutoffs(model, sources, rows)
    return pd.DataFrame(
        {
            "fit_score": found["fit"].astype(float).round(DIGITS),
            "fit_grade": found["grade"],
            "engagement_score": found["engagement"].fillna(0.0).astype(float).round(DIGITS),
        },
        index=found.index,
    )


def _numeric_text(values: pd.Series) -> bool:
    """Whether every value (text, as the export writes attributes) is a number, not a boolean."""
    if values.isin(["true", "false"]).any():
        return False
    return bool(pd.to_numeric(values, errors="coerce").notna().all())


def discover_attributes(
    texts: pd.DataFrame, without: tuple[str, ...] = ()
) -> tuple[dict[str, str], tuple[str, ...], dict[str, str]]:
    """Which lead attributes are features, from their text (one column per attribute): those on at
    least `ATTRIBUTE_MIN_LEADS` leads, the `ATTRIBUTES` most common; numbers where every value is a
    number. Left out, with the reason: the ones in `without`, and text that differs on nearly
    every lead (an identifier or free text: no value is seen twice to learn from)."""
    columns: dict[str, str] = {}
    numeric: list[str] = []
    left_out: dict[str, str] = {}
    present = texts.notna().sum().sort_values(ascending=False, kind="stable")
    for name, count in present.items():
        name = str(name)
        if name in without:
            left_out[name] = "left out as asked"
            continue
        if count < ATTRIBUTE_MIN_LEADS:
            left_out[name] = f"on fewer than {ATTRIBUTE_MIN_LEADS} leads"
            continue
        if len(columns) >= ATTRIBUTES:
            left_out[name] = f"beyond the {ATTRIBUTES} most common attributes"
            continue
        values = texts[name].dropna()
        is_number = _numeric_text(values)
        if not is_number and values.nunique() > 0.5 * len(values):
            left_out[name] = "a different text on most leads (an identifier or free text)"
            continue
        column = f"attribute_{_slug(name)}"
        if column in columns:  # two names with the same slug: the more common one wins
            left_out[name] = f"its column name {column} is taken"
            continue
        columns[column] = name
        if is_number:
            numeric.append(column)
    return columns, tuple(numeric), left_out


def discover_properties(events: ir.Table) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Which event properties are features, from the oldest `DISCOVERY_EVENTS` behaviour events:
    per event kind, a property on at least `PROPERTY_MIN_EVENTS` events whose every value is a
    number (NUMBER_PATTERN) gives a sum and a mean (the `NUMERIC_PROPERTIES` most common); one with
    at most `PROPERTY_MAX_VALUES` different texts gives a count of each of its `VALUES_PER_PROPERTY`
    most frequent values seen on that many events (the `PROPERTY_VALUES` most frequent in all). The
    properties that name content (CONTENT_KEYS) are the content items' already, and nested values
    (lists, documents) are no features."""
    behaviour = events.filter(events.type != BONUS_EVENT)
    sample = behaviour.order_by("id").limit(DISCOVERY_EVENTS).select("type", "properties").to_pandas()
    if sample.empty:
        return {}, {}
    texts = _attribute_texts(sample["properties"])
    numbers: list[tuple[int, str, str]] = []
    values: list[tuple[int, str, str, str]] = []
    number = re.compile(NUMBER_PATTERN)
    for kind, rows in texts.groupby(sample["type"].to_numpy(), sort=True):
        for name in sorted(str(c) for c in rows.columns):
            found = rows[name].dropna()
            if name in CONTENT_KEYS or len(found) < PROPERTY_MIN_EVENTS:
                continue
            if all(number.match(text) for text in found):
                numbers.append((len(found), str(kind), name))
                continue
            counts = found.value_counts()
            if len(counts) > PROPERTY_MAX_VALUES:
                continue
            frequent = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:VALUES_PER_PROPERTY]
            values.extend(
                (int(n), str(kind), name, str(text))
                for text, n in frequent
                if n >= PROPERTY_MIN_EVENTS and not str(text).startswith(("{", "["))
            )
    number_columns: dict[str, list[str]] = {}
    for _, kind, name in sorted(numbers, key=lambda t: (-t[0], t[1], t[2]))[:NUMERIC_PROPERTIES]:
        number_columns.setdefault(_slug(f"{kind}_{name}"), [kind, name])
    value_columns: dict[str, list[str]] = {}
    for _, kind, name, text in sorted(values, key=lambda t: (-t[0], t[1], t[2], t[3]))[:PROPERTY_VALUES]:
        value_columns.setdefault(f"count_{_slug(f'{kind}_{name}_{text}')}", [kind, name, text])
    return number_columns, value_columns


def _has_rows(table: ir.Table | None) -> bool:
    return table is not None and bool(table.limit(1).count().to_pyarrow().as_py())


def _shared_accounts(leads: ir.Table) -> bool:
    """Whether any account has two leads or more (else account roll-ups would be all zero)."""
    accounts = leads.filter(leads.account_id.notnull()).group_by("account_id").aggregate(n=lambda t: t.count())
    return bool(accounts.filter(accounts.n > 1).limit(1).count().to_pyarrow().as_py())


def _property_features(seen: ir.Table, recipe: Recipe) -> dict[str, Any]:
    """Aggregates over each row's events up to its cutoff (`seen`): the numeric properties' sums and
    means, the frequent values' counts, and each kind's recency-weighted count (recipe.py's
    `feature_row` computes the same for one lead)."""
    out: dict[str, Any] = {}
    for slug, (kind, name) in recipe.numbers.items():
        text = value_text(seen.properties, name)
        # Only a text that is a number reaches the cast (an engine may refuse to cast other text).
        number = ibis.ifelse((seen.type == kind) & text.re_search(NUMBER_PATTERN), text, ibis.null("string"))
        value = number.cast("float64")
        out[f"sum_{slug}"] = value.sum()
        out[f"mean_{slug}"] = value.mean()
    for column, (kind, name, wanted) in recipe.values.items():
        out[column] = ((seen.type == kind) & (value_text(seen.properties, name) == wanted)).ifelse(1, 0).sum()
    if recipe.weighted:
        age = days_between(seen.cutoff, seen.occurred_at)
        weight = (age * (-math.log(2.0) / HALF_LIFE_DAYS)).exp()
        for slug, kind in recipe.kinds.items():
            out[f"weighted_{slug}"] = (seen.type == kind).ifelse(weight, 0.0).sum()
    return out


def _deal_features(deals: ir.Table, rows: ir.Table) -> ir.Table:
    """Each row's deals as of its cutoff (recipe.py's `deal_features`), keyed by `deal_lead`."""
    joined = deals.join(rows, deals.lead_id == rows.lead_id).select(
        deal_lead=rows.lead_id,
        cutoff=rows.cutoff,
        opened=deals.opened_at,
        closed=deals.closed_at,
        outcome=deals.outcome,
        amount=deals.amount.cast("float64"),
    )
    is_open = (
        joined.opened.notnull()
        & (joined.opened <= joined.cutoff)
        & (joined.closed.isnull() | (joined.closed > joined.cutoff))
    )
    lost = (joined.outcome == "lost") & joined.closed.notnull() & (joined.closed <= joined.cutoff)
    return joined.group_by("deal_lead").aggregate(
        deals_open=is_open.ifelse(1, 0).sum(),
        days_deal_open=is_open.ifelse(days_between(joined.cutoff, joined.opened), ibis.null("float64")).max(),
        open_deal_amount=is_open.ifelse(joined.amount.fill_null(0.0), 0.0).sum(),
        deals_lost=lost.ifelse(1, 0).sum(),
    )


def _account_features(sources: Sources, behaviour: ir.Table, rows: ir.Table, recent_days: int) -> ir.Table:
    """Each row's account roll-ups as of its cutoff (recipe.py's `account_features`): the other
    (not erased) leads at its account, keyed by `account_lead`."""
    leads, history = sources.leads, sources.history
    assert history is not None
    if "erased_at" in leads.columns:
        leads = leads.filter(leads.erased_at.isnull())
    mine = rows.join(leads, rows.lead_id == leads.id).select(
        account_lead=rows.lead_id, account_cutoff=rows.cutoff, account=leads.account_id
    )
    mine = mine.filter(mine.account.notnull())
    others = leads.filter(leads.account_id.notnull()).select(
        peer=leads.id, peer_account=leads.account_id, peer_created=leads.created_at
    )
    pairs = mine.join(others, (mine.account == others.peer_account) & (mine.account_lead != others.peer))
    for name, stages in (("qualified_at", QUALIFIED), ("opportunity_at", OPPORTUNITY)):
        entered = history.filter(history.to_stage.isin(stages))
        first = entered.group_by(first_lead=entered.lead_id).aggregate(**{name: entered.at.min()})
        pairs = pairs.left_join(first, pairs.peer == first.first_lead).drop("first_lead")
    people = pairs.group_by("account_lead").aggregate(
        account_other_leads=(pairs.peer_created <= pairs.account_cutoff).ifelse(1, 0).sum(),
        account_other_qualified=(pairs.qualified_at.notnull() & (pairs.qualified_at <= pairs.account_cutoff))
        .ifelse(1, 0)
        .sum(),
        account_other_opportunities=(pairs.opportunity_at.notnull() & (pairs.opportunity_at <= pairs.account_cutoff))
        .ifelse(1, 0)
        .sum(),
    )
    acts = pairs.join(behaviour, pairs.peer == behaviour.lead_id).select(
        acts_lead=pairs.account_lead, cutoff=pairs.account_cutoff, occurred=behaviour.occurred_at
    )
    acts = acts.filter(acts.occurred <= acts.cutoff)
    activity = acts.group_by("acts_lead").aggregate(
        account_other_events=acts.count(),
        account_other_recent_events=(days_between(acts.cutoff, acts.occurred) <= recent_days).ifelse(1, 0).sum(),
    )
    joined = people.left_join(activity, people.account_lead == activity.acts_lead).drop("acts_lead")
    return joined.select("account_lead", *ACCOUNT_COLUMNS)


def _attribute_texts(values: pd.Series) -> pd.DataFrame:
    """Each lead's attributes (a map from the export, a JSON document from PostgreSQL) as text
    columns, as `as_text` writes them."""
    rows: list[dict[str, str | None]] = []
    for value in values:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            rows.append({})
            continue
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, list):  # a map as (key, value) pairs
            value = dict(value)
        rows.append({str(k): as_text(v) for k, v in value.items()})
    return pd.DataFrame(rows, index=values.index)


def _features(
    model: ScoringModel,
    sources: Sources,
    rows: ir.Table,
    recipe: Recipe | None,
    *,
    order: list[str],
    without: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, FeatureSpec, Recipe, dict[str, str]]:
    """Every feature of `rows` (lead_id, cutoff, label) at its cutoff; `recipe` fixes which
    (a stored model's), else they are found in the data; `without` names features or attributes to
    leave out. Also returns the attributes left out, with the reason."""
    history, events, leads = sources.history, sources.events, sources.leads
    if history is None:
        raise InvalidInput("a training set needs the stage history", field="history")
    # Events before each lead's cutoff. A workflow's bonus is no behaviour of the lead: as an event
    # kind it would teach the model our own workflows' choices (and a learned points model cannot
    # name the reserved type); its points still count, in the engagement score.
    behaviour_events = events.filter(events.type != BONUS_EVENT)
    seen = behaviour_events.join(rows, behaviour_events.lead_id == rows.lead_id).select(
        behaviour_events.lead_id,
        behaviour_events.type,
        behaviour_events.occurred_at,
        behaviour_events.properties,
        rows.cutoff,
    )
    seen = seen.filter(seen.occurred_at <= seen.cutoff)
    given = recipe is not None
    if recipe is None:
        kinds = sorted(
            row["type"] for row in behaviour_events.select("type").distinct().to_pyarrow().to_pylist() if row["type"]
        )
        off = set(without) & set(FAMILIES)
        number_properties, property_values = discover_properties(events) if "event-properties" not in off else ({}, {})
        recipe = Recipe(
            {_slug(kind): kind for kind in kinds},
            {},
            flags=True,
            numbers=number_properties,
            values=property_values,
            weighted="recency-weights" not in off,
            deals="deals" not in off and _has_rows(sources.deals),
            account="account-roll-ups" not in off and _shared_accounts(leads),
        )
    if recipe.deals and sources.deals is None:
        raise InvalidInput(
            "the model reads the leads' deals: this export has no deals.parquet (export the workspace again)",
            field="deals",
        )
    age = days_between(seen.cutoff, seen.occurred_at)
    per_kind: dict[str, Any] = {}
    for slug, kind in recipe.kinds.items():
        is_kind = seen.type == kind
        per_kind[f"events_{slug}"] = is_kind.ifelse(1, 0).sum()
        per_kind[f"recent_{slug}"] = (is_kind & (age <= recipe.recent_days)).ifelse(1, 0).sum()
        per_kind[f"days_since_{slug}"] = is_kind.ifelse(age, ibis.null("float64")).min()
    per_kind.update(_property_features(seen, recipe))
    behaviour = seen.group_by(behaviour_lead=seen.lead_id).aggregate(**per_kind) if per_kind else None

    items = seen.select(lead_id=seen.lead_id, item=content_item(seen)).filter(lambda t: t.item.notnull())
    content_columns = recipe.items if given else _popular_items(items)
    recipe = replace(recipe, items=content_columns)
    top_items = list(content_columns.values())
    engaged = (
        items.filter(items.item.isin(top_items))
        .group_by(content_lead=items.lead_id)
        .aggregate(**{name: (items.item == item).any().ifelse(1, 0) for name, item in content_columns.items()})
        if top_items
        else None
    )

    accounts = sources.accounts
    profile = leads.left_join(accounts, leads.account_id == accounts.id).select(
        profile_lead=leads.id,
        created_at=leads.created_at,
        **{c: leads[c] for c in LEAD_CATEGORIES},
        **{c: leads[c] for c in LEAD_FLAGS},
        attributes=leads.attributes,
        **{f"account_{c}": accounts[c] for c in ACCOUNT_CATEGORIES},
        **{f"account_{c}": accounts[c].cast("float64") for c in ACCOUNT_NUMBERS},
    )
    fit = fit_scores(model, sources)
    engagement = engagement_at_cutoffs(model, sources, rows.select("lead_id", "cutoff"))
    stages = _stages_at(history, rows)

    table = rows.left_join(profile, rows.lead_id == profile.profile_lead)
    table = table.left_join(fit, table.lead_id == fit.lead_id).drop("lead_id_right")
    table = table.left_join(engagement, table.lead_id == engagement.lead_id).drop("lead_id_right")
    table = table.left_join(stages, table.lead_id == stages.stage_lead)
    if behaviour is not None:
        table = table.left_join(behaviour, table.lead_id == behaviour.behaviour_lead)
    if engaged is not None:
        table = table.left_join(engaged, table.lead_id == engaged.content_lead)
    if recipe.deals:
        assert sources.deals is not None
        deals = _deal_features(sources.deals, rows)
        table = table.left_join(deals, table.lead_id == deals.deal_lead)
    if recipe.account:
        account = _account_features(sources, behaviour_events, rows, recipe.recent_days)
        table = table.left_join(account, table.lead_id == account.account_lead)
    frame = table.order_by(order).to_pandas()
    texts = _attribute_texts(frame.pop("attributes"))
    skipped: dict[str, str] = {}
    if not given:
        columns, numbers, skipped = discover_attributes(texts, without)
        recipe = replace(recipe, attributes=columns, numeric_attributes=numbers)
    columns_of: dict[str, pd.Series] = {}
    for column, name in recipe.attributes.items():
        values = texts[name] if name in texts else pd.Series(None, index=frame.index, dtype=object)
        if column in recipe.numeric_attributes:
            columns_of[column] = pd.to_numeric(values, errors="coerce").astype(float)
        else:
            columns_of[column] = values.astype(object).where(values.notna(), None)
    extra = recipe.extra_columns()
    for name in extra:  # a column no row has (no deals, say) is still there
        if name not in frame:
            columns_of[name] = pd.Series(np.nan, index=frame.index)
    frame = pd.concat([frame, pd.DataFrame(columns_of, index=frame.index)], axis=1).copy()  # one block, not many

    frame["days_since_created"] = (frame["cutoff"] - frame["created_at"]).dt.total_seconds() / DAY_SECONDS
    frame["days_in_stage"] = (frame["cutoff"] - frame["stage_entered"]).dt.total_seconds() / DAY_SECONDS
    frame = frame.rename(columns={"fit": "fit_score", "grade": "fit_grade", "engagement": "engagement_score"})
    known_absent = ("days_since_", "mean_", "days_deal_open")  # NaN: nothing to tell; the others count
    counted = [c for c in dict.fromkeys((*per_kind, *extra)) if not c.startswith(known_absent)]
    counted += list(content_columns)
    frame = frame.fillna(dict.fromkeys(counted, 0) | {"engagement_score": 0.0})
    frame["rule_score"] = frame["fit_score"] + frame["engagement_score"]
    numeric = (
        *(f"account_{c}" for c in ACCOUNT_NUMBERS),
        "fit_score",
        "engagement_score",
        "days_since_created",
        "days_in_stage",
        *per_kind,
        *content_columns,
        *recipe.numeric_attributes,
        *(c for c in extra if c not in per_kind),
    )
    categorical = (
        *LEAD_CATEGORIES,
        *(LEAD_FLAGS if recipe.flags else ()),
        *(f"account_{c}" for c in ACCOUNT_CATEGORIES),
        "fit_grade",
        "persona",
        "stage",
        *(c for c in recipe.attributes if c not in recipe.numeric_attributes),
    )
    # Sums in a parallel engine differ in their last bits from run to run: rounded, the same data
    # trains the same model (and its content-hash version) every time.
    frame[list(numeric)] = frame[list(numeric)].astype(float).round(DIGITS)
    spec = FeatureSpec(numeric, categorical)
    if without and not given:
        named = {f"attribute_{_slug(name)}" for name in without} | set(without)
        unknown = sorted(n for n in without if n not in spec.columns and n not in skipped and n not in FAMILIES)
        if unknown:
            raise InvalidInput(
                f"--without {', '.join(unknown)}: no such feature, family of features or lead attribute "
                f"(families: {', '.join(FAMILIES)}; features: {', '.join(spec.columns)})",
                field="without",
            )
        spec = FeatureSpec(tuple(c for c in numeric if c not in named), tuple(c for c in categorical if c not in named))
    return frame, spec, recipe, skipped


def default_end(sources: Sources) -> datetime:
    """The end of the data: the latest event or stage change."""
    assert sources.history is not None
    latest = [
        sources.events.occurred_at.max().to_pyarrow().as_py(),
        sources.history.at.max().to_pyarrow().as_py(),
    ]
    known: list[datetime] = [t for t in latest if t is not None]
    if not known:
        raise InvalidInput("the workspace has no events or stage history to learn from", field="end")
    return max(known)
