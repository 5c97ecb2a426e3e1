"""Funnel analytics on the batch side: cohorts, velocity, sources, content influence, lookalikes.

Expressed once with Ibis over the leads, the events and the stage history, so each runs on
DuckDB (a Parquet export), PostgreSQL (the store) and Spark alike. The counting happens in
the engine; what comes back is one row per cohort, stage or content item.
"""

from __future__ import annotations

import math
from typing import Any

import ibis
import ibis.expr.types as ir

from qualify.analytics.batch_evaluator import DAY_SECONDS, Sources, value_text
from qualify.domain.content import CONTENT_KEYS
from qualify.domain.errors import InvalidInput
from qualify.domain.lifecycle import FUNNEL, Stage
from qualify.domain.statistics import counted_rate

LATER_STAGES = ("mql", "sql", "opportunity", "customer")
COHORT_KEYS = ("month", "source", "channel", "campaign")
TARGETS = ("sql", "opportunity", "customer")
ITEM_KINDS = ("kind", "content")
POPULATIONS = ("leads", "mql")
# The property that names what an event was about, in this order (docs/batch.md#content-influence).
NONE = "(none)"
Z95 = 1.959964


def _history(sources: Sources) -> ir.Table:
    if sources.history is None:
        raise InvalidInput("this report needs the stage history", field="history")
    return sources.history


# --- cohorts ----------------------------------------------------------------------------------


def first_campaigns(sources: Sources) -> ir.Table:
    """lead_id, campaign: the `campaign` property of each lead's earliest event that has one (first touch)."""
    events = sources.events
    tagged = events.mutate(campaign=value_text(events.properties, "campaign"))
    tagged = tagged.filter(tagged.campaign.notnull())
    order = ibis.window(group_by=tagged.lead_id, order_by=[tagged.occurred_at, tagged.id])
    ranked = tagged.mutate(n=ibis.row_number().over(order))
    return ranked.filter(ranked.n == 0).select(lead_id=ranked.lead_id, campaign=ranked.campaign)


def with_cohort(sources: Sources, by: str) -> ir.Table:
    """The leads with a `cohort` column: month of creation, source, channel or first-touch campaign."""
    leads = sources.leads
    if by == "month":
        return leads.mutate(cohort=leads.created_at.strftime("%Y-%m"))
    if by in ("source", "channel"):
        return leads.mutate(cohort=leads[by].fill_null(NONE))
    if by == "campaign":
        first = first_campaigns(sources)
        joined = leads.left_join(first, leads.id == first.lead_id)
        return joined.select(*leads.columns, cohort=joined.campaign.fill_null(NONE))
    raise InvalidInput(f"unknown cohort {by!r}; expected one of: {', '.join(COHORT_KEYS)}", field="by")


def cohorts(sources: Sources, by: str = "month") -> list[dict[str, Any]]:
    """For each cohort (month of creation, source, channel or first campaign): its leads, and how
    many of them ever reached each later stage, with the rate and its 95 % Wilson interval."""
    history = _history(sources)
    leads = with_cohort(sources, by)
    reached = history.group_by(lead=history.lead_id).aggregate(
        **{stage: (history.to_stage == stage).any() for stage in LATER_STAGES}
    )
    joined = leads.left_join(reached, leads.id == reached.lead)
    counted = joined.group_by("cohort").aggregate(
        leads=joined.id.count(),
        # ifelse, not a cast: PostgreSQL cannot cast a boolean to a number.
        **{stage: joined[stage].fill_null(False).ifelse(1, 0).sum() for stage in LATER_STAGES},
    )
    rows = counted.order_by("cohort").to_pyarrow().to_pylist()
    return [
        {"cohort": row["cohort"], "leads": int(row["leads"])}
        | {stage: counted_rate(int(row[stage] or 0), int(row["leads"])) for stage in LATER_STAGES}
        for row in rows
    ]


# --- velocity ---------------------------------------------------------------------------------


def stays(sources: Sources) -> ir.Table:
    """One row per stage entry: lead_id, stage, entered, left (null while still there), days, and
    the move that ended the stay (next_stage, next_actor, next_reason)."""
    history = _history(sources)
    order = ibis.window(group_by=history.lead_id, order_by=[history.at, history.id])
    out = history.select(
        lead_id=history.lead_id,
        stage=history.to_stage,
        entered=history.at,
        left=history.at.lead().over(order),
        next_stage=history.to_stage.lead().over(order),
        next_actor=history.actor.lead().over(order),
        next_reason=history.reason.lead().over(order),
    )
    return out.mutate(days=days_between(out.left, out.entered))


def days_between(later: ir.TimestampValue, earlier: ir.TimestampValue) -> ir.FloatingValue:
    """Days from `earlier` to `later` as a double (PostgreSQL's epoch is NUMERIC otherwise)."""
    return (later.epoch_seconds() - earlier.epoch_seconds()).cast("float64") / DAY_SECONDS


def _spread(column: ir.NumericColumn) -> dict[str, ir.Scalar]:
    return {"median": column.quantile(0.5), "p90": column.quantile(0.9)}


def _days(row: dict[str, Any], key: str) -> float | None:
    value = row.get(key)
    return None if value is None else round(float(value), 2)


def velocity(sources: Sources) -> dict[str, Any]:
    """Days in each stage (completed stays: count, median, p90; and stays still open), and days
    from a lead's creation to its first entry into each funnel stage."""
    stay = stays(sources)
    done = stay.filter(stay.left.notnull())
    in_stage = {
        row["stage"]: row
        for row in done.group_by("stage")
        .aggregate(completed=done.count(), **_spread(done.days))
        .to_pyarrow()
        .to_pylist()
    }
    still = stay.filter(stay.left.isnull())
    open_now = {
        row["stage"]: int(row["n"])
        for row in still.group_by("stage").aggregate(n=still.count()).to_pyarrow().to_pylist()
    }
    leads = sources.leads
    firsts = stay.group_by([stay.lead_id, stay.stage]).aggregate(first=stay.entered.min())
    joined = firsts.join(leads, firsts.lead_id == leads.id)
    since = joined.select(stage=joined.stage, days=days_between(joined.first, joined.created_at))
    to_reach = {
        row["stage"]: row
        for row in since.group_by("stage")
        .aggregate(leads=since.count(), **_spread(since.days))
        .to_pyarrow()
        .to_pylist()
    }
    return {
        "days_in_stage": {
            stage.value: {
                "completed": int(in_stage.get(stage.value, {}).get("completed") or 0),
                "open": open_now.get(stage.value, 0),
                "median": _days(in_stage.get(stage.value, {}), "median"),
                "p90": _days(in_stage.get(stage.value, {}), "p90"),
            }
            for stage in Stage
        },
        "days_to_reach": {
            stage.value: {
                "leads": int(to_reach.get(stage.value, {}).get("leads") or 0),
                "median": _days(to_reach.get(stage.value, {}), "median"),
                "p90": _days(to_reach.get(stage.value, {}), "p90"),
            }
            for stage in FUNNEL[1:]
        },
    }


# --- sources: how good the leads of each source are, as sales judged them ---------------------


def sources_report(sources: Sources, by: str = "source") -> list[dict[str, Any]]:
    """Per source, channel or first campaign: leads, MQLs, what sales decided about the MQLs
    (accepted, rejected, disqualified; acceptance rate), the most given rejection reason, and
    how many became customers."""
    leads = with_cohort(sources, by)
    stay = stays(sources)
    reached = stay.group_by("lead_id").aggregate(
        mql=(stay.stage == "mql").any(), customer=(stay.stage == "customer").any()
    )
    decided = stay.filter((stay.stage == "mql") & (stay.next_actor == "user"))
    decisions = decided.group_by("lead_id").aggregate(
        accepted=(decided.next_stage == "sql").ifelse(1, 0).sum(),
        rejected=(decided.next_stage == "nurture").ifelse(1, 0).sum(),
        disqualified=(decided.next_stage == "disqualified").ifelse(1, 0).sum(),
    )
    joined = leads.left_join(reached, leads.id == reached.lead_id)
    joined = joined.left_join(decisions, joined.id == decisions.lead_id)
    counted = joined.group_by("cohort").aggregate(
        leads=joined.id.count(),
        mql=joined.mql.fill_null(False).ifelse(1, 0).sum(),
        customer=joined.customer.fill_null(False).ifelse(1, 0).sum(),
        accepted=joined.accepted.fill_null(0).sum(),
        rejected=joined.rejected.fill_null(0).sum(),
        disqualified=joined.disqualified.fill_null(0).sum(),
    )
    rejections = decided.filter(decided.next_stage == "nurture").join(leads, decided.lead_id == leads.id)
    reasons = rejections.group_by([rejections.cohort, rejections.next_reason]).aggregate(n=rejections.count())
    top: dict[str, tuple[str, int]] = {}
    for row in reasons.to_pyarrow().to_pylist():
        best = top.get(row["cohort"])
        candidate = (str(row["next_reason"]), int(row["n"]))
        if best is None or (candidate[1], best[0]) > (best[1], candidate[0]):
            top[row["cohort"]] = candidate
    out = []
    for row in counted.order_by("cohort").to_pyarrow().to_pylist():
        accepted, rejected, disqualified = (int(row[k] or 0) for k in ("accepted", "rejected", "disqualified"))
        decisions_made = accepted + rejected + disqualified
        reason = top.get(row["cohort"])
        out.append(
            {
                "cohort": row["cohort"],
                "leads": int(row["leads"]),
                "mql": counted_rate(int(row["mql"] or 0), int(row["leads"])),
                "decisions": decisions_made,
                "accepted": counted_rate(accepted, decisions_made),
                "rejected": rejected,
                "disqualified": disqualified,
                "top_rejection_reason": {"reason": reason[0], "count": reason[1]} if reason else None,
                "customer": counted_rate(int(row["customer"] or 0), int(row["leads"])),
            }
        )
    return out


# --- content and behaviour influence ----------------------------------------------------------


def first_entries(history: ir.Table, stage: str, lead: str = "lead_id", at: str = "at") -> ir.Table:
    """Each lead's first entry into `stage`, as columns named `lead` and `at`."""
    entered = history.filter(history.to_stage == stage)
    return entered.group_by(**{lead: entered.lead_id}).aggregate(**{at: entered.at.min()})


def _first_reach(sources: Sources, target: str) -> ir.Table:
    if target not in TARGETS:
        raise InvalidInput(f"unknown target {target!r}; expected one of: {', '.join(TARGETS)}", field="target")
    return first_entries(_history(sources), target, "converted_lead", "converted_at")


def content_item(events: ir.Table) -> ir.StringValue:
    """What an event was about, with its kind: `content_download:roi-guide`; null when no
    property in CONTENT_KEYS names it."""
    return events.type.concat(":", ibis.coalesce(*(value_text(events.properties, key) for key in CONTENT_KEYS)))


def _items(sources: Sources, by: str) -> ir.Table:
    """lead_id, occurred_at, id, type and `item`: the event's kind, or kind and what it was about."""
    events = sources.events
    if by == "kind":
        return events.select("id", "lead_id", "occurred_at", "type", item=events.type)
    if by != "content":
        raise InvalidInput(f"unknown item kind {by!r}; expected one of: {', '.join(ITEM_KINDS)}", field="by")
    items = events.select("id", "lead_id", "occurred_at", "type", item=content_item(events))
    return items.filter(items.item.notnull())


def _before_conversion(sources: Sources, by: str, target: str) -> ir.Table:
    """Each lead's events (as items) with `converted`: for a lead that reached `target`, only the
    events that occurred before it did (what came after cannot have caused it)."""
    items = _items(sources, by)
    reach = _first_reach(sources, target)
    joined = items.left_join(reach, items.lead_id == reach.converted_lead)
    kept = joined.filter(joined.converted_at.isnull() | (joined.occurred_at < joined.converted_at))
    return kept.select(
        "id", "lead_id", "occurred_at", "type", "item", "converted_at", converted=kept.converted_at.notnull()
    )


def relative_risk(engaged_converted: int, engaged: int, other_converted: int, others: int) -> dict[str, Any]:
    """Conversion of the engaged over that of the others, with a 95 % interval (Katz's log method);
    no interval where a cell is empty."""
    if engaged == 0 or others == 0 or other_converted == 0:
        return {"lift": None, "interval_95": None}
    lift = (engaged_converted / engaged) / (other_converted / others)
    if engaged_converted == 0:
        return {"lift": 0.0, "interval_95": None}
    se = math.sqrt(1 / engaged_converted - 1 / engaged + 1 / other_converted - 1 / others)
    low, high = math.exp(math.log(lift) - Z95 * se), math.exp(math.log(lift) + Z95 * se)
    return {"lift": round(lift, 3), "interval_95": [round(low, 3), round(high, 3)]}


def _population(sources: Sources, among: str) -> ir.Table:
    """The leads a comparison is made among: all of them, or those that ever reached MQL."""
    leads = sources.leads
    if among == "leads":
        return leads
    if among != "mql":
        raise InvalidInput(f"unknown population {among!r}; expected one of: {', '.join(POPULATIONS)}", field="among")
    history = _history(sources)
    handed = first_entries(history, "mql", "mql_lead").select("mql_lead")
    return leads.join(handed, leads.id == handed.mql_lead).select(*leads.columns)


def content_influence(
    sources: Sources, *, by: str = "content", target: str = "customer", among: str = "leads", min_support: int = 20
) -> dict[str, Any]:
    """For each content item (or event kind): how much more often the leads who engaged with it
    (before converting) reached `target` than the leads who did not, among all leads or among
    those that reached MQL; items engaged by fewer than `min_support` leads are left out (and
    counted)."""
    leads = _population(sources, among)
    reach = _first_reach(sources, target)
    counted_leads = leads.left_join(reach, leads.id == reach.converted_lead)
    totals = (
        counted_leads.aggregate(
            leads=counted_leads.id.count(), converted=counted_leads.converted_at.notnull().ifelse(1, 0).sum()
        )
        .to_pyarrow()
        .to_pylist()[0]
    )
    total, converted = int(totals["leads"]), int(totals["converted"] or 0)
    engaged = _before_conversion(sources, by, target)
    members = leads.select(member=leads.id)
    engaged = engaged.join(members, engaged.lead_id == members.member)
    pairs = engaged.select("lead_id", "item", "converted").distinct()
    per_item = pairs.group_by("item").aggregate(engaged=pairs.count(), converted=pairs.converted.ifelse(1, 0).sum())
    rows, rare = [], 0
    for row in per_item.to_pyarrow().to_pylist():
        n1, a = int(row["engaged"]), int(row["converted"] or 0)
        if n1 < min_support:
            rare += 1
            continue
        n0, c = total - n1, converted - a
        rows.append(
            {
                "item": row["item"],
                "engaged": n1,
                "engaged_converted": counted_rate(a, n1),
                "others_converted": counted_rate(c, n0),
                **relative_risk(a, n1, c, n0),
            }
        )
    rows.sort(key=lambda r: (-(r["lift"] if r["lift"] is not None else -1.0), -r["engaged"], r["item"]))
    return {
        "target": target,
        "by": by,
        "among": among,
        "leads": total,
        "converted": counted_rate(converted, total),
        "min_support": min_support,
        "items_below_support": rare,
        "items": rows,
    }


def paths(
    sources: Sources, *, by: str = "kind", target: str = "customer", steps: int = 4, top: int = 10
) -> dict[str, Any]:
    """The first `steps` steps (repeats in a row merged) of the leads who reached `target`, before
    they did, beside those of the leads who dropped off: reached MQL, not `target`, and are now
    in nurture or disqualified. The `top` most common paths, with their share in each group."""
    engaged = _before_conversion(sources, by, target)
    stay = stays(sources)
    mqls = stay.filter(stay.stage == "mql").select(mql_lead=stay.lead_id).distinct()
    leads = sources.leads
    dropped = leads.filter(leads.stage.isin([Stage.NURTURE.value, Stage.DISQUALIFIED.value]))
    dropped = dropped.join(mqls, dropped.id == mqls.mql_lead).select(dropped_lead=dropped.id)
    tagged = engaged.left_join(dropped, engaged.lead_id == dropped.dropped_lead)
    tagged = tagged.mutate(
        group=ibis.cases((tagged.converted, "converted"), (tagged.dropped_lead.notnull(), "dropped_off"), else_=None)
    )
    tagged = tagged.filter(tagged.group.notnull())
    order = ibis.window(group_by=tagged.lead_id, order_by=[tagged.occurred_at, tagged.id])
    tagged = tagged.mutate(previous=tagged.item.lag().over(order))
    changes = tagged.filter(tagged.previous.isnull() | (tagged.previous != tagged.item))
    ranked = changes.mutate(
        step=ibis.row_number().over(ibis.window(group_by=changes.lead_id, order_by=[changes.occurred_at, changes.id]))
    )
    firsts = ranked.filter(ranked.step < steps)
    # One column per step, then joined: an ordered collect() is not available on every engine.
    per_lead = firsts.group_by(["lead_id", "group"]).aggregate(
        **{f"s{k}": (firsts.step == k).ifelse(firsts.item, ibis.null("string")).max() for k in range(steps)}
    )
    path = per_lead.s0
    for k in range(1, steps):
        following = per_lead[f"s{k}"]
        path = following.isnull().ifelse(path, path.concat(" → ", following))
    per_lead = per_lead.select("lead_id", "group", path=path)
    counted = per_lead.group_by(["group", "path"]).aggregate(n=per_lead.count())
    spans = tagged.group_by(["lead_id", "group"]).aggregate(
        events=tagged.count(),
        first=tagged.occurred_at.min(),
        last=tagged.occurred_at.max(),
        converted_at=tagged.converted_at.max(),
    )
    spans = spans.mutate(days=days_between(ibis.coalesce(spans.converted_at, spans.last), spans.first))
    groups = {
        row["group"]: row
        for row in spans.group_by("group")
        .aggregate(leads=spans.count(), events_median=spans.events.quantile(0.5), days_median=spans.days.quantile(0.5))
        .to_pyarrow()
        .to_pylist()
    }
    by_path: dict[str, dict[str, int]] = {}
    for row in counted.to_pyarrow().to_pylist():
        by_path.setdefault(row["path"], {})[row["group"]] = int(row["n"])
    size = {g: int(groups.get(g, {}).get("leads") or 0) for g in ("converted", "dropped_off")}

    def share(path: str, group: str) -> float | None:
        return round(by_path[path].get(group, 0) / size[group], 4) if size[group] else None

    ranked_paths = sorted(by_path, key=lambda p: (-sum(by_path[p].values()), p))[:top]
    return {
        "target": target,
        "by": by,
        "steps": steps,
        "groups": {
            g: {
                "leads": size[g],
                "events_median": _days(groups.get(g, {}), "events_median"),
                "days_median": _days(groups.get(g, {}), "days_median"),
            }
            for g in ("converted", "dropped_off")
        },
        "paths": [
            {
                "path": p,
                "converted": by_path[p].get("converted", 0),
                "dropped_off": by_path[p].get("dropped_off", 0),
                "converted_share": share(p, "converted"),
                "dropped_off_share": share(p, "dropped_off"),
            }
            for p in ranked_paths
        ],
    }


# --- lookalikes -------------------------------------------------------------------------------


def lookalikes(
    sources: Sources,
    *,
    target: str = "customer",
    by: str = "content",
    among: str = "leads",
    min_support: int = 20,
    limit: int = 25,
) -> dict[str, Any]:
    """Leads not yet with sales (in lead, MQL or nurture) that never reached `target`, ranked by
    the content they engaged with that converters engaged with: each item weighs ln(lift) where
    its lift (`content_influence`) is above 1; a lead's score is the sum over its items."""
    influence = content_influence(sources, by=by, target=target, among=among, min_support=min_support)
    weights = {r["item"]: math.log(r["lift"]) for r in influence["items"] if r["lift"] is not None and r["lift"] > 1}
    result: dict[str, Any] = {
        "target": target,
        "by": by,
        "among": among,
        "min_support": min_support,
        "items_used": len(weights),
        "leads": [],
    }
    if not weights:
        return result
    items = _items(sources, by)
    reach = _first_reach(sources, target)
    leads = sources.leads
    open_leads = leads.filter(leads.stage.isin([Stage.LEAD.value, Stage.MQL.value, Stage.NURTURE.value]))
    open_leads = open_leads.left_join(reach, open_leads.id == reach.converted_lead)
    open_leads = open_leads.filter(open_leads.converted_at.isnull())
    useful = items.filter(items.item.isin(sorted(weights)))
    pairs = useful.select("lead_id", "item").distinct()
    weight = ibis.cases(
        *((pairs.item == item, ibis.literal(w, type="float64")) for item, w in weights.items()), else_=0.0
    )
    # PostgreSQL reads the literals as NUMERIC (and Ibis drops a cast to the type it already
    # believes they have): one double in the sum makes it double.
    pairs = pairs.mutate(weight=pairs.lead_id.cast("float64") * 0 + weight)
    scored = pairs.group_by("lead_id").aggregate(score=pairs.weight.sum(), matched=pairs.count())
    joined = scored.join(open_leads, scored.lead_id == open_leads.id)
    best = joined.order_by([ibis.desc(joined.score), joined.lead_id]).limit(limit)
    chosen = (
        best.select(
            best.lead_id, best.score, best.matched, best.email, best.stage, best.fit_score, best.engagement_score
        )
        .to_pyarrow()
        .to_pylist()
    )
    ids = [row["lead_id"] for row in chosen]
    engaged_items: dict[int, list[str]] = {}
    if ids:
        mine = pairs.filter(pairs.lead_id.isin(ids)).to_pyarrow().to_pylist()
        for row in mine:
            engaged_items.setdefault(row["lead_id"], []).append(row["item"])
    for row in chosen:
        top_items = sorted(engaged_items.get(row["lead_id"], []), key=lambda i: (-weights[i], i))[:3]
        result["leads"].append(
            {
                "lead_id": row["lead_id"],
                "email": row["email"],
                "stage": row["stage"],
                "fit": row["fit_score"],
                "engagement": round(float(row["engagement_score"]), 2),
                "score": round(float(row["score"]), 4),
                "matched_items": int(row["matched"]),
                "because": [{"item": i, "lift": round(math.exp(weights[i]), 3)} for i in top_items],
            }
        )
    return result
