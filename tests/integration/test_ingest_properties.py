"""Property: how events are chunked into batches never changes a lead's scores or history."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from qualify.adapters import schema
from qualify.domain.model_loader import default_model_text
from qualify.domain.records import Event, make_event
from qualify.service.events import ingest_events
from qualify.service.models import activate_model
from qualify.service.unit_of_work import Workspace, open_workspace
from qualify.settings import Settings

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


_TEMPLATE: dict[str, Path] = {}


def fresh(directory: str, name: str) -> Workspace:
    """A copy of one migrated workspace: migrating anew for every example would dominate the run."""
    if "path" not in _TEMPLATE:
        template = Path(tempfile.mkdtemp()) / "template.db"
        ws = open_workspace(Settings(database_url=f"sqlite:///{template}"), create=True)
        with ws.unit_of_work() as uow:
            activate_model(uow, default_model_text())
        ws.close()
        with sqlite3.connect(template) as raw:  # fold the WAL in, so one file is the whole workspace
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _TEMPLATE["path"] = template
    target = Path(directory) / name
    shutil.copyfile(_TEMPLATE["path"], target)
    return open_workspace(Settings(database_url=f"sqlite:///{target}"))


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
def test_any_chunking_gives_the_same_scores_as_one_by_one(specs: list[Any], cuts: list[int]) -> None:
    evs = build(specs)
    with tempfile.TemporaryDirectory() as directory:
        single, chunked = fresh(directory, "single.db"), fresh(directory, "chunked.db")
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
