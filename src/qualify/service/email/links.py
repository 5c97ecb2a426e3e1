"""Tracking links: the key that signs them, the open, click and unsubscribe addresses, and the
rewriting of an HTML body's links into click-tracking redirects.

- the open pixel is `/e/o/<token>.gif`;
- a click is `/e/c/<token>?u=<url>&s=<signature>`: the signature (HMAC with the workspace's link
  key) binds the url to the email, so the redirect goes only where we sent it (no open redirect);
- the unsubscribe link is `/e/u/<token>` (and the one-click POST of RFC 8058).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html as html_lib
import re
import secrets
from html.parser import HTMLParser
from urllib.parse import quote, urlsplit

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from qualify.adapters import schema
from qualify.domain.errors import QualifyError

TRACKING_PREFIX = "/e"  # the tracking routes: /e/o (open), /e/c (click), /e/u (unsubscribe)
LINK_KEY = "email_link_secret"  # workspace_settings row: the key that signs click links


class InvalidLink(QualifyError):
    """A click link whose signature does not match its url: forged or damaged."""


def link_key(conn: Connection, *, create: bool = True) -> bytes | None:
    """The key that signs click links: made once per workspace and kept in `workspace_settings`.

    Its own key rather than the session secret, so that changing the session secret (to sign
    everyone out of the dashboard) does not break the links in emails already sent.
    """
    t = schema.workspace_settings
    value = conn.execute(select(t.c.value).where(t.c.key == LINK_KEY)).scalar()
    if value is None:
        if not create:
            return None
        value = secrets.token_urlsafe(32)
        try:
            with conn.begin_nested():
                conn.execute(t.insert().values(key=LINK_KEY, value=value))
        except IntegrityError:  # another process made it first
            value = conn.execute(select(t.c.value).where(t.c.key == LINK_KEY)).scalar_one()
    return str(value).encode()


def link_signature(key: bytes, token: str, url: str) -> str:
    """HMAC-SHA256 of the email's token and the url, 128 bits, base64url: binds a link to one email."""
    digest = hmac.new(key, f"{token}\n{url}".encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def open_url(public_url: str, token: str) -> str:
    return f"{public_url}{TRACKING_PREFIX}/o/{token}.gif"


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url}{TRACKING_PREFIX}/u/{token}"


def click_url(public_url: str, key: bytes, token: str, url: str) -> str:
    return f"{public_url}{TRACKING_PREFIX}/c/{token}?u={quote(url, safe='')}&s={link_signature(key, token, url)}"


def _trackable(url: str, public_url: str) -> bool:
    """An absolute http(s) link that is not one of our own tracking links."""
    parts = urlsplit(url)
    return (
        parts.scheme.lower() in ("http", "https")
        and bool(parts.hostname)
        and not url.startswith(f"{public_url}{TRACKING_PREFIX}/")
    )


class _Anchors(HTMLParser):
    """Finds the start tags of links (`<a>`, `<area>`) with where they are in the source."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, int, str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("a", "area"):
            line, column = self.getpos()
            self.found.append((line, column, self.get_starttag_text() or "", attrs))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def rewrite_links(body: str, public_url: str, key: bytes, token: str) -> str:
    """Every http(s) `href` of a link in the HTML body, replaced by its click-tracking redirect.

    The tags are found by an HTML parser (not a regular expression) and only those start tags
    are rewritten; the rest of the document stays byte for byte as the template made it.
    """
    parser = _Anchors()
    parser.feed(body)
    parser.close()
    starts = [0]
    for index, char in enumerate(body):
        if char == "\n":
            starts.append(index + 1)
    pieces: list[str] = []
    done = 0
    for line, column, original, attrs in parser.found:
        offset = starts[line - 1] + column
        if body[offset : offset + len(original)] != original:
            continue  # the parser's position does not point at the tag: leave it alone
        changed = False
        rebuilt: list[str] = []
        for name, value in attrs:
            if name == "href" and value is not None and _trackable(value.strip(), public_url):
                value, changed = click_url(public_url, key, token, value.strip()), True
            rebuilt.append(f" {name}" if value is None else f' {name}="{html_lib.escape(value, quote=True)}"')
        if not changed:
            continue
        tag = original[1:].split(None, 1)[0].rstrip("/>")
        closing = "/>" if original.endswith("/>") else ">"
        pieces += [body[done:offset], f"<{tag}{''.join(rebuilt)}{closing}"]
        done = offset + len(original)
    pieces.append(body[done:])
    return "".join(pieces)


_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def add_open_pixel(body: str, pixel_url: str) -> str:
    """The 1×1 open pixel, before `</body>` (or at the end when there is none)."""
    pixel = (
        f'<img src="{html_lib.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0" />'
    )
    ends = list(_BODY_END.finditer(body))
    if not ends:
        return body + pixel
    at = ends[-1].start()
    return body[:at] + pixel + body[at:]
