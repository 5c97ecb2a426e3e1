"""People who sign in to the dashboard: create, list, authenticate; and the session signing key.

Passwords are hashed with scrypt (a memory-hard KDF: N=2^14, r=8, p=1, a 16-byte random salt),
stored as `scrypt$N$r$p$salt$hash` (base64), compared in constant time. An unknown name costs a
hash too, so timing does not tell which names exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from qualify.adapters import schema
from qualify.domain.errors import Conflict, InvalidInput, NotFound
from qualify.service.audit import record_audit
from qualify.service.unit_of_work import UnitOfWork, utcnow

ROLES = ("admin", "marketing", "sales")
MIN_PASSWORD = 10
_N, _R, _P = 2**14, 8, 1
_SESSION_KEY = "session_secret"
MIN_SECRET = 32
# Words that mark a value copied from an example rather than made: a secret made only of them
# (with any separators, case or repetition), or holding one of the unmistakable ones, is refused.
_PLACEHOLDER_WORDS = frozenset((
    "changeme", "change", "me", "replace", "replaceme", "placeholder", "example", "sample", "secret",
    "secretkey", "session", "sessionsecret", "password", "passwd", "test", "testing", "dev", "development",
    "default", "insecure", "unsafe", "dummy", "fake", "todo", "fixme", "your", "yours", "my", "here",
    "key", "token", "qualify", "admin", "xxx", "x", "foo", "bar", "baz", "abc", "qwerty", "letmein", "none",
    "null", "empty", "set", "this", "to", "something", "random", "long", "string", "value", "a", "the",
    "goes", "go", "put", "insert", "generate", "generated", "new", "please", "real", "prod", "production",
    "for", "in", "of", "with", "and", "or", "is", "it", "signing", "cookie", "dashboard",
))  # fmt: skip
_TELLTALE = (
    "changeme", "replaceme", "placeholder", "yoursecret", "yoursession", "goeshere", "example", "insecure", "notsecret"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    created_at: datetime
    disabled_at: datetime | None = None
    session_epoch: int = 0

    @property
    def sees_every_lead(self) -> bool:
        """Managers (admin, marketing) see every MQL; a sales rep sees their own."""
        return self.role != "sales"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return kind == "scrypt" and hmac.compare_digest(got, expected)


_DUMMY = hash_password("not a password of anyone", salt=b"\0" * 16)


def add_user(uow: UnitOfWork, name: str, role: str, password: str, *, by: str = "cli") -> User:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("a user name is 1 to 200 characters", field="name")
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; expected one of: {', '.join(ROLES)}", field="role")
    _check_password(password)
    now = utcnow()
    try:
        with uow.connection.begin_nested():
            user_id = uow.connection.execute(
                schema.users.insert()
                .values(name=name, role=role, password_hash=hash_password(password), created_at=now)
                .returning(schema.users.c.id)
            ).scalar_one()
    except IntegrityError:
        raise Conflict(f"a user named {name!r} exists already") from None
    record_audit(uow, actor=by, action="user.add", target=name, details={"role": role})
    return User(user_id, name, role, now)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a password has at least {MIN_PASSWORD} characters", field="password")
    if len(password) > 1024:
        raise InvalidInput("a password has at most 1,024 characters", field="password")


def _user_row(uow: UnitOfWork, user_id: int) -> Any:
    row = uow.connection.execute(select(schema.users).where(schema.users.c.id == user_id)).first()
    if row is None:
        raise NotFound(f"no user #{user_id}")
    return row


def _active_admins(uow: UnitOfWork) -> int:
    t = schema.users
    return int(
        uow.connection.execute(select(func.count()).where(t.c.role == "admin", t.c.disabled_at.is_(None))).scalar() or 0
    )


def set_role(uow: UnitOfWork, user_id: int, role: str, *, by: str) -> None:
    """Give the user another role; the workspace's last enabled admin keeps theirs."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; expected one of: {', '.join(ROLES)}", field="role")
    row = _user_row(uow, user_id)
    if row.role == role:
        return
    if row.role == "admin" and row.disabled_at is None and _active_admins(uow) <= 1:
        raise Conflict(f"{row.name} is the last admin: make another admin first")
    t = schema.users
    # A new role takes effect on the next request; sessions carry the user's id, not the role.
    uow.connection.execute(update(t).where(t.c.id == user_id).values(role=role))
    record_audit(uow, actor=by, action="user.role", target=row.name, details={"from": row.role, "to": role})


def set_disabled(uow: UnitOfWork, user_id: int, disabled: bool, *, by: str) -> None:
    """Disable a user (signed out at once, their API keys stop) or enable them again."""
    row = _user_row(uow, user_id)
    if (row.disabled_at is not None) == disabled:
        return
    if disabled and row.role == "admin" and _active_admins(uow) <= 1:
        raise Conflict(f"{row.name} is the last admin: make another admin first")
    t = schema.users
    uow.connection.execute(update(t).where(t.c.id == user_id).values(disabled_at=utcnow() if disabled else None))
    if disabled:
        end_sessions(uow, user_id)
    record_audit(uow, actor=by, action="user.disable" if disabled else "user.enable", target=row.name)


def set_password(uow: UnitOfWork, user_id: int, password: str, *, by: str, current: str | None = None) -> int:
    """A new password (an admin's reset, or the user's own change with their `current` one);
    every session made before ends. Returns the user's new session epoch."""
    _check_password(password)
    row = _user_row(uow, user_id)
    if current is not None and not verify_password(current, row.password_hash):
        raise InvalidInput("the current password is not right", field="current")
    t = schema.users
    uow.connection.execute(update(t).where(t.c.id == user_id).values(password_hash=hash_password(password)))
    end_sessions(uow, user_id)
    record_audit(uow, actor=by, action="user.password", target=row.name)
    return int(row.session_epoch) + 1


def _columns() -> tuple[Any, ...]:
    t = schema.users
    return (t.c.id, t.c.name, t.c.role, t.c.created_at, t.c.disabled_at, t.c.session_epoch)


def list_users(uow: UnitOfWork) -> list[User]:
    rows = uow.connection.execute(select(*_columns()).order_by(schema.users.c.name))
    return [User(*row) for row in rows]


def find_user(uow: UnitOfWork, user_id: int) -> User | None:
    row = uow.connection.execute(select(*_columns()).where(schema.users.c.id == user_id)).first()
    return User(*row) if row is not None and row.disabled_at is None else None


def end_sessions(uow: UnitOfWork, user_id: int) -> None:
    """Sign the user out everywhere: every session made before now stops being accepted."""
    t = schema.users
    uow.connection.execute(update(t).where(t.c.id == user_id).values(session_epoch=t.c.session_epoch + 1))


def authenticate(uow: UnitOfWork, name: str, password: str) -> User | None:
    """The user whose name and password these are, or None (unknown, wrong or disabled alike)."""
    t = schema.users
    # No name holds a NUL (PostgreSQL could not even compare one): such a name is simply unknown.
    row = None if "\x00" in name else uow.connection.execute(select(t).where(t.c.name == name.strip())).first()
    if row is None:
        verify_password(password, _DUMMY)
        return None
    if not verify_password(password, row.password_hash) or row.disabled_at is not None:
        return None
    return User(row.id, row.name, row.role, row.created_at, row.disabled_at, row.session_epoch)


def _only_placeholder_words(folded: str) -> bool:
    """Whether `folded` (lower-case letters and digits) is made only of placeholder words and digits.

    A word break by dynamic programming, linear in the length: a regular expression such as
    `(?:word|…|[0-9]+)+` would backtrack exponentially on a value like "1111…1y".
    """
    longest = max(len(w) for w in _PLACEHOLDER_WORDS)
    ends = [True] + [False] * len(folded)  # ends[i]: folded[:i] splits into words and digits
    for i in range(1, len(folded) + 1):
        ends[i] = (folded[i - 1].isdigit() and ends[i - 1]) or any(
            ends[i - n] and folded[i - n : i] in _PLACEHOLDER_WORDS for n in range(1, min(longest, i) + 1)
        )
    return ends[-1]


def weak_secret(value: str | SecretStr) -> str | None:
    """Why `value` is not fit to sign anything (a placeholder, too short, too plain), or None.

    The reason never repeats the value: it is printed where the value must not be.
    """
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    stripped = text.strip()
    if not stripped:
        return "it is empty"
    if stripped != text:
        return "it starts or ends with white space (a copy and paste that went wrong?)"
    folded = re.sub(r"[^a-z0-9]", "", text.lower())
    if len(set(text)) == 1:
        return "it is one character repeated"
    if not folded or _only_placeholder_words(folded):
        return "it is a placeholder (words such as changeme, secret, example, test), not a random value"
    if any(word in folded for word in _TELLTALE):
        return "it contains a placeholder word (changeme, example, placeholder…), not only random characters"
    if len(text) < MIN_SECRET:
        return f"it is {len(text)} characters long; it needs {MIN_SECRET} or more"
    if len(set(text)) < 8:
        return "it uses fewer than 8 different characters"
    return None


# What the examples of a password setting say instead of one: refused where a password is read.
_PASSWORD_PLACEHOLDERS = ("changeme", "replaceme", "placeholder", "password", "yourpassword", "smtppassword")


def placeholder_password(value: str | SecretStr) -> str | None:
    """Why `value` (a password for another system, e.g. SMTP) is an example's placeholder, or None.

    Only unmistakable copies are refused (`…`, `<password>`, changeme): how strong another
    system's password is, is that system's business.
    """
    text = (value.get_secret_value() if isinstance(value, SecretStr) else value).strip()
    folded = re.sub(r"[^a-z0-9]", "", text.lower())
    if text in ("…", "...", "***") or (text.startswith("<") and text.endswith(">")):
        return "it is the placeholder of an example, not a password"
    if folded in _PASSWORD_PLACEHOLDERS or (text and len(set(text)) == 1 and text[0] in "x*.…"):
        return "it is a placeholder (changeme, password, xxx…), not a password"
    return None


def session_secret(uow: UnitOfWork, configured: str | SecretStr | None) -> bytes:
    """The key that signs dashboard sessions: the configured one, else one made once and kept in
    the workspace (so sessions survive a restart)."""
    if isinstance(configured, SecretStr):
        configured = configured.get_secret_value()
    if configured:
        return configured.encode()
    t = schema.workspace_settings
    value = uow.connection.execute(select(t.c.value).where(t.c.key == _SESSION_KEY)).scalar()
    if value is None:
        value = secrets.token_urlsafe(48)
        try:
            with uow.connection.begin_nested():
                uow.connection.execute(t.insert().values(key=_SESSION_KEY, value=value))
        except IntegrityError:  # another process made it first
            value = uow.connection.execute(select(t.c.value).where(t.c.key == _SESSION_KEY)).scalar_one()
    return str(value).encode()
