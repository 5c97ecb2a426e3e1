"""Each lead's behaviour features kept between batches for the active predictive model
(`qualify.predictive.recipe.Behaviour`, one row per lead in `lead_behaviour`).

A row holds what the lead's events with an id up to `through_event` make of the features under
the recipe of model `version`: a batch reads only the lead's events after it, folds them in and
writes the row back, so the cost of a new event does not grow with the lead's history. Ids order
a lead's events the way they were written: every writer of a lead's events holds the lead's row
until it commits (`repository.locked_leads`), so no event of a lead with a smaller id can appear
later, except by a merge, which moves the duplicate's events over: a merge and an erasure drop the
rows of the leads concerned (a pipeline keeper), and they are rebuilt from the events the next
time. A row of another model version is rebuilt the same way.

Every change that writes a lead's events refreshes its row in the same transaction (the
`probability` reaction, scored events or not), so a row of the active version is current when
its transaction commits: the colleagues' roll-ups count on its `events` (`context.rollups_of`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qualify.adapters import schema
from qualify.predictive.recipe import Behaviour
from qualify.service.unit_of_work import UnitOfWork


def kept(conn: Any, lead_ids: Iterable[int], version: str) -> dict[int, tuple[int, Behaviour]]:
    """The leads' kept behaviour under model `version`: (through_event, behaviour) by lead id."""
    table = schema.lead_behaviour
    rows = conn.execute(
        select(table.c.lead_id, table.c.through_event, table.c.state).where(
            table.c.lead_id.in_(list(lead_ids)), table.c.version == version
        )
    )
    return {lead_id: (through, Behaviour.from_json(state)) for lead_id, through, state in rows}


def keep(conn: Any, version: str, states: Mapping[int, tuple[int, Behaviour]]) -> None:
    """Write the leads' behaviour (through_event, behaviour) under model `version`, replacing theirs."""
    if not states:
        return
    table = schema.lead_behaviour
    insert = postgresql_insert(table) if conn.dialect.name == "postgresql" else sqlite_insert(table)
    statement = insert.values(
        lead_id=bindparam("b_lead"), version=bindparam("b_version"), through_event=bindparam("b_through"),
        events=bindparam("b_events"), state=bindparam("b_state", type_=table.c.state.type),
    )  # fmt: skip
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.lead_id],
        set_={"version": statement.excluded.version, "through_event": statement.excluded.through_event,
              "events": statement.excluded.events, "state": statement.excluded.state},
    )  # fmt: skip
    conn.execute(
        statement,
        [
            {
                "b_lead": lead,
                "b_version": version,
                "b_through": through,
                "b_events": behaviour.events,
                "b_state": behaviour.to_json(),
            }
            for lead, (through, behaviour) in sorted(states.items())
        ],
    )


def drop(conn: Any, lead_ids: Iterable[int] | None = None) -> None:
    """Forget the kept behaviour of the leads (None: of every lead)."""
    table = schema.lead_behaviour
    statement = delete(table)
    conn.execute(statement if lead_ids is None else statement.where(table.c.lead_id.in_(list(lead_ids))))


def merged(uow: UnitOfWork, gone: int, kept_lead: int, now: datetime) -> None:
    """A merge moved `gone`'s events to `kept_lead` (with their old ids): both rebuild."""
    drop(uow.connection, [gone, kept_lead])


def forgotten(uow: UnitOfWork, lead_id: int, now: datetime) -> None:
    drop(uow.connection, [lead_id])
