"""Point-in-time account rows: one per account and cutoff, built only from what was known then.

The cutoffs are instants every `every_days` over the history. At each one, every account with at
least one person already a lead is a row, unless one of its people was in a deal then (stage
opportunity, customer or evangelist: the account has what the label asks). Its **label** is
whether one of its people entered the opportunity stage in the `within_days` after the cutoff;
cutoffs whose days run past the end of the data are not used, so no row is censored.

Features (all at the cutoff): the account's scores under the scoring model (fit, engagement rolled
up with the per-person cap, the roles of its buying group covered, one flag per role), its
people (how many, how many engaged, active in the last 30 days, in MQL, in SQL), its events in
the last 30 days and days since the last one, its people's best fit, best engagement and their
engagement summed without the cap, and its employees. Engagement, event counts and employees have
long tails: the models see their logarithm (`log_` columns). Industry and country are not features
of their own: they count through the account's fit (as categories they only added noise, measured
on the demo world).

Beside the model the rows carry what it is judged against: the account policy's MQA bar (met
or not at the cutoff) and the lead-level scores rolled up to the account (its best person's
rule score, fit + engagement; its best engagement; whether anyone was an MQL).
Built with Ibis over the batch side's tables, so it runs on DuckDB, PostgreSQL or Spark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import ibis
import numpy as np
import pandas as pd

from qualify.analytics.batch_evaluator import Sources, account_scores_at_cutoffs, fit_scores, people_at_cutoffs
from qualify.domain.errors import InvalidInput
from qualify.domain.scoring_model import AccountSpec, ScoringModel
from qualify.predictive.models import FeatureSpec

TARGET = "opportunity"
IN_A_DEAL = ("opportunity", "customer", "evangelist")
RECENT_DAYS = 30
SKEWED = ("account_engagement", "engagement_uncapped", "best_lead_engagement", "events_recent", "employees")
NEVER_ACTIVE_DAYS = 365.0  # days since the last activity of an account whose people never did anything


@dataclass
class AccountSet:
    """The rows (`frame`: account_id, cutoff, the features, `mqa`, the lead-level roll-ups), their
    labels, their cutoffs as times, and what was left out."""

    frame: pd.DataFrame
    labels: np.ndarray
    spec: FeatureSpec
    within_days: int
    cutoffs: list[datetime]
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def times(self) -> np.ndarray:
        return np.asarray(self.frame["cutoff"].to_numpy())

    @property
    def accounts(self) -> np.ndarray:
        return np.asarray(self.frame["account_id"].to_numpy())

    def summary(self) -> dict[str, Any]:
        return {
            "rows": len(self.frame),
            "accounts": int(self.frame["account_id"].nunique()),
            "positives": int(self.labels.sum()),
            "target": TARGET,
            "within_days": self.within_days,
            "cutoffs": len(self.cutoffs),
            "first_cutoff": self.cutoffs[0].isoformat() if self.cutoffs else None,
            "last_cutoff": self.cutoffs[-1].isoformat() if self.cutoffs else None,
            "left_out": dict(self.left_out),
        }


def role_column(name: str) -> str:
    """The feature of one role of the buying group: `role_economic_buyer`."""
    return "role_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def cutoffs_between(start: datetime, end: datetime, every_days: int, within_days: int) -> list[datetime]:
    """Instants every `every_days` from `start` + `every_days` whose `within_days` end by `end`."""
    if every_days < 1:
        raise InvalidInput("cutoffs must be at least a day apart", field="every")
    out, moment = [], start + timedelta(days=every_days)
    while moment + timedelta(days=within_days) <= end:
        out.append(moment)
        moment += timedelta(days=every_days)
    return out


def account_set(
    model: ScoringModel, sources: Sources, *, within_days: int, every_days: int, end: datetime
) -> AccountSet:
    """The rows of every cutoff from the first lead's creation to `end` (module doc)."""
    spec = _spec_of(model)
    if sources.history is None:
        raise InvalidInput("account training needs the stage history", field="history")
    people = _people(sources)
    if people.empty:
        raise InvalidInput("no lead belongs to an account: nothing to learn about accounts", field="accounts")
    start = people["created_at"].min().to_pydatetime()
    cutoffs = cutoffs_between(start, end, every_days, within_days)
    if not cutoffs:
        raise InvalidInput(
            f"the data runs {(end - start).days} days: too short for cutoffs every {every_days} days followed by "
            f"{within_days} days to judge them; lower --every or --within",
            field="within",
        )
    history = sources.history.select("lead_id", "to_stage", "at").to_pandas()
    history["at"] = pd.to_datetime(history["at"], utc=True)
    history = history.sort_values("at", kind="stable")
    accounts = _account_fields(sources)
    persons = people_at_cutoffs(model, sources, cutoffs, recent_days=RECENT_DAYS).to_pandas()
    persons["cutoff"] = pd.to_datetime(persons["cutoff"], utc=True)
    persons["last_at"] = pd.to_datetime(persons["last_at"], utc=True)
    # The accounts' scores from the same rows, not from the people's query run again.
    scores = account_scores_at_cutoffs(model, sources, cutoffs, people=ibis.memtable(persons)).to_pandas()
    scores["cutoff"] = pd.to_datetime(scores["cutoff"], utc=True)
    fits = fit_scores(model, sources).select("lead_id", "fit").to_pandas()
    persons = persons.merge(fits, on="lead_id", how="left").fillna({"fit": 0.0})
    persons = persons.merge(people[["lead_id", "created_at"]], on="lead_id", how="left")
    frames, left_out = [], 0
    for cutoff in cutoffs:
        at = pd.Timestamp(cutoff).tz_convert("UTC")
        rows, in_deal = _rows_at(
            spec, persons[persons["cutoff"] == at], scores[scores["cutoff"] == at], people, history, accounts, at,
            within_days,
        )  # fmt: skip
        frames.append(rows)
        left_out += in_deal
    frame = pd.concat(frames, ignore_index=True)
    for column in SKEWED:  # engagement and counts have long tails: the models see their logarithm
        frame[f"log_{column}"] = np.log1p(frame[column].astype(float).clip(lower=0.0))
    numeric = (
        "account_fit", *(f"log_{c}" for c in SKEWED), "roles_covered", *(role_column(r.name) for r in spec.roles),
        "people", "engaged_people", "active_people", "people_in_mql", "people_in_sql", "days_since_activity",
        "best_lead_fit", "best_lead_score",
    )  # fmt: skip
    features = FeatureSpec(numeric)  # the account's industry and country are in its fit: as categories they add noise
    labels = frame.pop("label").to_numpy(dtype=int)
    return AccountSet(frame, labels, features, within_days, cutoffs, {"in_a_deal": left_out})


def mqa_bar_met(spec: AccountSpec, frame: pd.DataFrame) -> np.ndarray:
    """Whether each row clears the model's MQA bar (every bar it gives) with its scores at its cutoff."""
    bar = spec.mqa
    met = np.ones(len(frame), dtype=bool)
    if bar is None:
        return np.zeros(len(frame), dtype=bool)
    for limit, column in (
        (bar.fit, "account_fit"),
        (bar.engagement, "account_engagement"),
        (bar.roles, "roles_covered"),
    ):
        if limit is not None:
            met &= frame[column].to_numpy(dtype=float) >= limit
    return met


def _spec_of(model: ScoringModel) -> AccountSpec:
    if model.accounts is None:
        raise InvalidInput(
            f"the scoring model {model.version} has no accounts section: it scores no accounts", field="accounts"
        )
    return model.accounts


def _people(sources: Sources) -> pd.DataFrame:
    leads = sources.leads.filter(sources.leads.account_id.notnull())
    if "erased_at" in leads.columns:
        leads = leads.filter(leads.erased_at.isnull())
    frame = leads.select(lead_id=leads.id, account_id=leads.account_id, created_at=leads.created_at).to_pandas()
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def _account_fields(sources: Sources) -> pd.DataFrame:
    accounts = sources.accounts
    frame = accounts.select(
        account_id=accounts.id, employees=accounts.employees, industry=accounts.industry, country=accounts.country
    ).to_pandas()
    return frame.set_index("account_id")


def _rows_at(
    spec: AccountSpec,
    persons: pd.DataFrame,
    scores: pd.DataFrame,
    people: pd.DataFrame,
    history: pd.DataFrame,
    accounts: pd.DataFrame,
    at: pd.Timestamp,
    within_days: int,
) -> tuple[pd.DataFrame, int]:
    """One cutoff's rows from its people (`people_at_cutoffs`) and account scores, and how many
    accounts were left out for being in a deal then."""
    persons = persons[persons["created_at"] <= at].copy()
    known = history[history["at"] <= at]
    persons["stage"] = known.groupby("lead_id")["to_stage"].last().reindex(persons["lead_id"]).to_numpy()
    persons["score"] = persons["fit"] + persons["engagement"]
    persons["engaged"] = persons["engagement"] >= spec.min_engagement
    persons["active"] = persons["recent"] > 0
    grouped = persons.groupby("account_id")
    rolled = pd.DataFrame(
        {
            "people": grouped.size(),
            "engaged_people": grouped["engaged"].sum(),
            "active_people": grouped["active"].sum(),
            "people_in_mql": grouped["stage"].agg(lambda s: int((s == "mql").sum())),
            "people_in_sql": grouped["stage"].agg(lambda s: int((s == "sql").sum())),
            "in_a_deal": grouped["stage"].agg(lambda s: bool(s.isin(IN_A_DEAL).any())),
            "events_recent": grouped["recent"].sum(),
            "last_activity": grouped["last_at"].max(),
            "best_lead_fit": grouped["fit"].max(),
            "best_lead_engagement": grouped["engagement"].max(),
            "best_lead_score": grouped["score"].max(),
            "engagement_uncapped": grouped["engagement"].sum(),
        }
    )
    in_deal = int(rolled["in_a_deal"].sum())
    rolled = rolled[~rolled["in_a_deal"]].drop(columns="in_a_deal")
    scores = scores.set_index("account_id")
    roles = {role_column(r.name): scores[f"role_{i}"].astype(int) for i, r in enumerate(spec.roles)}
    own = pd.DataFrame(
        {"account_fit": scores["fit"], "account_engagement": scores["engagement"], "roles_covered": scores["covered"]}
        | roles
    )
    rows = rolled.join(own, how="left").join(accounts, how="left")
    last = pd.to_datetime(rows.pop("last_activity"), utc=True)
    since = (at - last).dt.total_seconds() / 86_400
    rows["days_since_activity"] = since.fillna(NEVER_ACTIVE_DAYS).to_numpy(dtype=float)
    rows["label"] = _opened(people, history, rows.index, at, within_days)
    rows.index.name = "account_id"
    rows = rows.reset_index()
    rows.insert(1, "cutoff", at)
    rows["mqa"] = mqa_bar_met(spec, rows)
    return rows, in_deal


def _opened(people: pd.DataFrame, history: pd.DataFrame, accounts: pd.Index, at: pd.Timestamp, within: int) -> Any:
    """1 where one of the account's people entered the opportunity stage in (at, at + within days]."""
    window = history[
        (history["to_stage"] == TARGET) & (history["at"] > at) & (history["at"] <= at + pd.Timedelta(days=within))
    ]
    opened = set(people[people["lead_id"].isin(window["lead_id"])]["account_id"])
    return np.asarray([1 if account in opened else 0 for account in accounts], dtype=int)
