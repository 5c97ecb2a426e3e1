"""Writers in several threads on one workspace lose no update (SQLite takes turns, PostgreSQL locks rows)."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from qualify.domain.records import Lead, make_event
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.reading.queries import lead_profile
from qualify.service.unit_of_work import Workspace, retrying

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def test_concurrent_ingestion_and_upserts_of_one_lead_keep_every_point(workspace: Workspace) -> None:
    with workspace.unit_of_work() as uow:
        upsert_leads(uow, [Lead(email="jane@acme.com", created_at=T0)])
    now = T0 + timedelta(days=1)

    def send(thread: int) -> None:
        for n in range(8):
            event = make_event(
                f"t{thread}-{n}", "content_download", T0 + timedelta(minutes=thread * 10 + n), email="jane@acme.com"
            )
            retrying(workspace, lambda uow, e=event: ingest_events(uow, [e], now=now))  # type: ignore[misc]
            if n % 3 == 0:  # profile updates read and write the same lead row in between
                retrying(
                    workspace,
                    lambda uow, t=thread, k=n: upsert_leads(
                        uow, [Lead(email="jane@acme.com", title=f"T{t}-{k}")], now=now
                    ),
                )  # type: ignore[misc]

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(send, range(6)))
    with workspace.unit_of_work(read_only=True) as uow:
        profile = lead_profile(uow, "jane@acme.com", now=now)
    expected = sum(
        10 * math.pow(2, -((now - (T0 + timedelta(minutes=t * 10 + n))).total_seconds() / 86_400) / 30)
        for t in range(6)
        for n in range(8)
    )
    assert profile.events_total == 48
    assert math.isclose(profile.scores["engagement"], round(expected, 2), abs_tol=0.01)


def test_concurrent_model_activations_leave_exactly_one_active_model(workspace: Workspace) -> None:
    from sqlalchemy import func, select

    from qualify.adapters import schema
    from qualify.domain.model_loader import default_model_text
    from qualify.service.lifecycle.scoring_models import activate_model

    documents = [
        default_model_text().replace("requalify_margin: 10", f"requalify_margin: {m}") for m in (11, 12, 13, 14)
    ]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda d: retrying(workspace, lambda uow: activate_model(uow, d)), documents))
    with workspace.unit_of_work(read_only=True) as uow:
        active = uow.connection.execute(
            select(func.count()).select_from(schema.scoring_models).where(schema.scoring_models.c.active)
        ).scalar()
    assert active == 1
