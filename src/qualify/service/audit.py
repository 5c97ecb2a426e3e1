"""The audit log: who did what, when, through which key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from qualify.adapters import schema
from qualify.service.unit_of_work import UnitOfWork, utcnow


def record_audit(
    uow: UnitOfWork,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    key_id: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Append one entry, in the same transaction as the change it records."""
    uow.connection.execute(
        schema.audit_log.insert().values(
            at=at or utcnow(), actor=actor, key_id=key_id, action=action, target=target, details=details or {}
        )
    )


def audit_entries(uow: UnitOfWork, *, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
    """Newest first; page with `before_id` (the smallest id of the previous page)."""
    log = schema.audit_log
    statement = select(log).order_by(log.c.id.desc()).limit(limit)
    if before_id is not None:
        statement = statement.where(log.c.id < before_id)
    return [dict(row._mapping) for row in uow.connection.execute(statement)]
