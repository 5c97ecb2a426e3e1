"""Property: how events are chunked into batches never changes a lead's scores or history."""

from __future__ import annotations

import itertools
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tests.conftest import copy_of_fresh_workspace

from qualify.adapters import schema
from qualify.domain.records import Event, make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.unit_of_work import Workspace

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEADS = ("ann@acme.com", "bob@acme.com", "cy@gmail.com")
KINDS = st.sampled_from(
    [
        ("email_open", {}),
        ("email_click", {"campaign": "spring"}),
        ("page_view", {"url": "/pricing"}),
        ("page_view", {"url": "/blog/a"}),
        ("page_view", {"url": "/careers"}),
        ("content_download", {"title": "Guide"}),
        ("webinar_attended", {"title": "Live"}),
        ("form_submit", {}),
        ("demo_request", {}),
        ("unsubscribe", {}),
    ]
)

# Hours from T0: several events share a UTC day (per-day caps) and arrive out of order (late events).
event_specs = st.lists(st.tuples(st.sampled_from(LEADS), KINDS, st.integers(0, 24 * 40)), min_size=1, max_size=40)


def build(specs: list[tuple[str, tuple[str, dict[str, Any]], int]]) -> list[Event]:
    return [
        make_event(f"e{i}", kind, T0 + timedelta(hours=hours), email=email, properties=props)
        for i, (email, (kind, props), hours) in enumerate(specs)
    ]


def snapshot(ws: Workspace) -> tuple[list[Any], list[Any], list[Any]]:
    leads, history, events = schema.leads, schema.stage_history, schema.events
    at = T0 + timedelta(days=45)
    with ws.unit_of_work() as uow:
        conn = uow.connection
        from qualify.adapters.repository import lead_from_row

        lead_rows = sorted(
            (r.email, r.stage, r.fit_score, round(lead_from_row(r).state.engagement_at(at.timestamp()), 9))
            for r in conn.execute(select(leads))
        )
        moves = sorted(
            (r.email, r.from_stage or "", r.to_stage, r.at, r.reason or "")
            for r in conn.execute(select(leads.c.email, history).join(history, history.c.lead_id == leads.c.id))
        )
        awards = sorted((r.event_id, str(r.awards)) for r in conn.execute(select(events.c.event_id, events.c.awards)))
    return lead_rows, moves, awards


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=event_specs, cuts=st.lists(st.integers(1, 40), max_size=6))
@pytest.mark.slow
def test_any_chunking_gives_the_same_scores_as_one_by_one(specs: list[Any], cuts: list[int]) -> None:
    evs = build(specs)
    with tempfile.TemporaryDirectory() as directory:
        single, chunked = (
            copy_of_fresh_workspace(Path(directory), "single.db"),
            copy_of_fresh_workspace(Path(directory), "chunked.db"),
        )
        now = T0 + timedelta(days=41)
        for event in evs:
            with single.unit_of_work() as uow:
                ingest_events(uow, [event], now=now)
        bounds = sorted({0, len(evs), *(c for c in cuts if c < len(evs))})
        for start, end in itertools.pairwise(bounds):
            with chunked.unit_of_work() as uow:
                ingest_events(uow, evs[start:end], now=now)
        try:
            assert snapshot(single) == snapshot(chunked)
        finally:
            single.close()
            chunked.close()
