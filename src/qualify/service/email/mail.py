"""Email: templates, the outbox of rendered emails, SMTP delivery, and the tracking that comes back.

A workflow step `send_email: <template>` calls `enqueue` inside its own transaction: the template
is rendered then, with the lead's fields as they are at that moment, and one `emails` row is
written, `pending` (or `skipped` with the reason consent or the lead's data gave). The worker
calls `deliver_due` once per pass; it claims due rows (`pending` -> `sending`, committed),
re-checks consent, sends each through SMTP and records the result: `sent`, `pending` again
with a later due time (a transient failure), `failed` (a permanent one) or `skipped`.

Delivery is at most once: a row a crashed worker left in `sending` becomes `unknown` and is
never sent again, so nobody gets the same email twice (docs/email.md says why).

What comes back goes through `ingest_events`, so the active scoring model scores it:

- the open pixel (`/e/o/<token>.gif`) writes `email_open`, once per email per hour;
- a click (`/e/c/<token>?u=<url>&s=<signature>`) writes `email_click` with the url and
  `campaign` = the template, once per email, url and hour, and redirects only to a url signed
  with the workspace's link key (no open redirect);
- the unsubscribe link (`/e/u/<token>`, and the one-click POST of RFC 8058) sets the lead's
  `do_not_email` and writes `unsubscribe`, once per email.

Templates are user input, rendered in Jinja2's immutable sandbox: no attribute of Python's
internals is reachable, an unknown name is an error, HTML is autoescaped.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import html as html_lib
import logging
import re
import secrets
import smtplib
import ssl
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import ColumnElement, Connection, Row, func, select, update
from sqlalchemy.exc import IntegrityError

from qualify.adapters import schema
from qualify.domain.automation import Template as AuthoredTemplate
from qualify.domain.errors import InvalidInput, NotFound, QualifyError
from qualify.domain.records import Event
from qualify.service.audit import record_audit
from qualify.service.lifecycle.events import ingest_events
from qualify.service.unit_of_work import UnitOfWork, Workspace, retrying
from qualify.settings import Settings

log = logging.getLogger(__name__)

PENDING, SENDING, SENT, SKIPPED, FAILED, UNKNOWN = "pending", "sending", "sent", "skipped", "failed", "unknown"
STATUSES = (PENDING, SENDING, SENT, SKIPPED, FAILED, UNKNOWN)

# Why an email was not sent, as `emails.reason` says it.
REASON_ERASED = "lead erased"
REASON_DO_NOT_EMAIL = "lead has do_not_email"
REASON_NO_ADDRESS = "lead has no email address"

TRACKING_PREFIX = "/e"  # the tracking routes: /e/o (open), /e/c (click), /e/u (unsubscribe)
OPEN_WINDOW = 3600  # seconds: opens (and clicks of one url) of one email within one clock hour count once
LINK_KEY = "email_link_secret"  # workspace_settings row: the key that signs click links
SUBJECT_MAX = 500  # the column's width
SOURCE_MAX = 1_000_000  # characters of a template part, and of a rendered body
ERROR_TEXT = 300  # characters of an SMTP failure kept in `last_error`

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class EmailRenderError(QualifyError):
    """A template that could not be rendered for a lead; the message names template, part and line."""


class InvalidLink(QualifyError):
    """A click link whose signature does not match its url: forged or damaged."""


# --- templates ---------------------------------------------------------------------------------------


EmailTemplate = AuthoredTemplate  # the automation document's template, as this module sends it


Part = Literal["subject", "text", "html"]

# The names a template may use, with the kind of value each holds (for the trial render).
CONTEXT_NAMES: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "title": "Head of Engineering",
    "seniority": "head",
    "department": "engineering",
    "country": "GB",
    "source": "webinar",
    "channel": "organic",
    "owner": "sam",
    "stage": "mql",
    "persona": "engineering leader",
    "fit_score": 72.5,
    "fit_grade": "B",
    "engagement_score": 31.0,
    "company": "Example Ltd",
    "account": {"name": "Example Ltd", "domain": "example.com", "industry": "software", "employees": 120},
    "attributes": {},
    "unsubscribe_url": "http://127.0.0.1:8000/e/u/sample",
}


class _Undefined(ChainableUndefined):
    """A missing key of `account` or `attributes` renders empty (leads differ in what they have);
    an attribute the sandbox refuses still raises, so `{{ ''.__class__ }}` is an error, not blank.
    Unknown top-level names never get here: they are refused before rendering."""

    __slots__ = ()

    def __str__(self) -> str:
        if self._undefined_exception is not UndefinedError:
            self._fail_with_undefined_error()
        return ""


_REPEAT_MAX = 100_000  # items or characters `*` may build
_POWER_MAX = 100


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` bounded so a template cannot build a huge value."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > _POWER_MAX:
            raise SecurityError(f"exponent {right} is larger than {_POWER_MAX}")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int) and len(seq) * count > _REPEAT_MAX:
                    raise SecurityError(f"repeating builds more than {_REPEAT_MAX:,} items")
        return super().call_binop(context, operator, left, right)


def _finalize(value: Any) -> Any:
    """`None` (a field the lead lacks) prints as nothing, not as "None"."""
    return "" if value is None else value


@functools.cache
def _environment(autoescape: bool) -> _Sandbox:
    return _Sandbox(undefined=_Undefined, finalize=_finalize, autoescape=autoescape, keep_trailing_newline=True)


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: Template
    unknown: tuple[tuple[str, int], ...]  # names neither in the context nor set by the template, with a line


@functools.lru_cache(maxsize=512)
def _compile(part: Part, source: str) -> _Compiled:
    """Parse and compile once per source (raises TemplateSyntaxError). The filename is the part, so
    a runtime error's traceback names the template line it happened on."""
    env = _environment(part == "html")
    tree = env.parse(source, filename=f"<{part}>")
    undeclared = meta.find_undeclared_variables(tree) - CONTEXT_NAMES.keys() - env.globals.keys()
    first_line: dict[str, int] = {}
    for node in tree.find_all(nodes.Name):
        if node.name in undeclared and node.ctx == "load":
            first_line.setdefault(node.name, node.lineno)
    unknown = tuple(sorted(first_line.items(), key=lambda item: (item[1], item[0])))
    code = env.compile(tree, filename=f"<{part}>")
    return _Compiled(env.template_class.from_code(env, code, env.make_globals(None), None), unknown)


def _runtime_line(error: BaseException, part: Part) -> int | None:
    """The template line a runtime error happened on, from the traceback Jinja rewrites."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == f"<{part}>":
            line = frame.lineno
    return line


def _render_part(part: Part, source: str, context: Mapping[str, Any]) -> str:
    """Render one part, or raise EmailRenderError naming the part and line."""
    try:
        compiled = _compile(part, source)
    except TemplateSyntaxError as error:
        raise EmailRenderError(f"{part}, line {error.lineno}: {error.message}") from None
    if compiled.unknown:
        name, line = compiled.unknown[0]
        raise EmailRenderError(f"{part}, line {line}: unknown name {name!r}; known names: {', '.join(CONTEXT_NAMES)}")
    try:
        rendered = compiled.template.render(context)
    except Exception as error:  # anything a template can do wrong: an unsafe attribute, a type error, ...
        at = _runtime_line(error, part)
        where = f"{part}, line {at}" if at else part
        message = error.message if isinstance(error, TemplateError) and error.message else str(error)
        raise EmailRenderError(f"{where}: {message} ({type(error).__name__})") from None
    if len(rendered) > SOURCE_MAX:
        raise EmailRenderError(f"{part}: the rendered text is longer than {SOURCE_MAX:,} characters")
    return rendered


def _sources(template: EmailTemplate) -> list[tuple[Part, str]]:
    parts: list[tuple[Part, str]] = [("subject", template.subject), ("text", template.text)]
    if template.html is not None:
        parts.append(("html", template.html))
    return parts


def template_problems(template: EmailTemplate) -> list[str]:
    """Everything wrong with a template, each naming the part and line; empty when it is fine.

    Checked: the name; each part's Jinja2 syntax; names that are not in the context; and a trial
    render against a sample lead, which finds what the sandbox refuses (`''.__class__`) and other
    runtime errors. A problem that only some leads' data would cause cannot be found here: that
    one is reported by `enqueue` as an EmailRenderError.
    """
    problems: list[str] = []
    if not _NAME.fullmatch(template.name):
        problems.append(
            f"name: {template.name!r} is not 1 to 100 letters, digits, '_', '.' or '-' (starting with a letter or digit)"
        )
    if len(template.subject) > SUBJECT_MAX:
        problems.append(f"subject: longer than {SUBJECT_MAX} characters")
    if not template.subject.strip():
        problems.append("subject: empty")
    if not template.text.strip():
        problems.append("text: empty (every email has a plain-text body)")
    if template.html is not None and not template.html.strip():
        problems.append("html: empty (leave it out for a text-only email)")
    for part, source in _sources(template):
        if len(source) > SOURCE_MAX:
            problems.append(f"{part}: longer than {SOURCE_MAX:,} characters")
            continue
        if "\x00" in source:  # PostgreSQL cannot store it, nor could any mail carry it
            problems.append(f"{part}: contains the NUL character (\\x00)")
            continue
        try:
            compiled = _compile(part, source)
        except TemplateSyntaxError as error:
            problems.append(f"{part}, line {error.lineno}: {error.message}")
            continue
        if compiled.unknown:
            problems += [f"{part}, line {line}: unknown name {name!r}" for name, line in compiled.unknown]
            continue
        try:
            _render_part(part, source, CONTEXT_NAMES)
        except EmailRenderError as error:
            problems.append(str(error))
    return problems


def check_template(template: EmailTemplate) -> EmailTemplate:
    """The template, or InvalidInput listing its problems (field: `templates.<name>`)."""
    problems = template_problems(template)
    if problems:
        raise InvalidInput(
            f"template {template.name!r} has {len(problems)} problem(s): " + "; ".join(problems),
            field=f"templates.{template.name}",
        )
    return template


def save_templates(conn: Connection, templates: Iterable[EmailTemplate], now: datetime) -> None:
    """Create or replace templates by name; all or none (every one is checked before any is written).

    An email already rendered keeps the text it was rendered with: replacing a template changes
    only the emails enqueued after.
    """
    checked = [check_template(t) for t in templates]
    names = [t.name for t in checked]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInput(f"template(s) named more than once: {', '.join(twice)}", field="templates")
    t = schema.email_templates
    for template in checked:
        values = {"subject": template.subject, "text": template.text, "html": template.html, "updated_at": now}
        if conn.execute(update(t).where(t.c.name == template.name).values(**values)).rowcount:
            continue
        try:
            with conn.begin_nested():
                conn.execute(t.insert().values(name=template.name, **values))
        except IntegrityError:  # another transaction created it meanwhile: last writer wins
            conn.execute(update(t).where(t.c.name == template.name).values(**values))


def load_template(conn: Connection, name: str) -> EmailTemplate | None:
    t = schema.email_templates
    row = conn.execute(select(t.c.name, t.c.subject, t.c.text, t.c.html).where(t.c.name == name)).first()
    return EmailTemplate(row.name, row.subject, row.text, row.html) if row is not None else None


def list_templates(conn: Connection) -> list[EmailTemplate]:
    t = schema.email_templates
    rows = conn.execute(select(t.c.name, t.c.subject, t.c.text, t.c.html).order_by(t.c.name))
    return [EmailTemplate(row.name, row.subject, row.text, row.html) for row in rows]


# --- tracking links ----------------------------------------------------------------------------------


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


# --- enqueue: render now, send later -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuedEmail:
    id: int
    status: str
    reason: str | None


def _lead_row(conn: Connection, lead_id: int) -> Row[Any] | None:
    leads, accounts = schema.leads, schema.accounts
    statement = (
        select(
            leads,
            accounts.c.name.label("account_name"),
            accounts.c.domain.label("account_domain"),
            accounts.c.industry.label("account_industry"),
            accounts.c.employees.label("account_employees"),
            accounts.c.revenue.label("account_revenue"),
            accounts.c.country.label("account_country"),
        )
        .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
        .where(leads.c.id == lead_id)
    )
    return conn.execute(statement).first()


def consent_problem(row: Any) -> str | None:
    """Why this lead must not be emailed now, or None. `row` has erased_at, do_not_email and email."""
    if row.erased_at is not None:
        return REASON_ERASED
    if row.do_not_email:
        return REASON_DO_NOT_EMAIL
    if not row.email:
        return REASON_NO_ADDRESS
    return None


def lead_context(row: Row[Any], unsubscribe: str) -> dict[str, Any]:
    """What a template can use: the lead's fields, its account, and the unsubscribe link.

    Plain values only (strings, numbers, dicts of them), so the sandbox has nothing of the
    application to reach through them.
    """
    m = row._mapping
    account = {
        "name": m["account_name"],
        "domain": m["account_domain"],
        "industry": m["account_industry"],
        "employees": m["account_employees"],
        "revenue": m["account_revenue"],
        "country": m["account_country"],
    }
    first, last = m["first_name"], m["last_name"]
    context = {
        name: m[name]
        for name in (
            "first_name", "last_name", "email", "title", "seniority", "department", "country", "source", "channel",
            "owner", "stage", "persona", "fit_grade",
        )
    }  # fmt: skip
    context.update(
        name=" ".join(p for p in (first, last) if p) or None,
        fit_score=round(float(m["fit_score"] or 0), 1),
        engagement_score=round(float(m["engagement_score"] or 0), 1),
        company=account["name"] or account["domain"],
        account=account,
        attributes=dict(m["attributes"] or {}),
        unsubscribe_url=unsubscribe,
    )
    return context


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str | None


def render_email(
    template: EmailTemplate, context: Mapping[str, Any], *, public_url: str, key: bytes, token: str
) -> RenderedEmail:
    """Render the three parts for one lead; the HTML gets tracked links and the open pixel.

    The text body keeps its links as written: it is what a careful reader checks before clicking,
    and a redirect there would be a long opaque address. Clicks are counted from the HTML part.
    """
    try:
        subject = " ".join(_render_part("subject", template.subject, context).split())  # one line: no header injection
        if len(subject) > SUBJECT_MAX:
            subject = subject[: SUBJECT_MAX - 1] + "…"
        text = _render_part("text", template.text, context)
        body_html = None
        if template.html is not None:
            body_html = _render_part("html", template.html, context)
            body_html = add_open_pixel(rewrite_links(body_html, public_url, key, token), open_url(public_url, token))
    except EmailRenderError as error:
        raise EmailRenderError(f"template {template.name!r}: {error}") from None
    return RenderedEmail(subject, text, body_html)


def enqueue(
    conn: Connection,
    settings: Settings,
    *,
    lead_id: int,
    template: str,
    now: datetime,
    enrolment_id: int | None = None,
    step: int | None = None,
) -> QueuedEmail:
    """Render `template` for the lead now and queue it: one `emails` row, `pending`, or `skipped`
    with the reason when the lead may not or cannot be emailed (erased, do_not_email, no address).

    Raises NotFound for an unknown lead or template, and EmailRenderError when the template cannot
    be rendered for this lead: both are mistakes to fix, not a lead's choice to record. The same
    enrolment and step queue one email only: a second call returns the first row.
    """
    e = schema.emails
    if enrolment_id is not None and step is not None:
        existing = conn.execute(
            select(e.c.id, e.c.status, e.c.reason).where(e.c.enrolment_id == enrolment_id, e.c.step == step)
        ).first()
        if existing is not None:
            return QueuedEmail(existing.id, existing.status, existing.reason)
    row = _lead_row(conn, lead_id)
    if row is None:
        raise NotFound(f"no lead with id {lead_id}")
    found = load_template(conn, template)
    if found is None:
        raise NotFound(f"no email template named {template!r}")
    token = secrets.token_urlsafe(24)
    values: dict[str, Any] = {
        "token": token, "lead_id": lead_id, "enrolment_id": enrolment_id, "step": step, "template": template,
        "created_at": now, "attempts": 0, "next_attempt_at": now,
    }  # fmt: skip
    reason = consent_problem(row)
    if reason is not None:
        # Nothing rendered: a person who may not be emailed leaves no copy of an email behind.
        values.update(to_address=row.email or "", subject="", body_text="", status=SKIPPED, reason=reason)
    else:
        key = link_key(conn)
        assert key is not None
        context = lead_context(row, unsubscribe_url(settings.public_url, token))
        rendered = render_email(found, context, public_url=settings.public_url, key=key, token=token)
        values.update(
            to_address=row.email,
            subject=rendered.subject,
            body_text=rendered.text,
            body_html=rendered.html,
            status=PENDING,
            reason=None,
        )
    new_id = conn.execute(e.insert().values(**values).returning(e.c.id)).scalar_one()
    return QueuedEmail(new_id, values["status"], values["reason"])


# --- delivery ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class EmailSummary:
    """What one `deliver_due` did: sent, put back for a retry, failed for good, skipped at send
    time, found abandoned in `sending` (now `unknown`), and held because sending is off."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: int = 0
    unknown: int = 0
    held: int = 0

    @property
    def busy(self) -> bool:
        return any((self.sent, self.retrying, self.failed, self.skipped, self.unknown))


@dataclass(frozen=True, slots=True)
class _Claim:
    id: int
    token: str
    lead_id: int
    template: str
    to_address: str
    subject: str
    body_text: str
    body_html: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: Literal["sent", "transient", "permanent"]
    error: str | None = None


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds to wait after `attempts` failed attempts: base, doubling, capped."""
    return float(min(settings.email_backoff_cap, settings.email_backoff_base * 2 ** min(attempts - 1, 40)))


def _lease(settings: Settings, claims: int) -> float:
    """How long a claim may stay in `sending` before it counts as abandoned: longer than sending
    every claimed email at the slowest the timeouts allow (a few commands each), plus a margin."""
    return settings.smtp_timeout * 4 * max(claims, 1) + 300


def mark_abandoned(conn: Connection, now: datetime) -> int:
    """Rows whose claim ran out while `sending` (the worker died mid-send) become `unknown`.

    Whether the server took such an email cannot be known; sending it again could mail the
    person twice, so it is not sent again (at most once)."""
    e = schema.emails
    return int(
        conn.execute(
            update(e)
            .where(e.c.status == SENDING, e.c.next_attempt_at <= now)
            .values(status=UNKNOWN, reason="the worker stopped while sending; not sent again")
        ).rowcount
    )


def claim_due(conn: Connection, now: datetime, *, limit: int, lease: float) -> list[_Claim]:
    """Take up to `limit` due pending emails for this worker (`sending` until `now + lease`).

    FOR UPDATE SKIP LOCKED: two workers on PostgreSQL claim different rows; SQLite has one
    writer at a time, which serialises the claims anyway.
    """
    e = schema.emails
    ids = list(
        conn.execute(
            select(e.c.id)
            .where(e.c.status == PENDING, e.c.next_attempt_at <= now)
            .order_by(e.c.next_attempt_at, e.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if not ids:
        return []
    conn.execute(
        update(e)
        .where(e.c.id.in_(ids), e.c.status == PENDING)
        .values(status=SENDING, next_attempt_at=now + timedelta(seconds=lease))
    )
    rows = conn.execute(
        select(
            e.c.id, e.c.token, e.c.lead_id, e.c.template, e.c.to_address, e.c.subject, e.c.body_text, e.c.body_html,
            e.c.attempts,
        )
        .where(e.c.id.in_(ids), e.c.status == SENDING)
        .order_by(e.c.next_attempt_at, e.c.id)
    )  # fmt: skip
    return [_Claim(*row) for row in rows]


def message_id(token: str, sender: str) -> str:
    """The Message-ID of an email: the same on every attempt (so a receiver can tell a repeat), and
    not the token itself (which opens the tracking links)."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "qualify.invalid"
    return f"<qualify.{hashlib.sha256(token.encode()).hexdigest()[:24]}@{domain}>"


def build_message(claim: _Claim, settings: Settings, now: datetime) -> EmailMessage:
    """The MIME message: text (and HTML as an alternative), with the one-click unsubscribe headers."""
    assert settings.email_from is not None
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = claim.to_address
    message["Subject"] = claim.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id(claim.token, settings.email_from)
    message["List-Unsubscribe"] = f"<{unsubscribe_url(settings.public_url, claim.token)}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(claim.body_text)
    if claim.body_html is not None:
        message.add_alternative(claim.body_html, subtype="html")
    return message


class SmtpUnavailable(Exception):
    """Connecting, securing or logging in failed: nothing can be sent this pass."""


class SmtpSender:
    """One SMTP session for a pass, opened at the first email and reused; reopened after a broken one."""

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host is not None
        self.settings = settings
        self.host = settings.smtp_host
        default_port = {"none": 25, "starttls": 587, "tls": 465}[settings.smtp_security]
        self.port = settings.smtp_port or default_port
        self._session: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s, timeout = self.settings, self.settings.smtp_timeout
        session: smtplib.SMTP | None = None
        try:
            if s.smtp_security == "tls":
                session = smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=ssl.create_default_context())
            else:
                session = smtplib.SMTP(self.host, self.port, timeout=timeout)
                if s.smtp_security == "starttls":
                    session.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                session.login(s.smtp_username, password)
        except (smtplib.SMTPException, OSError) as error:
            if session is not None:
                _close_quietly(session)
            raise SmtpUnavailable(f"{self.host}:{self.port}: {_describe(error)}") from None
        return session

    def send(self, message: EmailMessage, to_address: str) -> _Outcome:
        """Send one message; SmtpUnavailable when no session could be opened."""
        if self._session is None:
            self._session = self._connect()
        assert self.settings.email_from is not None
        sender = parseaddr(self.settings.email_from)[1]
        try:
            self._session.send_message(message, from_addr=sender, to_addrs=[to_address])
        except smtplib.SMTPRecipientsRefused as error:
            code, text = error.recipients.get(to_address, (450, b"recipient refused"))
            return _classified(code, text)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as error:
            return _classified(error.smtp_code, error.smtp_error)  # the session was reset and stays usable
        except smtplib.SMTPNotSupportedError as error:  # e.g. a non-ASCII address to a server without SMTPUTF8
            return _Outcome("permanent", _describe(error))
        except (smtplib.SMTPException, OSError) as error:
            self.close()  # disconnected or in an unknown state: a fresh session for the next email
            return _Outcome("transient", _describe(error))
        return _Outcome("sent")

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            try:
                session.quit()
            except (smtplib.SMTPException, OSError):
                _close_quietly(session)

    def __enter__(self) -> SmtpSender:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _close_quietly(session: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        session.close()


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else error.smtp_error
        return f"SMTP {error.smtp_code} {text}"[:ERROR_TEXT]
    return f"{type(error).__name__}: {error}"[:ERROR_TEXT]


def _classified(code: int, text: bytes | str) -> _Outcome:
    """5xx refuses for good; anything else (4xx: try later) is transient."""
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    error = f"SMTP {code} {message}"[:ERROR_TEXT]
    return _Outcome("permanent" if 500 <= code < 600 else "transient", error)


def _consent_now(conn: Connection, lead_id: int) -> str | None:
    """Consent as it is at send time: an unsubscribe since the email was queued stops it."""
    leads = schema.leads
    row = conn.execute(
        select(leads.c.erased_at, leads.c.do_not_email, leads.c.email).where(leads.c.id == lead_id)
    ).first()
    return REASON_ERASED if row is None else consent_problem(row)


def _record(conn: Connection, claim: _Claim, outcome: _Outcome, settings: Settings, now: datetime) -> str:
    """Write one attempt's result; returns the status the email has now."""
    e = schema.emails
    attempts = claim.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "last_error": outcome.error}
    if outcome.status == "sent":
        assert settings.email_from is not None
        values.update(status=SENT, sent_at=now, message_id=message_id(claim.token, settings.email_from), reason=None)
        # Even if the claim was meanwhile taken for abandoned: the truth is that it went out.
        condition: ColumnElement[bool] = e.c.status.in_((SENDING, UNKNOWN))
    else:
        condition = e.c.status == SENDING
        if outcome.status == "permanent":
            values.update(status=FAILED, reason="refused by the SMTP server")
        elif attempts >= settings.email_max_attempts:
            values.update(status=FAILED, reason=f"gave up after {attempts} attempts")
        else:
            values.update(status=PENDING, next_attempt_at=now + timedelta(seconds=backoff(settings, attempts)))
    conn.execute(update(e).where(e.c.id == claim.id, condition).values(**values))
    return str(values["status"])


def _count(summary: EmailSummary, status: str) -> None:
    if status == SENT:
        summary.sent += 1
    elif status == FAILED:
        summary.failed += 1
    elif status == SKIPPED:
        summary.skipped += 1
    else:
        summary.retrying += 1


def count_due(conn: Connection, now: datetime) -> int:
    e = schema.emails
    return int(
        conn.execute(
            select(func.count()).select_from(e).where(e.c.status == PENDING, e.c.next_attempt_at <= now)
        ).scalar_one()
    )


def deliver_due(workspace: Workspace, now: datetime, *, limit: int = 100) -> EmailSummary:
    """Send up to `limit` emails due at `now` through SMTP; one pass of the worker.

    Claims are committed before anything is sent, and each result is committed on its own, so
    a crash loses at most the record of one send (that email becomes `unknown`, never resent).
    With no `QUALIFY_SMTP_HOST` (or no `QUALIFY_EMAIL_FROM`) sending is off: the due emails stay
    pending, counted as `held`, and a warning says why.
    """
    settings = workspace.settings
    summary = EmailSummary()
    with workspace.unit_of_work() as uow:
        summary.unknown = mark_abandoned(uow.connection, now)
    if summary.unknown:
        log.warning(
            "%d email(s) were left in 'sending' by a stopped worker: now 'unknown', not resent", summary.unknown
        )
    if not settings.smtp_host or not settings.email_from:
        with workspace.unit_of_work(read_only=True) as uow:
            summary.held = count_due(uow.connection, now)
        if summary.held:
            missing = "QUALIFY_SMTP_HOST" if not settings.smtp_host else "QUALIFY_EMAIL_FROM"
            log.warning("sending email is off (%s is not set): %d email(s) wait as pending", missing, summary.held)
        return summary
    with workspace.unit_of_work() as uow:
        claims = claim_due(uow.connection, now, limit=limit, lease=_lease(settings, limit))
    if not claims:
        return summary
    untouched = [claim.id for claim in claims]  # claimed, and not yet on their way to the server
    try:
        with SmtpSender(settings) as sender:
            _send_claims(workspace, sender, claims, untouched, summary, now)
    except BaseException:
        _release(workspace, untouched, now)
        raise
    return summary


def _send_claims(
    workspace: Workspace,
    sender: SmtpSender,
    claims: list[_Claim],
    untouched: list[int],
    summary: EmailSummary,
    now: datetime,
) -> None:
    settings = workspace.settings
    e = schema.emails
    unavailable: str | None = None
    for claim in claims:
        with workspace.unit_of_work() as uow:
            reason = _consent_now(uow.connection, claim.lead_id)
            if reason is not None:
                uow.connection.execute(
                    update(e).where(e.c.id == claim.id).values(status=SKIPPED, reason=f"at send time: {reason}")
                )
        untouched.remove(claim.id)
        if reason is not None:
            summary.skipped += 1
            continue
        outcome = _Outcome("transient", unavailable)
        if unavailable is None:
            try:
                message = build_message(claim, settings, now)
            except (ValueError, TypeError) as error:  # an address or subject no message can carry
                outcome = _Outcome("permanent", f"cannot build the message: {error}"[:ERROR_TEXT])
            else:
                try:
                    outcome = sender.send(message, claim.to_address)
                except SmtpUnavailable as error:
                    # No session at all: the rest of the claims wait too, without a connection attempt each.
                    unavailable = str(error)
                    outcome = _Outcome("transient", unavailable)
                    log.warning("cannot use the SMTP server %s; the emails will be retried", unavailable)
        with workspace.unit_of_work() as uow:
            status = _record(uow.connection, claim, outcome, settings, now)
        _count(summary, status)


def _release(workspace: Workspace, ids: list[int], now: datetime) -> None:
    """After an error mid-pass: claims that never reached the SMTP server go back to pending, due
    now, rather than waiting to become `unknown` (best effort: with the store down they will)."""
    if not ids:
        return
    e = schema.emails
    try:
        with workspace.unit_of_work() as uow:
            uow.connection.execute(
                update(e).where(e.c.id.in_(ids), e.c.status == SENDING).values(status=PENDING, next_attempt_at=now)
            )
    except Exception:
        log.exception("could not put %d claimed email(s) back to pending", len(ids))


# --- what comes back: opens, clicks, unsubscribes ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackedEmail:
    id: int
    lead_id: int
    template: str


def _by_token(conn: Connection, token: str) -> TrackedEmail | None:
    if not token or len(token) > 40:
        return None
    e = schema.emails
    row = conn.execute(select(e.c.id, e.c.lead_id, e.c.template).where(e.c.token == token)).first()
    return TrackedEmail(row.id, row.lead_id, row.template) if row is not None else None


def _lead_key(conn: Connection, lead_id: int) -> tuple[str | None, str | None] | None:
    """(email, external_id) that events find the lead by; None for an erased lead (no events)."""
    leads = schema.leads
    row = conn.execute(
        select(leads.c.email, leads.c.external_id, leads.c.erased_at).where(leads.c.id == lead_id)
    ).first()
    if row is None or row.erased_at is not None or not (row.email or row.external_id):
        return None
    return (row.email, None) if row.email else (None, row.external_id)


def _ingest_one(uow: UnitOfWork, email: TrackedEmail, event_id: str, kind: str, now: datetime, **props: Any) -> bool:
    """Ingest one event for the email's lead; False when it was a repeat (or the lead is erased)."""
    keys = _lead_key(uow.connection, email.lead_id)
    if keys is None:
        return False
    properties = {"campaign": email.template, "email_id": email.id, "channel": "email", **props}
    event = Event(event_id, kind, now, email=keys[0], external_id=keys[1], properties=properties)
    [outcome] = ingest_events(uow, [event], create_unknown=False, now=now, by="email")
    return outcome.status == "accepted"


def _window(now: datetime) -> int:
    return int(now.timestamp() // OPEN_WINDOW)


def record_open(workspace: Workspace, token: str, now: datetime) -> bool | None:
    """The pixel was fetched: `email_open` once per email per hour. None for an unknown token,
    False for a repeat, True when an event was written."""

    def use_case(uow: UnitOfWork) -> bool | None:
        email = _by_token(uow.connection, token)
        if email is None:
            return None
        return _ingest_one(uow, email, f"email-open:{email.id}:{_window(now)}", "email_open", now)

    return retrying(workspace, use_case)


def record_click(workspace: Workspace, token: str, url: str, signature: str, now: datetime) -> str:
    """A tracked link was followed: check its signature, write `email_click` (once per email, url
    and hour) and return where to send the reader. NotFound for an unknown token, InvalidLink
    for a url this workspace did not sign for this email.

    A failure to write the event (no active scoring model, the store busy) is logged and does not
    stop the reader: they still get where the email promised to take them.
    """
    with workspace.unit_of_work(read_only=True) as uow:
        found = _by_token(uow.connection, token)
        key = link_key(uow.connection, create=False)
    if found is None:
        raise NotFound("this link is not one of ours (unknown email)")
    if key is None or not hmac.compare_digest(link_signature(key, token, url), signature or ""):
        raise InvalidLink("this link's signature does not match its address: it was changed or forged")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidLink("only http and https addresses are followed")
    email = found
    event_id = f"email-click:{email.id}:{hashlib.sha256(url.encode()).hexdigest()[:16]}:{_window(now)}"
    try:
        retrying(workspace, lambda uow: _ingest_one(uow, email, event_id, "email_click", now, url=url))
    except QualifyError:
        log.exception("the click on email %d could not be recorded", email.id)
    return url


def unsubscribe_address(workspace: Workspace, token: str) -> str | None:
    """The address an unsubscribe link is for, partly hidden (`j…@acme.com`), for the confirmation
    page; None for an unknown token, "" when the lead has no address any more."""
    with workspace.unit_of_work(read_only=True) as uow:
        email = _by_token(uow.connection, token)
        if email is None:
            return None
        leads = schema.leads
        address = uow.connection.execute(select(leads.c.email).where(leads.c.id == email.lead_id)).scalar()
    if not address:
        return ""
    local, _, domain = str(address).partition("@")
    return f"{local[:1]}…@{domain}"


def unsubscribe(workspace: Workspace, token: str, now: datetime) -> bool:
    """Set the lead's `do_not_email` (committed first: consent is kept even if scoring fails), then
    write `unsubscribe`, once per email. False for an unknown token."""
    leads = schema.leads
    with workspace.unit_of_work() as uow:
        found = _by_token(uow.connection, token)
        if found is None:
            return False
        email = found
        changed = uow.connection.execute(
            update(leads)
            .where(leads.c.id == email.lead_id, leads.c.do_not_email.is_(False), leads.c.erased_at.is_(None))
            .values(do_not_email=True, updated_at=now)
        ).rowcount
        if changed:
            key = uow.connection.execute(
                select(leads.c.email, leads.c.external_id).where(leads.c.id == email.lead_id)
            ).one()
            record_audit(
                uow,
                actor="recipient",
                action="lead.unsubscribe",
                target=key.email or key.external_id,
                at=now,
                details={"lead_id": email.lead_id, "email_id": email.id, "template": email.template},
            )
    try:
        retrying(workspace, lambda uow: _ingest_one(uow, email, f"email-unsubscribe:{email.id}", "unsubscribe", now))
    except QualifyError:
        log.exception("the unsubscribe from email %d is kept but its event could not be recorded", email.id)
    return True


# --- reading the outbox, and personal data -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmailInfo:
    """One row of the email outbox as an operator sees it (no bodies)."""

    id: int
    lead_id: int
    template: str
    to_address: str
    subject: str
    status: str
    reason: str | None
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    sent_at: datetime | None
    last_error: str | None
    enrolment_id: int | None
    step: int | None


def list_emails(
    conn: Connection, *, status: str | None = None, lead_id: int | None = None, limit: int = 100
) -> list[EmailInfo]:
    """Emails, newest first, optionally of one status or one lead."""
    e = schema.emails
    statement = select(
        e.c.id, e.c.lead_id, e.c.template, e.c.to_address, e.c.subject, e.c.status, e.c.reason, e.c.created_at,
        e.c.attempts, e.c.next_attempt_at, e.c.sent_at, e.c.last_error, e.c.enrolment_id, e.c.step,
    ).order_by(e.c.id.desc()).limit(limit)  # fmt: skip
    if status is not None:
        if status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}; expected one of: {', '.join(STATUSES)}", field="status")
        statement = statement.where(e.c.status == status)
    if lead_id is not None:
        statement = statement.where(e.c.lead_id == lead_id)
    return [EmailInfo(**row._mapping) for row in conn.execute(statement)]


def move_lead_emails(conn: Connection, from_lead: int, to_lead: int) -> int:
    """A merge: the duplicate's emails become the kept lead's (and its tracking then scores that lead)."""
    e = schema.emails
    return int(conn.execute(update(e).where(e.c.lead_id == from_lead).values(lead_id=to_lead)).rowcount)


def forget_lead_emails(conn: Connection, lead_id: int) -> int:
    """An erasure: the lead's emails keep their status and times (for the counts) but lose the
    address, subject and bodies; those still waiting are skipped. Returns how many rows."""
    e = schema.emails
    conn.execute(
        update(e).where(e.c.lead_id == lead_id, e.c.status == PENDING).values(status=SKIPPED, reason=REASON_ERASED)
    )
    return int(
        conn.execute(
            update(e).where(e.c.lead_id == lead_id).values(to_address="", subject="", body_text="", body_html=None)
        ).rowcount
    )
