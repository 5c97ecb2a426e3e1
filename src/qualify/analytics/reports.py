"""Funnel analytics on the batch side: cohorts of leads and how far each got.

Expressed once with Ibis over the leads and the stage history, so it runs on DuckDB (a Parquet
export), PostgreSQL (the store) and Spark alike.
"""

from __future__ import annotations

from typing import Any

import ibis.expr.types as ir

from qualify.analytics.batch import Sources
from qualify.domain.errors import InvalidInput
from qualify.service.queries import wilson_interval

LATER_STAGES = ("mql", "sql", "opportunity", "customer")
COHORT_KEYS = ("month", "source", "channel")


def _cohort_key(leads: ir.Table, by: str) -> ir.StringValue:
    if by == "month":
        return leads.created_at.strftime("%Y-%m")
    if by in ("source", "channel"):
        return leads[by].fill_null("(none)")
    raise InvalidInput(f"unknown cohort {by!r}; expected one of: {', '.join(COHORT_KEYS)}", field="by")


def cohorts(sources: Sources, by: str = "month") -> list[dict[str, Any]]:
    """For each cohort (month of creation, source or channel): its leads, and how many of them
    ever reached each later stage, with the rate and its 95 % Wilson interval."""
    if sources.history is None:
        raise InvalidInput("cohorts need the stage history", field="history")
    leads, history = sources.leads, sources.history
    key = _cohort_key(leads, by)
    reached = history.group_by(lead=history.lead_id).aggregate(
        **{stage: (history.to_stage == stage).any() for stage in LATER_STAGES}
    )
    joined = leads.left_join(reached, leads.id == reached.lead)
    counted = joined.group_by(cohort=key).aggregate(
        leads=joined.id.count(),
        # ifelse, not a cast: PostgreSQL cannot cast a boolean to a number.
        **{stage: joined[stage].fill_null(False).ifelse(1, 0).sum() for stage in LATER_STAGES},
    )
    rows = counted.order_by("cohort").to_pyarrow().to_pylist()
    return [_with_rates(row) for row in rows]


def _with_rates(row: dict[str, Any]) -> dict[str, Any]:
    total = int(row["leads"])
    out: dict[str, Any] = {"cohort": row["cohort"], "leads": total}
    for stage in LATER_STAGES:
        count = int(row[stage] or 0)
        out[stage] = {
            "count": count,
            "rate": round(count / total, 4) if total else None,
            "interval_95": wilson_interval(count, total),
        }
    return out
