"""Handoff to sales: when a lead becomes MQL it gets an owner and an SLA clock.

The routing rules and the SLA live in the scoring model (see docs/scoring-model.md).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from qualify.adapters.repository import LeadRecord
from qualify.domain.scoring_model import ScoringModel


def on_qualified(conn: Connection, model: ScoringModel, record: LeadRecord, at: datetime) -> None:
    """Called once for each lead that became MQL in a unit of work, after its row is written.

    Routing and the SLA clock are not in the scoring model yet, so there is nothing to do.
    """
    del conn, model, record, at
