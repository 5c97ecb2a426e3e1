"""Email templates: what they may use, how they are checked, and where they are kept.

Templates are user input, rendered in Jinja2's immutable sandbox (qualify.adapters.templating):
no attribute of Python's internals is reachable, an unknown name is an error, HTML is autoescaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from qualify.adapters import schema
from qualify.adapters.templating import Compiled, RenderFailure, TemplateSyntax, compile_source
from qualify.domain.automation import Template as AuthoredTemplate
from qualify.domain.errors import InvalidInput, QualifyError

SUBJECT_MAX = 500  # the column's width
SOURCE_MAX = 1_000_000  # characters of a template part, and of a rendered body

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class EmailRenderError(QualifyError):
    """A template that could not be rendered for a lead; the message names template, part and line."""


EmailTemplate = AuthoredTemplate  # the automation document's template, as email sends it


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
_KNOWN = frozenset(CONTEXT_NAMES)


def _compile(part: Part, source: str) -> Compiled:
    """Compiled once per source (raises TemplateSyntax); the filename is the part, so a runtime
    error names the template line it happened on. Only the HTML part is autoescaped."""
    return compile_source(f"<{part}>", source, autoescape=part == "html", known=_KNOWN)


def render_part(part: Part, source: str, context: Mapping[str, Any]) -> str:
    """Render one part, or raise EmailRenderError naming the part and line."""
    try:
        compiled = _compile(part, source)
    except TemplateSyntax as error:
        raise EmailRenderError(f"{part}, line {error.line}: {error.message}") from None
    if compiled.unknown:
        name, line = compiled.unknown[0]
        raise EmailRenderError(f"{part}, line {line}: unknown name {name!r}; known names: {', '.join(CONTEXT_NAMES)}")
    try:
        return compiled.render(context, max_chars=SOURCE_MAX)  # stopped there, not checked after
    except RenderFailure as error:
        where = f"{part}, line {error.line}" if error.line else part
        raise EmailRenderError(f"{where}: {error.message} ({error.kind})") from None


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
        except TemplateSyntax as error:
            problems.append(f"{part}, line {error.line}: {error.message}")
            continue
        if compiled.unknown:
            problems += [f"{part}, line {line}: unknown name {name!r}" for name, line in compiled.unknown]
            continue
        try:
            render_part(part, source, CONTEXT_NAMES)
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
