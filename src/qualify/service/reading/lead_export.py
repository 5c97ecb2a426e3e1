"""Every lead with its scores, probability, stage, owner and the reason of its stage, a page at a
time: for spreadsheets and reverse-ETL tools (`qualify export leads`, `GET /v1/leads/export`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, select

from qualify.adapters import schema
from qualify.service.reading.lead_list import LeadFilter, list_page
from qualify.service.unit_of_work import UnitOfWork, Workspace

PAGE = 1000  # leads read per query: a page of the lead list, so memory stays flat at any size

# The columns, in order, with their kinds (Parquet's types); each documented in docs/cli.md.
COLUMNS: dict[str, str] = {
    "id": "int",
    "email": "text",
    "external_id": "text",
    "first_name": "text",
    "last_name": "text",
    "title": "text",
    "account": "text",
    "account_domain": "text",
    "source": "text",
    "stage": "text",
    "stage_entered_at": "time",
    "stage_reason": "text",
    "owner": "text",
    "fit_score": "float",
    "fit_grade": "text",
    "persona": "text",
    "engagement_score": "float",
    "score": "float",
    "probability": "float",
    "probability_at": "time",
    "predictive_version": "text",
    "created_at": "time",
    "updated_at": "time",
    "last_event_at": "time",
}


def exported_leads(workspace: Workspace, wanted: LeadFilter | None = None) -> Iterator[dict[str, Any]]:
    """The leads the filter matches (all, without one), oldest first, as rows of `COLUMNS`.

    In the order of their creation, which scoring does not change: a lead scored while the export
    runs is neither skipped nor written twice (by score, it could move past the page boundary).
    Each page is read in a short transaction of its own, so a slow reader holds nothing open."""
    wanted = replace(wanted or LeadFilter(), sort="created", ascending=True, limit=PAGE, cursor=None, offset=0)
    while True:
        with workspace.unit_of_work(read_only=True) as uow:
            rows, following = list_page(uow, wanted)
            reasons = stage_reasons(uow.connection, [row["id"] for row in rows])
        for row in rows:
            row["stage_reason"] = reasons.get(row["id"])
            yield {column: row.get(column) for column in COLUMNS}
        if following is None:
            return
        wanted = replace(wanted, cursor=following)


def lead_rows(uow: UnitOfWork, lead_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The rows of `COLUMNS` of these leads (erased ones left out), by id, with `mql_reason`: the
    reason of the lead's latest move to MQL. What a CRM push writes."""
    if not lead_ids:
        return {}
    wanted = LeadFilter(ids=tuple(lead_ids), sort="created", ascending=True, limit=len(lead_ids))
    rows, _ = list_page(uow, wanted)
    ids = [row["id"] for row in rows]
    reasons, mql = stage_reasons(uow.connection, ids), stage_reasons(uow.connection, ids, to_stage="mql")
    return {
        row["id"]: {column: row.get(column) for column in COLUMNS}
        | {"stage_reason": reasons.get(row["id"]), "mql_reason": mql.get(row["id"])}
        for row in rows
    }


# What a CRM push may write on a company's record: its people's funnel, as their columns add up.
ACCOUNT_COLUMNS: dict[str, str] = {
    "people": "int",  # leads at the account
    "mqls": "int",  # of them, at MQL or further (sql, opportunity, customer, evangelist)
    "best_score": "float",  # the highest score (fit + engagement) of its people
    "best_fit_grade": "text",  # the best fit grade of its people
    "furthest_stage": "text",  # the furthest funnel stage any of its people reached
    "owner": "text",  # the owner of its person who moved stage last
}
_FUNNEL = ("lead", "mql", "sql", "opportunity", "customer", "evangelist")


def account_rows(uow: UnitOfWork, account_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The rows of `ACCOUNT_COLUMNS` of these accounts, from their people (erased ones left out)."""
    if not account_ids:
        return {}
    leads = schema.leads
    rows = uow.connection.execute(
        select(
            leads.c.account_id, leads.c.stage, leads.c.fit_score, leads.c.engagement_score, leads.c.fit_grade,
            leads.c.owner, leads.c.stage_entered_at,
        ).where(leads.c.account_id.in_(account_ids), leads.c.erased_at.is_(None))
    )  # fmt: skip
    out: dict[int, dict[str, Any]] = {
        i: {"people": 0, "mqls": 0, "best_score": None, "best_fit_grade": None, "furthest_stage": None, "owner": None}
        for i in account_ids
    }
    owned: dict[int, Any] = {}
    for row in rows:
        item = out[row.account_id]
        item["people"] += 1
        rank = _FUNNEL.index(row.stage) if row.stage in _FUNNEL else -1
        item["mqls"] += rank >= 1
        score = round(row.fit_score + row.engagement_score, 2)
        item["best_score"] = score if item["best_score"] is None else max(item["best_score"], score)
        if row.fit_grade and (item["best_fit_grade"] is None or row.fit_grade < item["best_fit_grade"]):
            item["best_fit_grade"] = row.fit_grade
        if rank >= 0 and (item["furthest_stage"] is None or rank > _FUNNEL.index(item["furthest_stage"])):
            item["furthest_stage"] = row.stage
        if row.owner and (row.account_id not in owned or row.stage_entered_at > owned[row.account_id]):
            item["owner"], owned[row.account_id] = row.owner, row.stage_entered_at
    return out


def stage_reasons(conn: Connection, lead_ids: list[int], *, to_stage: str | None = None) -> dict[int, str | None]:
    """The reason recorded with each lead's latest stage move ("fit grade A and engagement 31 ≥ 25"),
    or its latest move to `to_stage`."""
    if not lead_ids:
        return {}
    history = schema.stage_history
    statement = (
        select(history.c.lead_id, history.c.reason)
        .where(history.c.lead_id.in_(lead_ids))
        .order_by(history.c.lead_id, history.c.at, history.c.id)
    )
    if to_stage is not None:
        statement = statement.where(history.c.to_stage == to_stage)
    rows = conn.execute(statement)
    return {row.lead_id: row.reason for row in rows}  # the last of each lead's moves wins
