"""Signed session cookies and CSRF tokens for the dashboard.

A session is `base64url(json) . base64url(HMAC-SHA256)` over the user's id, a CSRF token and an
expiry, signed with the workspace's session key, and the user's session epoch (signing out moves the epoch
on, so every copy of the cookie stops working, not only the browser's); the cookie is HttpOnly and SameSite=Lax (and
Secure over HTTPS). Every form posts the session's CSRF token; a request whose token does not
match is refused. Before sign-in, a short-lived pre-session carries the login form's token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

COOKIE = "qualify_session"
LIFETIME = 12 * 3600  # seconds a session lasts
PRE_LIFETIME = 3600  # seconds a login form stays valid
CLOCK_SLACK = 60  # seconds between the clocks of servers that share the key


@dataclass(frozen=True, slots=True)
class Session:
    user_id: int | None  # None: a pre-session (the login form's)
    csrf: str
    expires: float
    epoch: int = 0  # the user's session epoch when it was made (signing out moves it on)


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(fields: dict[str, Any], key: bytes) -> str:
    """`fields` as JSON with an HMAC-SHA256 of it: readable by anyone, changed by no one without `key`."""
    body = _encode(json.dumps(fields).encode())
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_encode(mac)}"


def unseal(value: str | None, key: bytes) -> dict[str, Any] | None:
    """The fields `seal` made, or None when the value is missing, malformed or tampered with."""
    if not value or "." not in value:
        return None
    body, mac = value.rsplit(".", 1)
    try:
        expected = hmac.new(key, body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _decode(mac)):
            return None
        data = json.loads(_decode(body))
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def sign(session: Session, key: bytes) -> str:
    return seal({"u": session.user_id, "c": session.csrf, "e": session.expires, "g": session.epoch}, key)


def verify(value: str | None, key: bytes, *, now: float | None = None) -> Session | None:
    """The session in a cookie, or None when it is missing, tampered with or expired."""
    data = unseal(value, key)
    if data is None:
        return None
    try:
        session = Session(data["u"], str(data["c"]), float(data["e"]), int(data.get("g", 0)))
    except (ValueError, KeyError, TypeError):
        return None
    now = now or time.time()
    # The server's own limit, whatever the cookie says: an expiry further off than a session lasts
    # was not made here (a key that leaked could otherwise sign a cookie valid for years).
    longest = LIFETIME if session.user_id is not None else PRE_LIFETIME
    if session.expires > now + longest + CLOCK_SLACK:
        return None
    return session if session.expires > now else None


def new_session(user_id: int | None, epoch: int = 0) -> Session:
    lifetime = LIFETIME if user_id is not None else PRE_LIFETIME
    return Session(user_id, secrets.token_urlsafe(24), time.time() + lifetime, epoch)


def csrf_matches(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode())
