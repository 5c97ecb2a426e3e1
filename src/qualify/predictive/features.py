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
import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from qualify.analytics.batch_evaluator import DAY_SECONDS, Sources, engagement_at_cutoffs, fit_scores
from qualify.analytics.reports import TARGETS, content_item, days_between, first_entries
from qualify.domain.engagement import BONUS_EVENT
from qualify.domain.errors import InvalidInput
from qualify.domain.scoring_model import ScoringModel
from qualify.domain.values import as_text
from qualify.predictive.models import FeatureSpec
from qualify.predictive.recipe import (
    ACCOUNT_CATEGORIES,
    ACCOUNT_NUMBERS,
    DIGITS,
    LEAD_CATEGORIES,
    LEAD_FLAGS,
    Recipe,
)

CONTENT_ITEMS = 15
ATTRIBUTES = 60  # lead attributes as features, the most common first
ATTRIBUTE_MIN_LEADS = 20  # an attribute on fewer leads is no feature
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


def rule_scores(model: ScoringModel, sources: Sources, rows: pd.DataFrame) -> np.ndarray:
    """fit + engagement under `model` of each row (`lead_id`, `cutoff`) as of its cutoff, in the
    rows' order: the rule score a training set holds, for another scoring model."""
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
    found = joined.select("lead_id", "fit", "engagement").to_pandas().set_index("lead_id")
    total = found["fit"].fillna(0.0).astype(float) + found["engagement"].fillna(0.0).astype(float)
    return np.asarray(total.reindex(rows["lead_id"].to_numpy()).fillna(0.0).to_numpy(dtype=float))


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
        recipe = Recipe({_slug(kind): kind for kind in kinds}, {}, flags=True)
    age = days_between(seen.cutoff, seen.occurred_at)
    per_kind: dict[str, Any] = {}
    for slug, kind in recipe.kinds.items():
        is_kind = seen.type == kind
        per_kind[f"events_{slug}"] = is_kind.ifelse(1, 0).sum()
        per_kind[f"recent_{slug}"] = (is_kind & (age <= recipe.recent_days)).ifelse(1, 0).sum()
        per_kind[f"days_since_{slug}"] = is_kind.ifelse(age, ibis.null("float64")).min()
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
    frame = table.order_by(order).to_pandas()
    texts = _attribute_texts(frame.pop("attributes"))
    skipped: dict[str, str] = {}
    if not given:
        columns, numbers, skipped = discover_attributes(texts, without)
        recipe = replace(recipe, attributes=columns, numeric_attributes=numbers)
    for column, name in recipe.attributes.items():
        values = texts[name] if name in texts else pd.Series(None, index=frame.index, dtype=object)
        if column in recipe.numeric_attributes:
            frame[column] = pd.to_numeric(values, errors="coerce").astype(float)
        else:
            frame[column] = values.astype(object).where(values.notna(), None)

    frame["days_since_created"] = (frame["cutoff"] - frame["created_at"]).dt.total_seconds() / DAY_SECONDS
    frame["days_in_stage"] = (frame["cutoff"] - frame["stage_entered"]).dt.total_seconds() / DAY_SECONDS
    frame = frame.rename(columns={"fit": "fit_score", "grade": "fit_grade", "engagement": "engagement_score"})
    counted = [c for c in per_kind if not c.startswith("days_since_")] + list(content_columns)
    frame[counted] = frame[counted].fillna(0)
    frame["engagement_score"] = frame["engagement_score"].fillna(0.0)
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
        unknown = sorted(n for n in without if n not in spec.columns and n not in skipped)
        if unknown:
            raise InvalidInput(
                f"--without {', '.join(unknown)}: no such feature or lead attribute "
                f"(features: {', '.join(spec.columns)})",
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
