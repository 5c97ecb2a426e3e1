"""Scoring model versions: validate, store, activate, show."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, update

from qualify.adapters import schema
from qualify.domain.errors import NotFound
from qualify.domain.model_loader import load_model
from qualify.domain.scoring_model import ScoringModel
from qualify.service.audit import record_audit
from qualify.service.unit_of_work import UnitOfWork, utcnow


@dataclass(frozen=True, slots=True)
class ModelVersion:
    version: str
    name: str
    created_at: datetime
    activated_at: datetime | None
    active: bool


def activate_model(
    uow: UnitOfWork, document: str, source: str = "<model>", *, by: str = "cli", key_id: str | None = None
) -> tuple[ScoringModel, bool]:
    """Validate `document`, store it as a version and make it the active one.

    Returns the model and whether the active version changed. Scores are not
    recomputed here: `rescore` does that, so activation stays instant.
    """
    model = load_model(document, source)
    table = schema.scoring_models
    conn = uow.connection
    # The active row is locked, so a concurrent activation waits for this one (PostgreSQL); the
    # unique index on `active` stops two active models in any case (the loser retries).
    current = conn.execute(select(table.c.version).where(table.c.active).with_for_update()).scalar()
    if current == model.version:
        return model, False
    now = utcnow()
    exists = conn.execute(select(table.c.version).where(table.c.version == model.version)).scalar()
    if exists is None:
        conn.execute(
            table.insert().values(
                version=model.version,
                name=model.name,
                document=document,
                created_at=now,
                active=False,
            )
        )
    conn.execute(update(table).where(table.c.active).values(active=False))
    conn.execute(update(table).where(table.c.version == model.version).values(active=True, activated_at=now))
    record_audit(
        uow,
        actor=by,
        key_id=key_id,
        action="model.activate",
        target=model.version,
        details={"name": model.name, "previous": current, "source": source},
    )
    return model, True


def model_history(uow: UnitOfWork) -> list[ModelVersion]:
    table = schema.scoring_models
    rows = uow.connection.execute(
        select(table.c.version, table.c.name, table.c.created_at, table.c.activated_at, table.c.active).order_by(
            table.c.created_at
        )
    )
    return [ModelVersion(*row) for row in rows]


def active_document(uow: UnitOfWork) -> tuple[str, str]:
    """The active model's version and its YAML exactly as it was activated."""
    table = schema.scoring_models
    row = uow.connection.execute(select(table.c.version, table.c.document).where(table.c.active)).first()
    if row is None:
        raise NotFound("no active scoring model: run `qualify init` or `qualify model activate FILE`")
    return row.version, row.document


def resolve_model(uow: UnitOfWork, ref: str) -> ScoringModel:
    """A model named on the command line: `active`, a stored version, or a YAML file."""
    if ref == "active":
        return uow.active_model()
    path = Path(ref)
    if path.is_file():
        return load_model(path.read_text(encoding="utf-8"), str(path))
    table = schema.scoring_models
    row = uow.connection.execute(select(table.c.document).where(table.c.version == ref)).first()
    if row is None:
        raise NotFound(f"{ref!r} is neither `active`, a stored model version (qualify model show) nor a YAML file")
    return uow.workspace.model_by_version(ref, row.document)
