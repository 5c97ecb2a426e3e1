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
    """Who is calling: the key's id, name and role, and the user it acts for (if bound to one)."""

    key_id: str
    name: str
    role: Role
    stale: bool = False  # its last use was noted over a minute ago: note this one (touch_key)
    user: str | None = None

    @property
    def acts_as(self) -> str:
        """Who a change made with this key is recorded as: its user, else the key's name."""
        return self.user or self.name


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    user: str | None = None


def _hash(secret: str) -> str:
    # Keys are 256 random bits: a fast hash is enough, a slow KDF would only cost every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    uow: UnitOfWork, name: str, role: str, *, user: str | None = None, by: str = "cli"
) -> tuple[str, KeyInfo]:
    """Create a key; returns the full token (shown once, never stored) and its public info.

    A key bound to a `user` (an enabled dashboard user) acts as that person: its stage actions
    are recorded as theirs, and it stops working when they are disabled. Every sales key is
    bound to one, and acts only on the leads its user owns, as the dashboard lets a rep do.
    """
    if not name.strip():
        raise InvalidInput("a key needs a name saying who or what uses it", field="name")
    try:
        checked = Role(role)
    except ValueError:
        raise InvalidInput(
            f"unknown role {role!r}; expected one of: {', '.join(r.value for r in Role)}", field="role"
        ) from None
    if user is not None:
        user = user.strip()
        users = schema.users
        found = uow.connection.execute(
            select(users.c.id).where(users.c.name == user, users.c.disabled_at.is_(None))
        ).first()
        if found is None:
            raise InvalidInput(
                f"no enabled user {user!r}: add them first with `qualify users add {user or 'NAME'} --role sales`",
                field="user",
            )
    elif checked is Role.SALES:
        raise InvalidInput(
            "a sales key acts for one rep: say whom with --user NAME (a dashboard user, see `qualify users add`)",
            field="user",
        )
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = utcnow()
    uow.connection.execute(
        schema.api_keys.insert().values(
            key_id=key_id,
            secret_hash=_hash(secret),
            name=name.strip(),
            role=checked.value,
            created_at=now,
            user_name=user,
        )
    )
    details = {"name": name.strip(), "role": checked.value} | ({"user": user} if user else {})
    record_audit(uow, actor=by, action="key.create", target=key_id, details=details)
    return f"{PREFIX}_{key_id}_{secret}", KeyInfo(key_id, name.strip(), checked.value, now, None, None, user)


def authenticate(uow: UnitOfWork, token: str) -> Identity:
    """The identity behind a bearer token, or `AuthenticationFailed` (never saying which part was wrong)."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        raise AuthenticationFailed("not a Qualify API key")
    _, key_id, secret = parts
    keys, users = schema.api_keys, schema.users
    row = uow.connection.execute(
        select(
            keys.c.secret_hash,
            keys.c.name,
            keys.c.role,
            keys.c.revoked_at,
            keys.c.last_used_at,
            keys.c.user_name,
            users.c.disabled_at,
            users.c.id.label("user_id"),
        )
        .select_from(keys.outerjoin(users, users.c.name == keys.c.user_name))
        .where(keys.c.key_id == key_id)
    ).first()
    # Compare even when the key is unknown, so timing does not tell which keys exist.
    stored = row.secret_hash if row is not None else _hash("")
    if not hmac.compare_digest(stored, _hash(secret)) or row is None or row.revoked_at is not None:
        raise AuthenticationFailed("unknown, wrong or revoked API key")
    if row.user_name is not None and (row.user_id is None or row.disabled_at is not None):
        raise AuthenticationFailed("unknown, wrong or revoked API key")  # its user was disabled
    # Use is noted at most once a minute: a write on every request would serialise SQLite.
    stale = row.last_used_at is None or (utcnow() - row.last_used_at).total_seconds() > 60
    return Identity(key_id, row.name, Role(row.role), stale, row.user_name)


def touch_key(uow: UnitOfWork, key_id: str) -> None:
    """Note that the key was used now."""
    keys = schema.api_keys
    uow.connection.execute(update(keys).where(keys.c.key_id == key_id).values(last_used_at=utcnow()))


def list_keys(uow: UnitOfWork) -> list[KeyInfo]:
    k = schema.api_keys
    rows = uow.connection.execute(
        select(
            k.c.key_id, k.c.name, k.c.role, k.c.created_at, k.c.revoked_at, k.c.last_used_at, k.c.user_name
        ).order_by(k.c.id)
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
