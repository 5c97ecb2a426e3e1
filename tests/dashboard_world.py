"""A small world for the dashboard's tests: MQLs with owners, an admin and a sales rep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qualify.domain.records import Account, Event, Lead
from qualify.service.admin.users import add_user
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.leads import upsert_leads
from qualify.service.unit_of_work import Workspace

PASSWORD = "correct horse battery"
NOW = datetime.now(UTC)


def world(workspace: Workspace, leads: int = 8) -> None:
    """`leads` VPs at two accounts who each asked for a demo: MQLs whose owners the routing picks
    (round robin, then each account's leads to the rep who owns it)."""
    with workspace.unit_of_work() as uow:
        upsert_leads(
            uow,
            [
                Lead(email=address(i), first_name=f"Vera{i}", title="VP Marketing", seniority="vp", country="US")
                for i in range(leads)
            ],
            accounts=[
                Account(domain=domain, name=domain, industry="software", employees=900, country="US")
                for domain in ("bigco.com", "othercorp.com")
            ],
        )
        ingest_events(
            uow,
            [
                Event(
                    event_id=f"d{i}",
                    type="demo_request",
                    occurred_at=NOW - timedelta(hours=i + 1),
                    email=address(i),
                )
                for i in range(leads)
            ],
            now=NOW,
        )
        add_user(uow, "ana", "admin", PASSWORD)
        add_user(uow, "sam.rivera", "sales", PASSWORD)


def address(i: int) -> str:
    return f"vp{i}@{('bigco.com', 'othercorp.com')[i % 2]}"
