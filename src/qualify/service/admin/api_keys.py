"""API keys: created with the CLI, shown once, stored as a hash, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from qualify.adapters import schema
from qualify.domain.access import Role
from qualify.domain.errors import InvalidInput, NotFound, QualifyError
from qualify.service.audit import record_audit
from qualify.service.unit_of_work import UnitOfWork, utcnow

PREFIX = "qk"


class AuthenticationFailed(QualifyError):
    """No key, a malformed key, an unknown key, a wrong secret or a revoked key."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the key's id, name and role."""

    key_id: str
    name: str
    role: Role
    stale: bool = False  # its last use was noted over a minute ago: note this one (touch_key)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def _hash(secret: str) -> str:
    # Keys are 256 random bits: a fast hash is enough, a slow KDF would only cost every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(uow: UnitOfWork, name: str, role: str, *, by: str = "cli") -> tuple[str, KeyInfo]:
    """Create a key; returns the full token (shown once, never stored) and its public info."""
    if not name.strip():
        raise InvalidInput("a key needs a name saying who or what uses it", field="name")
    try:
        checked = Role(role)
    except ValueError:
        raise InvalidInput(
            f"unknown role {role!r}; expected one of: {', '.join(r.value for r in Role)}", field="role"
        ) from None
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = utcnow()
    uow.connection.execute(
        schema.api_keys.insert().values(
            key_id=key_id, secret_hash=_hash(secret), name=name.strip(), role=checked.value, created_at=now
        )
    )
    record_audit(
        uow, actor=by, action="key.create", target=key_id, details={"name": name.strip(), "role": checked.value}
    )
    return f"{PREFIX}_{key_id}_{secret}", KeyInfo(key_id, name.strip(), checked.value, now, None, None)


def authenticate(uow: UnitOfWork, token: str) -> Identity:
    """The identity behind a bearer token, or `AuthenticationFailed` (never saying which part was wrong)."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        raise AuthenticationFailed("not a Qualify API key")
    _, key_id, secret = parts
    keys = schema.api_keys
    row = uow.connection.execute(
        select(keys.c.secret_hash, keys.c.name, keys.c.role, keys.c.revoked_at, keys.c.last_used_at).where(
            keys.c.key_id == key_id
        )
    ).first()
    # Compare even when the key is unknown, so timing does not tell which keys exist.
    stored = row.secret_hash if row is not None else _hash("")
    if not hmac.compare_digest(stored, _hash(secret)) or row is None or row.revoked_at is not None:
        raise AuthenticationFailed("unknown, wrong or revoked API key")
    # Use is noted at most once a minute: a write on every request would serialise SQLite.
    stale = row.last_used_at is None or (utcnow() - row.last_used_at).total_seconds() > 60
    return Identity(key_id, row.name, Role(row.role), stale)


def touch_key(uow: UnitOfWork, key_id: str) -> None:
    """Note that the key was used now."""
    keys = schema.api_keys
    uow.connection.execute(update(keys).where(keys.c.key_id == key_id).values(last_used_at=utcnow()))


def list_keys(uow: UnitOfWork) -> list[KeyInfo]:
    k = schema.api_keys
    rows = uow.connection.execute(
        select(k.c.key_id, k.c.name, k.c.role, k.c.created_at, k.c.revoked_at, k.c.last_used_at).order_by(k.c.id)
    )
    return [KeyInfo(*row) for row in rows]


def revoke_key(uow: UnitOfWork, key_id: str, *, by: str = "cli") -> None:
    k = schema.api_keys
    done = uow.connection.execute(
        update(k).where(k.c.key_id == key_id, k.c.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    if done.rowcount == 0:
        raise NotFound(f"no active key {key_id!r}")
    record_audit(uow, actor=by, action="key.revoke", target=key_id)
