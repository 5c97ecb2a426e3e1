"""Learned points: a points scorecard fitted on the history, written as a scoring model to read and edit.

`learn_points` turns a training set (features.py) into a scoring model YAML document whose rules
a marketer can read, argue with and change: fit rules for who the lead is, engagement rules for
what it does, MQL thresholds for when it goes to sales. The choices, in order:

**Which rows.** The rows are cut by cutoff time as `train` cuts them (training.py `time_split`):
the points are learnt from the oldest 60 % and the middle 20 %; the newest 20 % are left
untouched, so that the caller can judge the learned model beside the current one on leads that
came after the ones it learnt from. Both sets of rows and their periods are recorded.

**One regression.** One L2-regularised logistic regression over both parts at once, so that a
profile value and a behaviour that go together do not both get the credit:

- who the lead is: each categorical profile column (`seniority`, `department`, `country`,
  `source`, `channel`, `account_industry`, `account_country`) one-hot, values compared as the
  model's conditions compare them (case and surrounding space ignored); values seen on fewer than
  `MIN_COUNT` fitting rows are pooled into one "another value" level, and an empty value is a
  level of its own when it is that common. The account numbers (`account_employees`,
  `account_revenue`) are cut at their quartiles, each edge rounded to a readable number (150,
  400, 1,000; 25M), an unknown number being a level too;
- what it does: per event kind of the recipe, log(1 + the number of its events before the
  cutoff); per content item of the recipe, whether the lead engaged with it (0/1). These
  coefficients are held at 0 or above (one that comes out negative is fixed at 0 and the rest
  refitted, until none is): **engagement points are awards**. What lowers the odds is left to fit
  and to the disqualify rules, which are the current model's.

The strength of the penalty is chosen as `train` chooses its model: fitted on the oldest 60 %
for each of `PENALTIES`, the one whose log-odds rank the middle 20 % best (ROC AUC) is refitted
on both.

**Points.** points = round(coefficient × scale): `scale` points per unit of log-odds, shared by
fit and engagement, so that fit + engagement (the rule score) ranks leads as the regression's
log-odds do, up to rounding, caps, decay and the 0–100 bounds of fit. By default (`scale=None`)
the scale is the one at which the 99th percentile of the fitting leads' fit is 100, so fit
spreads over 0–100; a given scale is lowered to that one where fit would overflow.

- Fit: within a column the levels are shifted so that the lowest scores 0 (each column is a full
  partition of the leads, so a constant per column changes no ranking) and a level whose points
  round to 0 gets no rule; the pooled level is written with `not_in` the named values. The least
  fitting lead scores 0, so the lower bound never bites. The rules are shared (`fit.rules`); the
  loader wants a persona, so there is one, `learned`, with no rules of its own.
- Grades: on the fitting leads' learned fit, the top 15 % are A, the next 25 % B, the next 30 %
  C, the rest D (the integer thresholds whose shares come closest).
- Engagement per event kind: the term β·log(1 + n) becomes points per event β·scale·log(1 + m)/m,
  m the median count of the leads that had the kind (exact at m), with a total `cap` of
  β·scale·log(1 + the 90th percentile count) so that more events add less, as the logarithm does.
  Where the current model caps the kind per day, the learned rule counts as many events a day.
  Per content item, points given `once` (the feature was 0/1), for events whose property that
  named the item (`content_where`) equals it. Every rule decays with the current model's default
  half-life.

**Policy.** The current model's policy is kept (fast track, requalifying, decay-out, probability
thresholds), as are its disqualify rules and handoff section. Only the engagement thresholds of
the MQL matrix change, for the grades that have one now: a lead becomes MQL when its engagement
reaches S − (the mean learned fit of its grade), in effect when fit + engagement reaches S, with
S chosen so that on the fitting rows as many leads are at or over their threshold as are over the
current model's under the current scores. Fast track and probability thresholds are left out of
that count: both models share them, and a training set holds no probability. The two models can
then be compared by precision at equal MQL volume. The decay-out floor and the requalify margin are scaled as the thresholds were (the floor
stays below the lowest). With `sources`, the learned engagement of the fitting rows is computed
exactly (the training set rebuilt with the learned rules); without, it is estimated from the
counts (each lead's points decayed over half its age at the cutoff, per-day caps ignored).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from typing import Any

import ibis
import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score

from qualify.analytics.batch_evaluator import Sources, value_text
from qualify.domain.conditions import Condition
from qualify.domain.content import CONTENT_KEYS
from qualify.domain.errors import InvalidInput
from qualify.domain.fit import FIT_MAX
from qualify.domain.model_loader import WEEKDAYS, load_model
from qualify.domain.scoring_model import GRADES, HandoffSpec, Policy, ScoringModel
from qualify.predictive.features import TrainingSet, scores_at_cutoffs
from qualify.predictive.training import time_split

# Profile columns of the training frame -> the field a fit rule tests, and how its rules read.
CATEGORIES: dict[str, tuple[str, str]] = {
    "seniority": ("seniority", "seniority"),
    "department": ("department", "department"),
    "country": ("country", "country"),
    "source": ("source", "source"),
    "channel": ("channel", "channel"),
    "account_industry": ("account.industry", "account industry"),
    "account_country": ("account.country", "account country"),
}
NUMBERS: dict[str, tuple[str, str]] = {
    "account_employees": ("account.employees", "account employees"),
    "account_revenue": ("account.revenue", "account revenue"),
}
MIN_COUNT = 20  # a value seen on fewer fitting rows is pooled
NUMBER_BINS = 4  # quartiles
PENALTIES = (0.01, 0.03, 0.1, 0.3, 1.0)  # candidate C (inverse L2 strength, as scikit-learn's)
DEFAULT_PENALTY = 0.1  # when the middle part cannot choose (one outcome only)
GRADE_SHARES = {"A": 0.15, "B": 0.40, "C": 0.70}  # cumulative: top 15 % A, next 25 % B, next 30 % C
FIT_QUANTILES = (0.01, 0.99)  # fit spreads these quantiles of the fitting leads over 0-100
CAP_QUANTILE = 0.9
MISSING = "(missing)"
OTHER = "(other)"
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass
class LearnedPoints:
    """A learned scoring model: its YAML text, the model loaded from it, and how it was made.
    `details` is JSON-able: rows and periods, points and coefficients, grades and thresholds."""

    document: str
    model: ScoringModel
    details: dict[str, Any]
    fitting_rows: np.ndarray = field(repr=False)  # positions in the training frame learnt from
    held_out_rows: np.ndarray = field(repr=False)  # the newest 20 %, left to judge on


@dataclass
class _Level:
    """One value (or bin) of one profile column, and the rule that gives it points."""

    column: str
    value: str
    name: str
    when: list[dict[str, Any]]
    mask: np.ndarray  # the fitting rows that have it


@dataclass
class _Behaviour:
    """One engagement feature: an event kind (counted) or a content item (engaged or not)."""

    column: str
    event: str
    item: str | None  # what the content item was about; None for a kind
    values: np.ndarray  # the regression's input on the fitting rows


# --- content items -----------------------------------------------------------------------------


def content_where(key: str, value: str) -> dict[str, Any]:
    """The `where` of an engagement rule for a content item whose value came from property `key`
    (one of CONTENT_KEYS): that property equals the value. An event that also has a property
    listed before `key` was another item in the training set, but matches this rule too."""
    if key not in CONTENT_KEYS:
        raise InvalidInput(f"unknown content key {key!r}; expected one of: {', '.join(CONTENT_KEYS)}", field="key")
    return {key: value}


def guess_content_key(event: str, value: str) -> str:
    """Which property most likely named a content item, without data to look at: `url` for a path
    or an address, `webinar_id` for webinar events, `campaign` for email events, else
    `content_id`. `learn_points` looks in the data instead when it has `sources`."""
    if value.startswith(("/", "http://", "https://")):
        return "url"
    if "webinar" in event:
        return "webinar_id"
    if event.startswith("email_") or event in ("bounce", "unsubscribe"):
        return "campaign"
    return "content_id"


def content_keys_in(sources: Sources, items: Sequence[str]) -> dict[str, str]:
    """For each content item ("page_view:/pricing"), the property its value came from in the data:
    the first present of CONTENT_KEYS, as `content_item` reads it (the most frequent, should the
    same item come from several)."""
    wanted = [item.split(":", 1) for item in items if ":" in item]
    if not wanted:
        return {}
    events = sources.events.filter(sources.events.type.isin(sorted({event for event, _ in wanted})))
    values = [value_text(events.properties, key) for key in CONTENT_KEYS]
    key = ibis.cases(*((v.notnull(), k) for v, k in zip(values, CONTENT_KEYS, strict=True)), else_=ibis.null("string"))
    tagged = events.select(event=events.type, value=ibis.coalesce(*values), key=key)
    tagged = tagged.filter(tagged.value.isin(sorted({value for _, value in wanted})))
    counted = tagged.group_by(["event", "value", "key"]).aggregate(n=tagged.count())
    found: dict[str, tuple[int, str]] = {}
    for row in counted.to_pyarrow().to_pylist():
        item = f"{row['event']}:{row['value']}"
        if row["key"] is not None and row["n"] > found.get(item, (0, ""))[0]:
            found[item] = (row["n"], row["key"])
    asked = set(items)
    return {item: k for item, (_, k) in found.items() if item in asked}


# --- profile levels ----------------------------------------------------------------------------


def _clean(value: Any) -> str | None:
    """A profile value as the model's conditions see it: text, stripped; blank is empty (None)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _category_levels(frame: pd.DataFrame, column: str, min_count: int) -> list[_Level]:
    """The values seen at least `min_count` times, empty when it is that common, and the rest
    pooled: a full partition of the rows (none when fewer than two levels)."""
    field_name, label = CATEGORIES[column]
    values = [_clean(v) for v in frame[column].tolist()]
    keys = [v.casefold() if v is not None else MISSING for v in values]
    folded = np.array(keys, dtype=object)
    counts = Counter(keys)
    spelled: dict[str, str] = {}  # the commonest spelling of each value
    for (key, value), _ in Counter((k, v) for k, v in zip(keys, values, strict=True) if v is not None).most_common():
        spelled.setdefault(key, value)
    named = sorted(k for k, n in counts.items() if k != MISSING and n >= min_count)
    levels = [
        _Level(
            column, spelled[k], f"{label} is {spelled[k]}", [{"field": field_name, "equals": spelled[k]}], folded == k
        )
        for k in named
    ]
    empty_named = counts.get(MISSING, 0) >= min_count
    if empty_named:
        empty = [{"field": field_name, "exists": False}]
        levels.append(_Level(column, MISSING, f"{label} is empty", empty, folded == MISSING))
    rest = ~np.isin(folded, [*named, *([MISSING] if empty_named else [])])
    when: list[dict[str, Any]] = []
    if named:
        when.append({"field": field_name, "not_in": [spelled[k] for k in named]})
    if empty_named:
        when.append({"field": field_name, "exists": True})
    if rest.any() and when:
        or_empty = " or empty" if (rest & (folded == MISSING)).any() else ""
        levels.append(_Level(column, OTHER, f"{label} is another value{or_empty}", when, rest))
    return levels if len(levels) > 1 else []


def nice_number(value: float) -> float:
    """`value` rounded to a readable number: 1, 1.5, 2, 2.5, 3, 4, 5, 6, 7.5 or 8 times a power of 10.

    >>> nice_number(147.5), nice_number(360), nice_number(1007.5), nice_number(24_300_000)
    (150.0, 400.0, 1000.0, 25000000.0)
    """
    if value <= 0 or not math.isfinite(value):
        return 0.0
    power = 10.0 ** math.floor(math.log10(value))
    best = min((1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5, 8.0, 10.0), key=lambda s: abs(s * power - value))
    return float(round(best * power, 6))


def _number_text(value: float) -> str:
    if abs(value) >= 1e9:
        return f"{value / 1e9:.3g}B"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _plain(value: float) -> int | float:
    """A number as the YAML should show it: 200, not 200.0."""
    return int(value) if float(value).is_integer() else float(value)


def _edges(known: np.ndarray, min_count: int, bins: int) -> list[float]:
    """Quantile edges rounded to readable numbers; a bin with fewer than `min_count` rows is
    merged into its smaller neighbour."""
    if len(known) < 2 * min_count:
        return []
    quantiles = np.quantile(known, [i / bins for i in range(1, bins)])
    edges = sorted({nice_number(float(q)) for q in quantiles} - {0.0})
    while edges:
        sizes = np.bincount(np.searchsorted(edges, known, side="right"), minlength=len(edges) + 1)
        small = int(np.argmin(sizes))
        if sizes[small] >= min_count:
            break
        if small == 0:
            edges.pop(0)
        elif small == len(edges) or sizes[small - 1] <= sizes[small + 1]:
            edges.pop(small - 1)
        else:
            edges.pop(small)
    return edges


def _number_levels(frame: pd.DataFrame, column: str, min_count: int, bins: int = NUMBER_BINS) -> list[_Level]:
    """Bins with readable edges (ranges are inclusive, so each stops just below the next edge:
    1 below for whole numbers, 0.01 otherwise), and unknown: a full partition of the rows."""
    field_name, label = NUMBERS[column]
    numbers = pd.to_numeric(frame[column], errors="coerce").astype(float).to_numpy()
    present = ~np.isnan(numbers)
    known = numbers[present]
    edges = _edges(known, min_count, bins)
    step = 1.0 if np.all(known == np.round(known)) else 0.01
    levels = []
    if edges:
        for low, high in zip([None, *edges], [*edges, None], strict=True):
            top = None if high is None else high - step
            arg: Any
            if low is None:
                assert high is not None and top is not None
                name, arg = f"under {_number_text(high)}", {"max": _plain(top)}
            elif top is None:
                name, arg = f"{_number_text(low)} or more", {"min": _plain(low)}
            else:
                name, arg = f"{_number_text(low)}–{_number_text(top)}", [_plain(low), _plain(top)]
            filled = np.where(present, numbers, 0.0)
            mask = (
                present & (filled >= (-np.inf if low is None else low)) & (filled <= (np.inf if top is None else top))
            )
            levels.append(_Level(column, name, f"{label} {name}", [{"field": field_name, "range": arg}], mask))
    if (~present).any():
        unknown = [{"field": field_name, "exists": False}]
        levels.append(_Level(column, MISSING, f"{label} unknown", unknown, ~present))
    return levels if len(levels) > 1 else []


# --- the regression ----------------------------------------------------------------------------


def _fit_logistic(matrix: np.ndarray, labels: np.ndarray, awards: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """L2 logistic regression whose `awards` columns are held at 0 or above: a column whose
    coefficient comes out negative is fixed at 0 and the rest refitted, until none is."""
    from sklearn.linear_model import LogisticRegression

    active = np.ones(matrix.shape[1], dtype=bool)
    while True:
        coefficients = np.zeros(matrix.shape[1])
        if not active.any():
            rate = float(np.clip(labels.mean(), 1e-6, 1 - 1e-6))
            return coefficients, math.log(rate / (1 - rate))
        fitted = LogisticRegression(C=c, max_iter=5000).fit(matrix[:, active], labels)
        coefficients[active] = fitted.coef_[0]
        negative = awards & active & (coefficients < 0)
        if not negative.any():
            return coefficients, float(fitted.intercept_[0])
        active &= ~negative


def _choose_penalty(
    matrix: np.ndarray, labels: np.ndarray, awards: np.ndarray, early: np.ndarray
) -> tuple[float, dict[str, float]]:
    """The C whose fit on the `early` rows ranks the others best (ROC AUC; the stronger penalty on a tie)."""
    late = ~early
    if not (0 < labels[late].sum() < late.sum()) or not (0 < labels[early].sum() < early.sum()):
        return DEFAULT_PENALTY, {}
    auc: dict[float, float] = {}
    for c in PENALTIES:
        coefficients, intercept = _fit_logistic(matrix[early], labels[early], awards, c)
        auc[c] = round(float(roc_auc_score(labels[late], matrix[late] @ coefficients + intercept)), 4)
    chosen = max(PENALTIES, key=lambda c: (auc[c], -c))
    return chosen, {str(c): a for c, a in auc.items()}


# --- writing YAML ------------------------------------------------------------------------------


class _Flow(dict[str, Any]):
    """A mapping written on one line: `{field: seniority, equals: vp}`."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)  # lists indented under their key, as the default model is


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


_Dumper.add_representer(_Flow, _represent_flow)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _styled(value: Any, key: str = "") -> Any:
    """Conditions, `where` and small mappings of plain values on one line; rules and sections as blocks."""
    if isinstance(value, list):
        return [_styled(v, key) for v in value]
    if not isinstance(value, dict):
        return value
    inner = {str(k): _styled(v, str(k)) for k, v in value.items()}
    plain = all(_scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v)) for v in inner.values())
    if inner and ("field" in inner or key == "where" or (plain and "name" not in inner)):
        return _Flow(inner)
    return inner


def _condition_doc(condition: Condition, *, with_field: bool = True) -> Any:
    if condition.op == "range":
        low, high = condition.value
        arg: Any = {k: _plain(v) for k, v in (("min", low), ("max", high)) if v is not None}
    elif condition.op in ("in", "not_in"):
        arg = list(condition.value)
    else:
        arg = condition.value
    if not with_field:
        return arg if condition.op == "equals" and _scalar(arg) else {condition.op: arg}
    return {"field": condition.field, condition.op: arg}


def _when_doc(conditions: Sequence[Condition]) -> Any:
    written = [_condition_doc(c) for c in conditions]
    return written[0] if len(written) == 1 else written


def _where_doc(conditions: Sequence[Condition]) -> dict[str, Any]:
    return {c.field: _condition_doc(c, with_field=False) for c in conditions}


def _policy_doc(policy: Policy) -> dict[str, Any]:
    mql: dict[str, Any] = {"thresholds": {g: _plain(t) for g, t in policy.mql_thresholds.items()}}
    if policy.requalify_margin:
        mql["requalify_margin"] = _plain(policy.requalify_margin)
    if policy.requalify_after_days:
        mql["requalify_after_days"] = _plain(policy.requalify_after_days)
    if policy.mql_probability:
        mql["probability"] = {g: _plain(p) for g, p in policy.mql_probability.items()}
    if policy.combine != "any":
        mql["combine"] = policy.combine
    out: dict[str, Any] = {"mql": mql}
    if policy.fast_track:
        out["fast_track"] = [
            {
                "event": f.events[0] if len(f.events) == 1 else list(f.events),
                "to": f.to,
                **({"where": _where_doc(f.where)} if f.where else {}),
            }
            for f in policy.fast_track
        ]
    if policy.decay_out_floor is not None:
        out["decay_out"] = {"floor": _plain(policy.decay_out_floor), "min_days_in_mql": _plain(policy.min_days_in_mql)}
    return out


def _clock(at: time | None) -> str:
    return "24:00" if at is None else f"{at.hour:02d}:{at.minute:02d}"


def _handoff_doc(handoff: HandoffSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if handoff.account_owner_first:
        out["account_owner_first"] = True
    if handoff.teams:
        out["teams"] = {
            team.name: [
                rep.name
                if rep.capacity_per_week is None
                else {"name": rep.name, "capacity_per_week": rep.capacity_per_week}
                for rep in team.reps
            ]
            for team in handoff.teams
        }
    if handoff.rules:
        out["rules"] = [
            {"name": r.name, "when": _when_doc(r.conditions), **({"team": r.team} if r.team else {"owner": r.owner})}
            for r in handoff.rules
        ]
    if handoff.default_team:
        out["default_team"] = handoff.default_team
    if handoff.sla is not None:
        sla: dict[str, Any] = {"hours": _plain(handoff.sla.hours)}
        hours = handoff.sla.business_hours
        if hours is not None:
            sla["business_hours"] = {
                "days": [WEEKDAYS[d - 1] for d in sorted(hours.days)],
                "start": _clock(hours.start),
                "end": _clock(hours.end),
                "timezone": hours.timezone,
            }
        out["sla"] = sla
    return out


def _kept_sections(current: ScoringModel, document: str | None) -> dict[str, Any]:
    """The current model's disqualify, policy and handoff sections as data: from its YAML text when
    given (as written), else rebuilt from the loaded model (its `source` names where it came
    from; it does not hold the text)."""
    if document is not None:
        data = yaml.safe_load(document)
        if not isinstance(data, dict) or not isinstance(data.get("policy"), dict):
            raise InvalidInput("the current model's document has no policy section", field="current_document")
        return {k: data[k] for k in ("disqualify", "policy", "handoff") if data.get(k) is not None}
    kept: dict[str, Any] = {}
    if current.disqualify:
        kept["disqualify"] = [
            {"name": r.name, "when": _when_doc(r.conditions), "reason": r.reason} for r in current.disqualify
        ]
    kept["policy"] = _policy_doc(current.policy)
    if current.handoff is not None:
        kept["handoff"] = _handoff_doc(current.handoff)
    return kept


# --- times -------------------------------------------------------------------------------------


def _instant(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s")) + "Z"
    return str(value.isoformat()) if hasattr(value, "isoformat") else str(value)


def _period(times: np.ndarray, rows: np.ndarray) -> list[str] | None:
    """The earliest and latest cutoff of some rows, ISO text."""
    if not len(rows):
        return None
    chosen = list(times[rows])
    return [_instant(min(chosen)), _instant(max(chosen))]


# --- thresholds --------------------------------------------------------------------------------


def _grade_bands(scores: np.ndarray) -> dict[str, int]:
    """The integer A, B, C thresholds whose shares of `scores` at or above come closest to
    GRADE_SHARES (the lower on a tie), made to fall strictly."""
    candidates = np.arange(0, int(np.ceil(scores.max(initial=0.0))) + 2)
    shares = np.array([(scores >= t).mean() for t in candidates])
    out = {letter: int(candidates[np.argmin(np.abs(shares - share))]) for letter, share in GRADE_SHARES.items()}
    out["B"] = max(out["B"], out["C"] + 1)
    out["A"] = max(out["A"], out["B"] + 1)
    return out


def _grade_of(scores: np.ndarray, bands: Mapping[str, float]) -> np.ndarray:
    return np.where(
        scores >= bands["A"], "A", np.where(scores >= bands["B"], "B", np.where(scores >= bands["C"], "C", "D"))
    )


def _qualified(engagement: np.ndarray, grades: np.ndarray, thresholds: Mapping[str, float]) -> np.ndarray:
    """Whose engagement reaches the MQL threshold of its grade (a grade without one never does)."""
    limit = np.array([thresholds.get(str(g), np.inf) for g in grades], dtype=float)
    return np.asarray(engagement >= limit)


def _mql_thresholds(
    engagement: np.ndarray,
    grades: np.ndarray,
    fit: np.ndarray,
    bands: Mapping[str, float],
    which: Sequence[str],
    target: float,
) -> tuple[dict[str, int], int, float]:
    """Thresholds S − (mean fit of the grade) for the grades in `which`, at least 1, with the
    integer S whose share of rows at or over their threshold comes closest to `target`."""
    band = {
        "A": (bands["A"], FIT_MAX),
        "B": (bands["B"], bands["A"]),
        "C": (bands["C"], bands["B"]),
        "D": (0.0, bands["C"]),
    }
    mean_fit = {g: float(fit[grades == g].mean()) if (grades == g).any() else sum(band[g]) / 2 for g in which}
    lowest = math.floor(min(mean_fit.values()))
    highest = math.ceil(max(mean_fit.values()) + engagement.max(initial=0.0)) + 2
    best: tuple[float, int, dict[str, int], float] | None = None
    for level in range(lowest, highest + 1):
        thresholds = {g: max(1, round(level - mean_fit[g])) for g in which}
        share = float(_qualified(engagement, grades, thresholds).mean())
        if best is None or abs(share - target) < best[0] - 1e-12:
            best = (abs(share - target), level, thresholds, share)
    assert best is not None
    return best[2], best[1], best[3]


# --- learning ----------------------------------------------------------------------------------


def learn_points(
    rows: TrainingSet,
    current: ScoringModel,
    *,
    scale: float | None = None,
    sources: Sources | None = None,
    current_document: str | None = None,
    content_keys: Mapping[str, str] | None = None,
    min_count: int = MIN_COUNT,
) -> LearnedPoints:
    """Learn a points scorecard from the older 80 % of `rows` (a training set built with the
    `current` model) and write it as a scoring model; see the module doc for every choice.

    `scale`: points per unit of log-odds (None: the scale at which fit spreads over 0–100).
    `sources`: the data `rows` came from; makes the MQL thresholds exact and tells which event
    property names each content item. `current_document`: the current model's YAML text, whose
    disqualify, policy and handoff sections are then copied as written (else rebuilt from
    `current`). `content_keys`: content item ("page_view:/pricing") -> the property that names it.
    """
    if scale is not None and scale <= 0:
        raise InvalidInput(f"scale must be above 0, got {scale:g}", field="scale")
    labels, times = rows.labels, rows.times
    old, middle, new = time_split(times)
    fitting = np.sort(np.concatenate([old, middle]))
    y = labels[fitting]
    if y.sum() < 10 or len(y) - y.sum() < 10:
        raise InvalidInput(
            f"{int(y.sum())} positive rows of {len(y)} to learn from: need at least 10 of each outcome", field="labels"
        )
    part = rows.frame.iloc[fitting].reset_index(drop=True)

    levels = [lv for column in CATEGORIES if column in part.columns for lv in _category_levels(part, column, min_count)]
    levels += [lv for column in NUMBERS if column in part.columns for lv in _number_levels(part, column, min_count)]
    behaviours = _behaviours(rows, part)
    if not behaviours:
        raise InvalidInput("the training set has no event counts to learn engagement points from", field="rows")
    matrix = np.column_stack([lv.mask.astype(float) for lv in levels] + [b.values for b in behaviours])
    awards = np.arange(matrix.shape[1]) >= len(levels)
    penalty, choice = _choose_penalty(matrix, y, awards, np.isin(fitting, old))
    coefficients, intercept = _fit_logistic(matrix, y, awards, penalty)
    profile, behaviour = coefficients[: len(levels)], coefficients[len(levels) :]

    level_matrix = matrix[:, : len(levels)]
    fit_points, used_scale = _fit_points(levels, level_matrix, profile, scale)
    fit_score = np.clip(level_matrix @ fit_points, 0.0, FIT_MAX) if levels else np.zeros(len(part))
    bands = _grade_bands(fit_score)
    fit_rules = [
        {"name": lv.name, "when": lv.when[0] if len(lv.when) == 1 else lv.when, "points": int(p)}
        for lv, p in zip(levels, fit_points, strict=True)
        if p != 0
    ]

    # Engagement.
    keys = dict(content_keys or {})
    unknown = [f"{b.event}:{b.item}" for b in behaviours if b.item is not None and f"{b.event}:{b.item}" not in keys]
    if sources is not None and unknown:
        keys |= content_keys_in(sources, unknown)
    engagement_rules, award_details, estimate = _engagement_rules(behaviours, behaviour, used_scale, current, keys)
    if not engagement_rules:
        raise InvalidInput("no behaviour raised the odds of converting: no engagement rule to write", field="rows")

    kept = _kept_sections(current, current_document)
    engagement: dict[str, Any] = {}
    if current.default_half_life_days is not None:
        engagement["half_life_days"] = _plain(current.default_half_life_days)
    engagement["rules"] = engagement_rules
    doc: dict[str, Any] = {
        "name": f"{current.name} (learned points)",
        "description": (
            f"Points learnt from {len(fitting)} leads, on which of them reached {rows.target} within "
            f"{rows.within_days} days of their cutoff ({rows.cutoff}). A starting point to read and edit."
        ),
        "fit": {
            "grades": bands,
            "rules": fit_rules,
            "personas": [
                {
                    "name": "learned",
                    "description": "Every lead, scored by the shared rules learnt from the history (this persona adds none).",
                    "rules": [],
                }
            ],
        },
        "engagement": engagement,
        **({"disqualify": kept["disqualify"]} if "disqualify" in kept else {}),
        "policy": kept["policy"],
        **({"handoff": kept["handoff"]} if "handoff" in kept else {}),
    }
    header = _header(rows, fitting, new, used_scale)

    # MQL thresholds: as many fitting leads over threshold as under the current model and scores.
    which = [g for g in GRADES if g in current.policy.mql_thresholds]
    current_grades = (
        part["fit_grade"].fillna("D").astype(str).to_numpy() if "fit_grade" in part else np.full(len(part), "D")
    )
    target = float(_qualified(_numbers(part, "engagement_score"), current_grades, current.policy.mql_thresholds).mean())
    learned_grades = _grade_of(fit_score, bands)
    if sources is not None:
        draft = load_model(_render(header, doc), "learned points (draft)")
        # The training set's score columns under the draft, for the fitting rows alone: its other
        # features do not depend on the scoring model, and are not built again.
        by_lead = scores_at_cutoffs(draft, sources, part[["lead_id", "cutoff"]])
        ids = part["lead_id"].to_numpy()
        learned_engagement = by_lead["engagement_score"].reindex(ids).fillna(0.0).to_numpy(dtype=float)
        learned_grades = by_lead["fit_grade"].reindex(ids).fillna("D").astype(str).to_numpy()
        fit_score = by_lead["fit_score"].reindex(ids).fillna(0.0).to_numpy(dtype=float)
        how = "computed: the training set rebuilt with the learned rules"
    else:
        half_life = current.default_half_life_days
        decay = np.power(2.0, -_numbers(part, "days_since_created") / 2 / half_life) if half_life else 1.0
        learned_engagement = estimate * decay
        how = "estimated from the counts: decayed over half the lead's age, per-day caps ignored"
    if which:
        thresholds, level, share = _mql_thresholds(learned_engagement, learned_grades, fit_score, bands, which, target)
        _set_thresholds(doc["policy"], thresholds, {g: current.policy.mql_thresholds[g] for g in which})
    else:  # only probability thresholds: nothing to match
        thresholds, level, share = {}, 0, 0.0

    document = _render(header, doc)
    model = load_model(document, "learned points")
    details: dict[str, Any] = {
        "target": rows.target,
        "within_days": rows.within_days,
        "cutoff": rows.cutoff,
        "rows": {
            "all": len(labels),
            "positives": int(labels.sum()),
            "fitting": len(fitting),
            "fitting_positives": int(y.sum()),
            "held_out": len(new),
            "held_out_positives": int(labels[new].sum()),
        },
        "periods": {"fitting": _period(times, fitting), "held_out": _period(times, new)},
        "regression": {
            "penalty_c": penalty,
            "choice_auc": choice,
            "intercept": round(intercept, 4),
            "min_count": min_count,
        },
        "scale": {"asked": scale, "used": round(used_scale, 4)},
        "fit": {
            "points": _by_column(levels, [int(p) for p in fit_points]),
            "coefficients": _by_column(levels, [round(float(b), 4) for b in profile]),
            "grades": bands,
            "grade_shares": {g: round(float((learned_grades == g).mean()), 4) for g in GRADES},
        },
        "engagement": {
            "points": award_details,
            "coefficients": {
                (b.column if b.item is None else f"{b.event}:{b.item}"): round(float(beta), 4)
                for b, beta in zip(behaviours, behaviour, strict=True)
            },
        },
        "policy": {
            "mql_thresholds": thresholds,
            "rule_score_level": level,
            "current_mql_share": round(target, 4),
            "learned_mql_share": round(share, 4),
            "learned_engagement": how,
        },
    }
    return LearnedPoints(document, model, details, fitting, new)


def _fit_points(
    levels: Sequence[_Level], level_matrix: np.ndarray, coefficients: np.ndarray, scale: float | None
) -> tuple[np.ndarray, float]:
    """Integer points per level, and the scale used (module doc): per column, levels over the
    column's lowest, times the scale, less the column's share of the offset that brings the
    lowest 1 % of the fitting leads to 0."""
    if not levels:
        return np.zeros(0, dtype=int), scale or 10.0
    columns = np.array([lv.column for lv in levels])
    shifted = coefficients.copy()
    for column in set(columns.tolist()):
        shifted[columns == column] -= shifted[columns == column].min()
    raw = level_matrix @ shifted
    low, high = (float(q) for q in np.quantile(raw, FIT_QUANTILES))
    most = FIT_MAX / (high - low) if high > low else 10.0
    used = most if scale is None else min(scale, most)
    spans = {column: float(shifted[columns == column].max()) for column in set(columns.tolist())}
    total = sum(spans.values())
    take = {column: round(low * used * span / total) if total > 0 else 0 for column, span in spans.items()}
    points = np.round(shifted * used).astype(int) - np.array([take[column] for column in columns], dtype=int)
    return points, used


def _behaviours(rows: TrainingSet, part: pd.DataFrame) -> list[_Behaviour]:
    """log(1 + count) per event kind, 0/1 per content item: the recipe's, where the frame has them
    and the event type is one a model can name."""
    out = []
    for slug, kind in rows.recipe.kinds.items():
        name = f"events_{slug}"
        if name in part.columns and _EVENT_TYPE.fullmatch(kind):
            out.append(_Behaviour(name, kind, None, np.log1p(np.clip(_numbers(part, name), 0.0, None))))
    for name, item in rows.recipe.items.items():
        kind, _, value = item.partition(":")
        if name in part.columns and value and _EVENT_TYPE.fullmatch(kind):
            out.append(_Behaviour(name, kind, value, (_numbers(part, name) > 0).astype(float)))
    return out


def _engagement_rules(
    behaviours: Sequence[_Behaviour],
    coefficients: np.ndarray,
    scale: float,
    current: ScoringModel,
    keys: Mapping[str, str],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], np.ndarray]:
    """The engagement rules (module doc), what each gives, and the undecayed engagement they
    would give each fitting row (per-day caps aside)."""
    per_day = _events_per_day(current)
    rules: list[dict[str, Any]] = []
    details: dict[str, dict[str, Any]] = {}
    estimate = np.zeros(len(behaviours[0].values)) if behaviours else np.zeros(0)
    for b, beta in zip(behaviours, coefficients, strict=True):
        rule: dict[str, Any]
        if b.item is None:
            counts = np.expm1(b.values)
            had = counts[counts > 0]
            if beta <= 0 or not len(had):
                continue
            typical = float(np.median(had))
            points = round(beta * scale * math.log1p(typical) / typical)
            if points <= 0:
                continue
            rule = {"name": b.event, "event": b.event, "points": points}
            cap = round(beta * scale * math.log1p(float(np.quantile(had, CAP_QUANTILE))))
            if cap > points:
                rule["cap"] = cap
            daily = round(points * per_day[b.event]) if b.event in per_day else None
            if daily is not None and points <= daily < rule.get("cap", math.inf):
                rule["cap_per_day"] = daily
            estimate += np.minimum(points * counts, rule.get("cap", math.inf))
            details[b.event] = {
                "points": points,
                "typical_count": typical,
                **{k: rule[k] for k in ("cap", "cap_per_day") if k in rule},
            }
        else:
            points = round(beta * scale)
            if points <= 0:
                continue
            item = f"{b.event}:{b.item}"
            key = keys.get(item) or guess_content_key(b.event, b.item)
            rule = {
                "name": f"{b.event} {b.item}",
                "event": b.event,
                "where": content_where(key, b.item),
                "points": points,
                "once": True,
            }
            estimate += points * b.values
            details[item] = {"points": points, "property": key}
        rules.append(rule)
    return rules, details, estimate


def _set_thresholds(policy: dict[str, Any], thresholds: Mapping[str, int], before: Mapping[str, float]) -> None:
    """Write the learned MQL thresholds into the kept policy, and scale the requalify margin and the
    decay-out floor as the thresholds were scaled (the floor stays below the lowest threshold)."""
    mql = policy.setdefault("mql", {})
    mql["thresholds"] = dict(thresholds)
    total = sum(before.values())
    ratio = sum(thresholds.values()) / total if total > 0 else 1.0
    if mql.get("requalify_margin"):
        mql["requalify_margin"] = round(float(mql["requalify_margin"]) * ratio)
    decay_out = policy.get("decay_out")
    if isinstance(decay_out, dict) and decay_out.get("floor") is not None:
        decay_out["floor"] = min(math.floor(float(decay_out["floor"]) * ratio), min(thresholds.values()) - 1)


def _numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as floats, missing (or no such column) as 0."""
    if name not in frame.columns:
        return np.zeros(len(frame))
    return np.asarray(pd.to_numeric(frame[name], errors="coerce").astype(float).fillna(0.0).to_numpy())


def _events_per_day(current: ScoringModel) -> dict[str, float]:
    """Per event type, how many events a day the current model's caps count: by its rule for that
    type without `where` if it has one, else by the most generous capped rule."""
    found: dict[str, tuple[bool, float]] = {}
    for rule in current.engagement_rules:
        if rule.cap_per_day is None or not rule.points:
            continue
        count, plain = rule.cap_per_day / abs(rule.points), not rule.where
        for kind in rule.events:
            seen = found.get(kind)
            if seen is None or (plain, count) > seen:
                found[kind] = (plain, count)
    return {kind: count for kind, (_, count) in found.items()}


def _by_column(levels: Sequence[_Level], values: Sequence[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for lv, value in zip(levels, values, strict=True):
        out.setdefault(lv.column, {})[lv.value] = value
    return out


_NOTES = {
    "fit:": "Fit: the points of each value of each field (a value without a rule has 0); a lead's fit is the\n"
    "sum, held in 0-100. Grades from the learnt-from leads' fit: top 15 % A, next 25 % B, next 30 % C.",
    "engagement:": "Engagement: awards only (what lowered the odds has no rule). A kind's points are per event,\n"
    "up to `cap` in all; a content item's points count once.",
    "disqualify:": "Disqualify: the current model's rules, unchanged.",
    "policy:": "Policy: the current model's, with MQL thresholds that qualify about as many of the\n"
    "learnt-from leads as the current model did (compare precision at equal volume).",
    "handoff:": "Handoff: the current model's, unchanged.",
}


def _header(rows: TrainingSet, fitting: np.ndarray, held_out: np.ndarray, scale: float) -> str:
    """The comment that opens the document: what it was learnt from, and what to do with it."""
    labels, times = rows.labels, rows.times
    learnt = [t[:10] for t in _period(times, fitting) or ["?", "?"]]
    left = [t[:10] for t in _period(times, held_out) or ["?", "?"]]
    lines = [
        "Learned points: a scorecard learnt from the history (qualify.predictive.scorecard).",
        f"Target: reached {rows.target} within {rows.within_days} days of the cutoff ({rows.cutoff}).",
        f"Rows: {len(labels)} leads, {int(labels.sum())} reached the target.",
        f"Learnt from the oldest {len(fitting)} ({int(labels[fitting].sum())} reached it), cutoffs {learnt[0]} to {learnt[1]};",
        f"the newest {len(held_out)} ({int(labels[held_out].sum())} reached it), cutoffs {left[0]} to {left[1]}, "
        "were left out to judge it on.",
        f"Scale: about {scale:.3g} points per unit of log-odds.",
        "A starting point, not a verdict: read it, edit it (docs/scoring-model.md), validate it",
        "(qualify model validate), compare it with the current model, then activate it.",
    ]
    return "\n".join("# " + line for line in lines)


def _render(header: str, doc: dict[str, Any]) -> str:
    body = yaml.dump(_styled(doc), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=118)
    lines = [header]
    for line in body.splitlines():
        if line in _NOTES:
            lines += ["", *("# " + note for note in _NOTES[line].splitlines())]
        lines.append(line)
    return "\n".join(lines) + "\n"
