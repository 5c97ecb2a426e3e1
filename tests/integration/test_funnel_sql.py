"""The funnel report computed by the store (service/reading/funnel.py) equals the same report
computed by a loop over every stage history row in Python (tests/funnel_oracle.py), on generated
histories with what real ones hold: ties in time, ids out of time order, people's and the
system's moves with and without reasons, recycling through nurture, lost deals, imported entries
without a previous stage, leads at a later stage with no history, and SLA clocks met, breached,
open and stopped. On SQLite and PostgreSQL, with and without the report's filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from tests import funnel_oracle

from qualify.adapters import schema
from qualify.domain.lifecycle import Stage
from qualify.service.reading.funnel import funnel, sla_compliance
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=40)
LATER = [s.value for s in Stage if s is not Stage.LEAD]
ACTORS = ("user", "model", "system")
REASONS = (None, "", "no_budget", "bad_timing", "engagement 12.0 fell below 20")
SOURCES = ("google", "webinar", None)

# One move after the first: where to, by whom, why, and how long after the previous one (0: a tie).
move = st.tuples(
    st.sampled_from(LATER),
    st.sampled_from(ACTORS),
    st.sampled_from(REASONS),
    # 0.9997 s and the like: a time whose fraction SQLite's strftime would round up to a second.
    st.sampled_from([0, 1, 90, 3_600, 86_400, 5 * 86_400 + 7, 12.5, 0.9997, 59.999_6, 0.000_4]),
)
lead = st.fixed_dictionaries(
    {
        "first": st.sampled_from(["lead", "lead", "lead", "mql", None]),  # None: no history at all
        "moves": st.lists(move, max_size=6),
        "created": st.integers(0, 20),
        "due": st.sampled_from([None, -3_600, 0, 3_600, 40 * 86_400, 60 * 86_400]),  # after the first MQL entry
        "source": st.sampled_from(SOURCES),
        "stage_without_history": st.sampled_from(LATER),
        "shuffle_ids": st.booleans(),
    }
)


def _write(workspace: Workspace, leads: list[dict[str, Any]]) -> None:
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        conn.execute(delete(schema.stage_history))
        conn.execute(delete(schema.leads))
        history: list[dict[str, Any]] = []
        for i, spec in enumerate(leads, start=1):
            created = T0 + timedelta(days=spec["created"])
            rows: list[dict[str, Any]] = []
            if spec["first"] is not None:
                at, stage = created, spec["first"]
                rows.append({"from_stage": None, "to_stage": stage, "at": at, "actor": "system", "reason": None})
                for to_stage, actor, reason, gap in spec["moves"]:
                    at += timedelta(seconds=gap)
                    rows.append({"from_stage": stage, "to_stage": to_stage, "at": at, "actor": actor, "reason": reason})
                    stage = to_stage
            else:
                stage = "lead" if not spec["moves"] else spec["stage_without_history"]
            first_mql = next((r["at"] for r in rows if r["to_stage"] == "mql"), None)
            due = None
            if spec["due"] is not None and (first_mql is not None or stage == "mql"):
                due = (first_mql or created) + timedelta(seconds=spec["due"])
            conn.execute(
                schema.leads.insert().values(
                    id=i,
                    email=f"p{i}@example.com",
                    created_at=created,
                    updated_at=created,
                    stage=stage,
                    stage_entered_at=created,
                    engagement_state={},
                    attributes={},
                    source=spec["source"],
                    sla_due_at=due,
                )
            )
            if spec["shuffle_ids"]:
                rows.reverse()  # ids against time order: the report orders by time, then id
            history += [{"lead_id": i, "by": "test", **row} for row in rows]
        if history:
            conn.execute(schema.stage_history.insert(), history)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(leads=st.lists(lead, max_size=12))
def test_the_store_counts_the_funnel_a_loop_over_the_history_does(workspace: Workspace, leads: list[Any]) -> None:
    _write(workspace, leads)
    with workspace.unit_of_work(read_only=True) as uow:
        for kwargs in (
            {},
            {"where": {"source": "google"}},
            {"created_from": T0 + timedelta(days=5), "created_to": T0 + timedelta(days=15)},
        ):
            expected = funnel_oracle.funnel(uow, now=NOW, **kwargs).as_dict()
            assert funnel(uow, now=NOW, **kwargs).as_dict() == expected
            assert sla_compliance(uow, now=NOW, **kwargs) == expected["sla"]


def test_a_funnel_with_every_kind_of_move_agrees_and_is_not_empty(workspace: Workspace) -> None:
    """One fixed history that reaches every part of the report, so the comparison above is
    known to compare figures and not empty dictionaries."""
    day = 86_400
    leads = [
        {  # rejected, recycled, accepted, won
            "first": "lead",
            "moves": [
                ("mql", "model", None, day),
                ("nurture", "user", "bad_timing", 2 * day),
                ("mql", "model", None, 3 * day),
                ("sql", "user", None, 3_600),
                ("opportunity", "user", None, day),
                ("customer", "user", None, day),
            ],
            "created": 0,
            "due": 2 * 3_600,
            "source": "google",
            "stage_without_history": "mql",
            "shuffle_ids": True,
        },
        {  # decayed out, then disqualified
            "first": "lead",
            "moves": [
                ("mql", "model", None, day),
                ("nurture", "system", "engagement 12.0 fell below 20", 9 * day),
                ("disqualified", "user", "no_budget", day),
            ],
            "created": 3,
            "due": 3_600,
            "source": "webinar",
            "stage_without_history": "mql",
            "shuffle_ids": False,
        },
        {"first": "lead", "moves": [], "created": 1, "due": None, "source": None}
        | {"stage_without_history": "mql", "shuffle_ids": False},
    ]
    _write(workspace, leads)
    with workspace.unit_of_work(read_only=True) as uow:
        report = funnel(uow, now=NOW).as_dict()
        assert report == funnel_oracle.funnel(uow, now=NOW).as_dict()
    assert report["reached"]["customer"] == 1 and report["recycled"] == {
        "nurtured": 2,
        "requalified": 1,
        "decayed_out": 1,
    }
    assert report["nurture_loop"]["by_origin"]["rejected_mql"]["recycled"]["count"] == 1
    assert report["nurture_loop"]["after_mql"]["recycled"]["customer"]["count"] == 1
    assert report["days_in_stage"]["mql"] == {"count": 3, "median": 2.0, "p90": 7.6}
    assert report["sla"]["clocks"] == 2 and report["sla"]["breached"] == 2
    assert report["reasons"] == {"mql->nurture": {"bad_timing": 1}, "nurture->disqualified": {"no_budget": 1}}


def test_times_read_as_whole_microseconds_on_both_engines(workspace: Workspace) -> None:
    """SQLite's strftime rounds a fraction to milliseconds (59.9997 s reads as the next second):
    the store's reading of a time must not."""
    from sqlalchemy import literal, select

    from qualify.adapters.schema import UTCDateTime, epoch_micros

    moments = [
        datetime(2026, 3, 2, 9, 0, 59, 999_700, tzinfo=UTC),
        datetime(2026, 3, 2, 9, 0, 59, 999_400, tzinfo=UTC),
        datetime(2026, 3, 2, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 3, 2, 9, 0, 0, 1, tzinfo=UTC),
    ]
    with workspace.unit_of_work(read_only=True) as uow:
        for moment in moments:
            read = uow.connection.execute(select(epoch_micros(literal(moment, UTCDateTime())))).scalar_one()
            expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            assert read == expected, moment
