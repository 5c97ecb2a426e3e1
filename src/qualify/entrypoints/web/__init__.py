"""The dashboard: server-rendered pages (Jinja2) under `/app`, served by `qualify serve`.

Sign-in with a user made by `qualify users add`; a signed session cookie; a CSRF token on every
form. In-place actions (accept, reject, disqualify in the sales queue) post with a few lines of
our own JavaScript (`static/app.js`) and swap the row the server sends back; without JavaScript
the same forms post and redirect. Charts are SVG drawn on the server: nothing is fetched from
elsewhere, so the dashboard works offline.
"""

from __future__ import annotations

import csv
import io
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qualify.adapters.schema import MAX_ID
from qualify.domain.errors import IllegalTransition, InvalidInput, QualifyError
from qualify.domain.lifecycle import FUNNEL, REASON_WORDS
from qualify.entrypoints.ratelimit import TokenBucket, app_bucket
from qualify.entrypoints.web import session as sessions
from qualify.service.admin import users
from qualify.service.unit_of_work import Workspace, retrying, utcnow

HERE = FilePath(__file__).parent
QUEUE_SIZE = 50
INSIGHTS_WAIT = 10.0  # seconds the first insights request of a process waits for the figures
_INSIGHTS_LOCK = threading.Lock()
templates = Environment(loader=PackageLoader("qualify.entrypoints.web", "templates"), autoescape=select_autoescape())


def _span(seconds: float) -> str:
    """A duration in the largest whole unit that fits: 45 min, 3 h, 2 d."""
    seconds = abs(seconds)
    if seconds < 3600:
        return f"{max(1, int(seconds // 60))} min"
    if seconds < 2 * 86_400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86_400)} d"


templates.filters["span"] = _span
templates.filters["n"] = lambda value: f"{value:,}"  # a count with thousands separators
templates.filters["reason"] = lambda code: REASON_WORDS.get(code, code)  # a reason code in words


class SignInNeeded(Exception):
    """Raised by the page dependencies; answered with a redirect to the sign-in page."""


class Refused(Exception):
    """The signed-in user's role may not open the page (answered 403)."""


def _workspace(request: Request) -> Workspace:
    workspace: Workspace = request.app.state.workspace
    return workspace


def _key(request: Request) -> bytes:
    workspace = _workspace(request)
    cached = getattr(request.app.state, "session_key", None)
    if cached is None:
        with workspace.unit_of_work() as uow:
            cached = users.session_secret(uow, workspace.settings.session_secret)
        request.app.state.session_key = cached
    key: bytes = cached
    return key


def _session(request: Request) -> sessions.Session | None:
    return sessions.verify(request.cookies.get(sessions.COOKIE), _key(request))


def signed_in(request: Request) -> tuple[users.User, sessions.Session]:
    found = _session(request)
    if found is None or found.user_id is None:
        raise SignInNeeded
    with _workspace(request).unit_of_work(read_only=True) as uow:
        user = users.find_user(uow, found.user_id)
    if user is None or user.session_epoch != found.epoch:
        raise SignInNeeded
    request.state.user, request.state.session = user, found
    return user, found


def _only(*roles: str) -> Callable[..., tuple[users.User, sessions.Session]]:
    """A dependency admitting a signed-in user of one of `roles` (others are refused, 403)."""

    def check(
        who: Annotated[tuple[users.User, sessions.Session], Depends(signed_in)],
    ) -> tuple[users.User, sessions.Session]:
        if who[0].role not in roles:
            raise Refused
        return who

    return check


SignedIn = Annotated[tuple[users.User, sessions.Session], Depends(signed_in)]
Manager = Annotated[tuple[users.User, sessions.Session], Depends(_only("admin", "marketing"))]
Admin = Annotated[tuple[users.User, sessions.Session], Depends(_only("admin"))]


def _checked(who: tuple[users.User, sessions.Session], token: str | None) -> users.User:
    if not sessions.csrf_matches(who[1], token):
        raise Refused
    return who[0]


def _page(name: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
    user = getattr(request.state, "user", None)
    session = getattr(request.state, "session", None)
    html = templates.get_template(name).render(
        user=user, csrf=session.csrf if session else "", path=request.url.path, **context
    )
    return HTMLResponse(html, status_code=status)


def _set_cookie(request: Request, response: Response, found: sessions.Session) -> None:
    response.set_cookie(
        sessions.COOKIE,
        sessions.sign(found, _key(request)),
        max_age=int(found.expires - datetime.now(UTC).timestamp()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/app",
    )


router = APIRouter(prefix="/app", include_in_schema=False)
LeadId = Annotated[int, Path(ge=1, le=MAX_ID)]

# Failed sign-ins, per client address and name: 10 in a row, then one more every 90 s. Only
# failures count; the refused attempt is not even checked (docs/security.md, Sign-in).
SIGN_IN_FAILURES, SIGN_IN_REFILL_SECONDS = 10, 90.0


@router.get("")
def home() -> RedirectResponse:
    return RedirectResponse("/app/funnel", status_code=303)


@router.get("/login")
def login_form(request: Request, next: str = "/app/funnel") -> HTMLResponse:
    found = _session(request) or sessions.new_session(None)
    request.state.session = found
    response = _page("login.html", request, next=_local(next), error=None)
    _set_cookie(request, response, found)
    return response


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/app/funnel",
) -> Response:
    found = _session(request)
    if found is None or not sessions.csrf_matches(found, csrf):
        return login_form(request, next)
    request.state.session = found
    guard = _sign_in_guard(request)
    attempt = f"{request.client.host if request.client else ''} {name.strip().lower()}"
    if (left := guard.take(attempt, 0).remaining) < 1:
        wait = math.ceil((1 - left) / guard.rate)
        error = f"Too many failed sign-ins for this name from this address: try again in {wait} s."
        refused = _page("login.html", request, status=429, next=_local(next), error=error)
        refused.headers["Retry-After"] = str(wait)
        return refused
    with _workspace(request).unit_of_work(read_only=True) as uow:
        user = users.authenticate(uow, name, password)
    if user is None:
        guard.take(attempt, 1)
        return _page("login.html", request, status=401, next=_local(next), error="Wrong name or password.")
    response = RedirectResponse(_local(next), status_code=303)
    _set_cookie(request, response, sessions.new_session(user.id, user.session_epoch))  # a new token: no fixation
    return response


@router.post("/logout")
def logout(request: Request, who: SignedIn, csrf: Annotated[str, Form()] = "") -> RedirectResponse:
    user = _checked(who, csrf)
    with _workspace(request).unit_of_work() as uow:
        users.end_sessions(uow, user.id)
    response = RedirectResponse("/app/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path="/app")
    return response


def _sign_in_guard(request: Request) -> TokenBucket:
    """The app's bucket of failed sign-ins, made on first use (in this process's memory)."""
    guard = app_bucket(request, "sign_in_guard", lambda _: (1 / SIGN_IN_REFILL_SECONDS, SIGN_IN_FAILURES))
    assert guard is not None  # its rate is never 0
    return guard


def _local(target: str) -> str:
    """Only paths of the dashboard: never a redirect to another site."""
    return target if target.startswith("/app/") and not target.startswith("//") else "/app/funnel"


# --- funnel ----------------------------------------------------------------------------------------


def _day(text: str | None) -> datetime | None:
    """A day from a date field (`YYYY-MM-DD`, UTC); None when empty, not a date, or out of range."""
    if not text:
        return None
    try:
        day = datetime.fromisoformat(text[:10]).replace(tzinfo=UTC)
    except ValueError:
        return None
    return day if day.year < 9999 else None


@router.get("/funnel")
def funnel_page(
    request: Request,
    who: SignedIn,
    start: str | None = None,
    end: str | None = None,
    source: str | None = None,
    channel: str | None = None,
    persona: str | None = None,
    owner: str | None = None,
    campaign: str | None = None,
) -> HTMLResponse:
    from qualify.service.reading.dashboard import funnel_view
    from qualify.service.reading.funnel import NURTURE_ORIGINS
    from qualify.service.reading.queries import FILTERS

    created_from, created_to = _day(start), _day(end)
    until = created_to + timedelta(days=1) if created_to else None
    given = (source, channel, persona, owner, campaign)
    # Like a date that is not one, a value no lead can hold (NUL) filters nothing.
    chosen = {name: value for name, value in zip(FILTERS, given, strict=True) if value and "\x00" not in value}
    if not who[0].sees_every_lead:
        chosen["owner"] = who[0].name  # a sales rep's funnel is of their own leads
    with _workspace(request).unit_of_work(read_only=True) as uow:
        view = funnel_view(uow, created_from=created_from, created_to=until, where=chosen)
    report = view.report
    reached = [(stage.value, report.reached.get(stage.value, 0)) for stage in FUNNEL]
    widest = max((count for _, count in reached), default=0) or 1
    return _page(
        "funnel.html",
        request,
        report=report,
        reached=reached,
        widest=widest,
        weekly=view.weekly,
        start=start or "",
        end=end or "",
        choices=view.choices,
        chosen=chosen,
        origin_labels=NURTURE_ORIGINS,
    )


# --- sales queue -----------------------------------------------------------------------------------


QUEUE_SORTS = {"score": "best score", "due": "SLA due soonest", "newest": "newest MQL", "probability": "likeliest"}


@router.get("/queue")
def queue_page(
    request: Request,
    who: SignedIn,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    sort: Annotated[str, Query(max_length=20)] = "score",
    owner: Annotated[str, Query(max_length=200)] = "",
    grade: Annotated[str, Query(max_length=5)] = "",
) -> HTMLResponse:
    """MQLs waiting for sales (a rep's own), a page at a time with the true total."""
    from qualify.domain.scoring_model import GRADES
    from qualify.service.reading.sales_queue import count_queue, queue_owners, sales_queue

    user = who[0]
    whose = (owner or None) if user.sees_every_lead else user.name
    sort = sort if sort in QUEUE_SORTS else "score"
    grade = grade if grade in GRADES else ""
    with _workspace(request).unit_of_work(read_only=True) as uow:
        total = count_queue(uow, owner=whose, grade=grade or None)
        rows = sales_queue(
            uow, owner=whose, grade=grade or None, sort=sort, limit=QUEUE_SIZE, offset=(page - 1) * QUEUE_SIZE
        )
        owners = queue_owners(uow) if user.sees_every_lead else []
    query = {k: v for k, v in (("sort", sort), ("owner", owner), ("grade", grade)) if v}
    return _page(
        "queue.html",
        request,
        rows=rows,
        total=total,
        page=page,
        pages=max(1, -(-total // QUEUE_SIZE)),
        query=urlencode(query),
        sort=sort,
        sorts=QUEUE_SORTS,
        owner=owner,
        owners=owners,
        grade=grade,
        grades=GRADES,
        reasons=REASON_WORDS,
        now=utcnow(),
    )


@router.post("/queue/{lead_id}/{action}")
def queue_action(
    request: Request,
    lead_id: LeadId,
    action: str,
    who: SignedIn,
    csrf: Annotated[str, Form()] = "",
    reason: Annotated[str | None, Form()] = None,
    note: Annotated[str | None, Form()] = None,
) -> Response:
    from qualify.domain.errors import NotFound, NotYourLead
    from qualify.service.lifecycle.stages import queue_stage_action
    from qualify.service.reading.sales_queue import sales_queue

    user = _checked(who, csrf)
    if action not in ("accept", "reject", "disqualify"):
        return HTMLResponse("unknown action", status_code=404)
    inplace = request.headers.get("x-requested-with") == "fetch"
    with _workspace(request).unit_of_work() as uow:
        try:
            error = queue_stage_action(
                uow, lead_id, action, by=user.name, own_leads_only=not user.sees_every_lead,
                reason=reason or None, note=note or None,
            )  # fmt: skip
        except NotFound:
            return HTMLResponse("no such lead", status_code=404)
        except NotYourLead:
            raise Refused from None
    if not inplace:
        return RedirectResponse("/app/queue", status_code=303)
    with _workspace(request).unit_of_work(read_only=True) as uow:
        [row] = sales_queue(uow, ids=[lead_id])
    html = templates.get_template("_queue_row.html").render(
        row=row, csrf=who[1].csrf, reasons=REASON_WORDS, error=error, done=None if error else action, now=utcnow(),
        user=user,
    )  # fmt: skip
    return HTMLResponse(html, status_code=422 if error else 200)


# --- users ----------------------------------------------------------------------------------------


def _users_page(request: Request, *, notice: str | None = None, problem: str | None = None) -> HTMLResponse:
    with _workspace(request).unit_of_work(read_only=True) as uow:
        people = users.list_users(uow)
    return _page(
        "users.html",
        request,
        status=422 if problem else 200,
        people=people,
        roles=users.ROLES,
        minimum=users.MIN_PASSWORD,
        notice=notice,
        problem=problem,
    )


@router.get("/users")
def users_page(request: Request, who: Admin) -> HTMLResponse:
    """The people who sign in: add, change role, disable, reset a password (admin only)."""
    return _users_page(request)


def _user_change(request: Request, change: Callable[[Any], object], done: str) -> HTMLResponse:
    try:
        with _workspace(request).unit_of_work() as uow:
            change(uow)
    except QualifyError as error:
        return _users_page(request, problem=str(error))
    return _users_page(request, notice=done)


@router.post("/users")
def users_add(
    request: Request,
    who: Admin,
    csrf: Annotated[str, Form()] = "",
    name: Annotated[str, Form(max_length=300)] = "",
    role: Annotated[str, Form(max_length=20)] = "",
    password: Annotated[str, Form(max_length=2000)] = "",
) -> HTMLResponse:
    me = _checked(who, csrf)
    return _user_change(
        request, lambda uow: users.add_user(uow, name, role, password, by=me.name), f"Added {role} user {name.strip()}."
    )


@router.post("/users/{user_id}/role")
def users_role(
    request: Request,
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    who: Admin,
    csrf: Annotated[str, Form()] = "",
    role: Annotated[str, Form(max_length=20)] = "",
) -> HTMLResponse:
    me = _checked(who, csrf)
    return _user_change(request, lambda uow: users.set_role(uow, user_id, role, by=me.name), f"The role is now {role}.")


@router.post("/users/{user_id}/{change}")
def users_switch(
    request: Request,
    user_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    change: Annotated[str, Path(pattern="^(disable|enable|password)$")],
    who: Admin,
    csrf: Annotated[str, Form()] = "",
    password: Annotated[str, Form(max_length=2000)] = "",
) -> HTMLResponse:
    """Disable (signed out at once, API keys stopped), enable, or set a new password."""
    me = _checked(who, csrf)
    if change == "password":
        return _user_change(
            request,
            lambda uow: users.set_password(uow, user_id, password, by=me.name),
            "Password set; every session of that user has ended.",
        )
    disabled = change == "disable"
    return _user_change(
        request,
        lambda uow: users.set_disabled(uow, user_id, disabled, by=me.name),
        "Disabled: signed out everywhere." if disabled else "Enabled again.",
    )


@router.get("/me")
def me_page(request: Request, who: SignedIn) -> HTMLResponse:
    """The signed-in user's own page: change their password."""
    return _page("me.html", request, minimum=users.MIN_PASSWORD, notice=None, problem=None)


@router.post("/me/password")
def me_password(
    request: Request,
    who: SignedIn,
    csrf: Annotated[str, Form()] = "",
    current: Annotated[str, Form(max_length=2000)] = "",
    password: Annotated[str, Form(max_length=2000)] = "",
    again: Annotated[str, Form(max_length=2000)] = "",
) -> HTMLResponse:
    """A new password, given the current one; every other session ends, this one goes on."""
    me = _checked(who, csrf)
    try:
        if password != again:
            raise InvalidInput("the new password and its repetition differ", field="again")
        with _workspace(request).unit_of_work() as uow:
            epoch = users.set_password(uow, me.id, password, by=me.name, current=current)
    except QualifyError as error:
        return _page("me.html", request, status=422, minimum=users.MIN_PASSWORD, notice=None, problem=str(error))
    fresh = sessions.new_session(me.id, epoch)
    request.state.session = fresh
    response = _page(
        "me.html", request, minimum=users.MIN_PASSWORD, notice="Password changed; your other sessions have ended.",
        problem=None,
    )  # fmt: skip
    _set_cookie(request, response, fresh)
    return response


# --- leads list -------------------------------------------------------------------------------------

LIST_PAGE = 50
EXPORT_MAX = 100_000  # rows of one CSV export
# The lead list's query parameters: what a link, a saved view and the CSV export carry.
LIST_PARAMS = (
    "q", "stage", "grade", "persona", "owner", "segment", "source", "campaign", "min_score", "max_score",
    "min_probability", "max_probability", "created_from", "created_to", "active_from", "active_to", "sort", "order",
)  # fmt: skip


def _list_filter(params: Any, user: users.User, *, limit: int = LIST_PAGE) -> tuple[Any, list[str]]:
    """The lead list's filter from query parameters, and what was ignored as not a value (a number
    or a date that is not one). A sales rep's list holds only their own leads."""
    from qualify.service.reading.lead_list import SORTS, LeadFilter

    ignored: list[str] = []

    def number(name: str, scale: float = 1.0) -> float | None:
        text = (params.get(name) or "").strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            ignored.append(f"{name.replace('_', ' ')} {text[:40]!r} is not a number")
            return None
        return value * scale

    def day(name: str, *, end: bool = False) -> datetime | None:
        text = params.get(name) or ""
        found = _day(text)
        if text and found is None:
            ignored.append(f"{name.replace('_', ' ')} {text[:40]!r} is not a date")
        return found + timedelta(days=1) if found and end else found

    def text(name: str) -> str | None:
        value = (params.get(name) or "").strip()
        return value or None

    sort = params.get("sort") or "score"
    wanted = LeadFilter(
        search=text("q"),
        stage=text("stage"),
        grade=text("grade"),
        persona=text("persona"),
        owner=text("owner") if user.sees_every_lead else user.name,
        segment=text("segment"),
        source=text("source"),
        campaign=text("campaign"),
        min_score=number("min_score"),
        max_score=number("max_score"),
        min_probability=number("min_probability", 0.01),
        max_probability=number("max_probability", 0.01),
        created_from=day("created_from"),
        created_to=day("created_to", end=True),
        active_from=day("active_from"),
        active_to=day("active_to", end=True),
        sort=sort if sort in SORTS else "score",
        ascending=params.get("order") == "asc",
        limit=limit,
        cursor=text("cursor"),
    )
    return wanted, ignored


def _list_query(params: Any, **changes: str | None) -> str:
    """The list's query string with `changes` (None removes a parameter); the page restarts."""
    kept = {k: params.get(k) for k in LIST_PARAMS if params.get(k)}  # never the cursor: the page restarts
    for name, value in changes.items():
        if value is None:
            kept.pop(name, None)
        else:
            kept[name] = value
    return urlencode(kept)


def _leads_list(request: Request, user: users.User, params: Any, *, notice: str | None = None) -> HTMLResponse:
    from qualify.domain.lifecycle import Stage
    from qualify.domain.scoring_model import GRADES
    from qualify.service.admin.saved_views import list_views
    from qualify.service.automation.definitions import definitions
    from qualify.service.automation.segments import SEGMENT_ACTIONS
    from qualify.service.lifecycle.lead_ops import BULK_ACTIONS
    from qualify.service.reading.dashboard import list_choices
    from qualify.service.reading.lead_list import count_leads, list_page

    wanted, ignored = _list_filter(params, user)
    problem: str | None = None
    rows: list[dict[str, Any]] = []
    following: str | None = None
    total = 0
    with _workspace(request).unit_of_work(read_only=True) as uow:
        try:
            rows, following = list_page(uow, wanted)
            total = count_leads(uow, wanted)
        except QualifyError as error:
            problem = str(error)
        choices = list_choices(uow)
        views = list_views(uow, user.id)
        static = [s.name for s in definitions(uow).segments if s.static]
    return _page(
        "leads.html",
        request,
        status=422 if problem else 200,
        rows=rows,
        total=total,
        following=following,
        params={k: params.get(k) or "" for k in LIST_PARAMS},
        query=_list_query(params),
        link=lambda **changes: "?" + _list_query(params, **changes),
        at_start=not params.get("cursor"),
        sort=wanted.sort,
        ascending=wanted.ascending,
        stages=[s.value for s in Stage],
        grades=GRADES,
        choices=choices,
        views=views,
        bulk_actions=(BULK_ACTIONS | (SEGMENT_ACTIONS if static else {})) if user.sees_every_lead else {},
        static_segments=static,
        ignored=ignored,
        problem=problem,
        notice=notice,
    )


@router.get("/leads")
def leads_page(request: Request, who: SignedIn) -> HTMLResponse:
    """Every lead (a sales rep's own), searched, filtered, sorted and paged by cursor."""
    return _leads_list(request, who[0], request.query_params)


@router.get("/leads.csv")
def leads_export(request: Request, who: SignedIn) -> Response:
    """The current view of the list, every page of it, as CSV with every score."""
    from qualify.adapters.csv_cells import safe_cell
    from qualify.service.reading.lead_list import list_page

    wanted, _ = _list_filter(request.query_params, who[0], limit=1000)
    wanted.cursor = None
    columns = (
        "id", "email", "external_id", "first_name", "last_name", "title", "account", "account_domain", "stage",
        "owner", "fit_grade", "persona", "fit_score", "engagement_score", "score", "probability", "source",
        "created_at", "last_event_at",
    )  # fmt: skip
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    written = 0
    with _workspace(request).unit_of_work(read_only=True) as uow:
        try:
            while written < EXPORT_MAX:
                rows, following = list_page(uow, wanted)
                for row in rows:
                    writer.writerow([safe_cell(row.get(c)) for c in columns])
                written += len(rows)
                if following is None:
                    break
                wanted.cursor = following
        except QualifyError as error:
            return HTMLResponse(escape(str(error)), status_code=422)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="qualify-leads.csv"'},
    )


@router.post("/leads/bulk")
def leads_bulk(
    request: Request,
    who: Manager,
    csrf: Annotated[str, Form()] = "",
    action: Annotated[str, Form()] = "",
    value: Annotated[str, Form(max_length=300)] = "",
    segment: Annotated[str, Form(max_length=100)] = "",
    lead: Annotated[list[int] | None, Form()] = None,
    back: Annotated[str, Form(max_length=4000)] = "",
) -> HTMLResponse:
    """One action on the leads ticked in the list; answered with the list and what was done."""
    from qualify.service.automation.segments import SEGMENT_ACTIONS, set_members
    from qualify.service.lifecycle.lead_ops import bulk_action

    user = _checked(who, csrf)
    params = dict(parse_qsl(back))
    try:
        if action in SEGMENT_ACTIONS:  # retried: another person adding the same lead at once is a conflict
            name, add = segment or value, action == "segment"
            done = retrying(_workspace(request), lambda uow: set_members(uow, name, lead or [], add=add, by=user.name))
        else:
            with _workspace(request).unit_of_work() as uow:
                done = bulk_action(uow, lead or [], action, value, by=user.name)
        notice = done.summary()
    except QualifyError as error:
        notice = f"Nothing was changed: {error}"
    return _leads_list(request, user, params, notice=notice)


@router.post("/leads/views")
def leads_save_view(
    request: Request,
    who: SignedIn,
    csrf: Annotated[str, Form()] = "",
    name: Annotated[str, Form(max_length=300)] = "",
    query: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    from qualify.service.admin.saved_views import save_view

    user = _checked(who, csrf)
    try:
        with _workspace(request).unit_of_work() as uow:
            view = save_view(uow, user.id, name, query)
    except QualifyError as error:
        return _leads_list(request, user, dict(parse_qsl(query)), notice=f"The view was not saved: {error}")
    return RedirectResponse(f"/app/leads?{view.query}", status_code=303)


@router.post("/leads/views/{view_id}/delete")
def leads_delete_view(
    request: Request, view_id: Annotated[int, Path(ge=1, le=MAX_ID)], who: SignedIn, csrf: Annotated[str, Form()] = ""
) -> RedirectResponse:
    from qualify.service.admin.saved_views import delete_view

    user = _checked(who, csrf)
    with _workspace(request).unit_of_work() as uow:
        delete_view(uow, user.id, view_id)
    return RedirectResponse("/app/leads", status_code=303)


# --- accounts -------------------------------------------------------------------------------------

ACCOUNT_PAGE = 50


@router.get("/accounts")
def accounts_page(
    request: Request,
    who: SignedIn,
    q: Annotated[str, Query(max_length=200)] = "",
    sort: Annotated[str, Query(max_length=20)] = "engagement",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    """Accounts with their people and pipeline (a sales rep: those where they own a lead)."""
    from qualify.service.reading.accounts import ACCOUNT_SORTS, list_accounts

    user = who[0]
    sort = sort if sort in ACCOUNT_SORTS else "engagement"
    with _workspace(request).unit_of_work(read_only=True) as uow:
        rows, total = list_accounts(
            uow,
            search=q or None,
            owner=None if user.sees_every_lead else user.name,
            sort=sort,
            limit=ACCOUNT_PAGE,
            offset=(page - 1) * ACCOUNT_PAGE,
        )
    return _page(
        "accounts.html",
        request,
        rows=rows,
        total=total,
        q=q,
        sort=sort,
        sorts=ACCOUNT_SORTS,
        page=page,
        pages=max(1, -(-total // ACCOUNT_PAGE)),
        query=urlencode({k: v for k, v in (("q", q), ("sort", sort)) if v}),
    )


AccountId = Annotated[int, Path(ge=1, le=MAX_ID)]
# What a person's stage action on a lead or an account sends from its page.
ActionPath = Annotated[str, Path(max_length=40)]
ReasonForm = Annotated[str | None, Form(max_length=40)]
NoteForm = Annotated[str | None, Form(max_length=2000)]


@router.get("/accounts/{account_id}")
def account_page(request: Request, account_id: AccountId, who: SignedIn) -> HTMLResponse:
    """One account: its stage and history, its scores explained, its people and their stages,
    engagement week by week, open deals, owner; the actions its owner (or a manager) may take."""
    return _account(request, who[0], account_id)


def _account(request: Request, user: users.User, account_id: int, problem: str | None = None) -> HTMLResponse:
    from qualify.domain.account_stages import ACCOUNT_ACTIONS, AccountStage
    from qualify.domain.errors import NotFound
    from qualify.service.reading.accounts import account_view

    with _workspace(request).unit_of_work(read_only=True) as uow:
        try:
            view = account_view(uow, account_id)
        except NotFound:
            return _page("not_found.html", request, status=404, what=f"account #{account_id}")
    peak = max((points for _, points in view.weekly), default=0.0) or 1.0
    owner = view.account["owner"]
    may_act = user.sees_every_lead or owner in (None, user.name)
    stage = AccountStage(view.account["stage"])
    return _page(
        "account.html",
        request,
        status=422 if problem else 200,
        view=view,
        peak=peak,
        actions=[a for a in ACCOUNT_ACTIONS.values() if stage in a.sources] if may_act else [],
        reasons=REASON_WORDS,
        problem=problem,
    )


@router.post("/accounts/{account_id}/actions/{action}")
def account_action(
    request: Request,
    account_id: AccountId,
    action: ActionPath,
    who: SignedIn,
    csrf: Annotated[str, Form()] = "",
    reason: ReasonForm = None,
    note: NoteForm = None,
) -> Response:
    """A person's action on an account from its page (a rep: on an account they own or nobody does)."""
    from qualify.domain.errors import NotFound
    from qualify.service.lifecycle.accounts import act_on_account

    user = _checked(who, csrf)
    try:
        with _workspace(request).unit_of_work() as uow:
            act_on_account(
                uow, account_id, action, by=user.name, reason=reason or None, note=note or None,
                owned_by=None if user.sees_every_lead else user.name,
            )  # fmt: skip
    except NotFound:
        return _page("not_found.html", request, status=404, what=f"account #{account_id}")
    except QualifyError as error:
        return _account(request, user, account_id, problem=str(error))
    return RedirectResponse(f"/app/accounts/{account_id}", status_code=303)


# --- lead -------------------------------------------------------------------------------------------

TIMELINE_PAGE = 20


@router.get("/leads/{lead_id}")
def lead_page(
    request: Request, lead_id: LeadId, who: SignedIn, page: Annotated[int, Query(le=1_000_000)] = 1
) -> HTMLResponse:
    return _lead(request, who[0], lead_id, page=max(page, 1))


def _lead(
    request: Request, user: users.User, lead_id: int, *, page: int = 1, problem: str | None = None
) -> HTMLResponse:
    """The lead page; with `problem`, an action on it was refused (said at the top, status 422)."""
    from qualify.domain.errors import NotFound
    from qualify.domain.lifecycle import STAGE_ACTIONS, Stage
    from qualify.service.automation.reading import lead_automation
    from qualify.service.lifecycle.lead_ops import NURTURABLE, notes_of
    from qualify.service.reading.queries import engagement_over_time, lead_profile

    with _workspace(request).unit_of_work(read_only=True) as uow:
        try:
            profile = lead_profile(
                uow, f"#{lead_id}", timeline_limit=TIMELINE_PAGE, timeline_offset=(page - 1) * TIMELINE_PAGE
            )
        except NotFound:
            return _page("not_found.html", request, status=404, what=f"lead #{lead_id}")
        series = engagement_over_time(uow, lead_id)
        automation = lead_automation(uow, lead_id)
        notes = notes_of(uow, lead_id)
        # The engagement at which a lead of this grade becomes MQL under the active model (None: never).
        threshold = uow.active_model().policy.mql_thresholds.get(profile.scores["grade"])
    may_act = user.sees_every_lead or profile.owner == user.name
    stage = Stage(profile.stage)
    return _page(
        "lead.html",
        request,
        status=422 if problem else 200,
        profile=profile,
        automation=automation,
        notes=notes,
        chart=_line_chart(
            series,
            [h for h in profile.history if h["to"] in ("mql", "sql")],
            float(threshold) if threshold is not None else None,
        ),
        page=page,
        pages=max(1, -(-profile.events_total // TIMELINE_PAGE)),
        actions=[a for a in STAGE_ACTIONS.values() if stage in a.sources] if may_act else [],
        may_act=may_act,
        may_assign=user.sees_every_lead,
        may_nurture=user.sees_every_lead and stage in NURTURABLE,
        reasons=REASON_WORDS,
        problem=problem,
    )


def _lead_change(request: Request, user: users.User, lead_id: int, change: Callable[[Any], object]) -> Response:
    """Run `change(uow)` on the lead, then show its page again: a redirect when done, the page
    with the reason when refused (a sales rep may change only their own leads)."""
    from qualify.domain.errors import NotFound
    from qualify.service.lifecycle.lead_ops import owner_of

    try:
        with _workspace(request).unit_of_work() as uow:
            owner = owner_of(uow, lead_id)  # NotFound for a lead that is not there, or was erased
            if not user.sees_every_lead and owner != user.name:
                raise Refused
            change(uow)
    except NotFound:
        return _page("not_found.html", request, status=404, what=f"lead #{lead_id}")
    except QualifyError as error:
        return _lead(request, user, lead_id, problem=str(error))
    return RedirectResponse(f"/app/leads/{lead_id}", status_code=303)


@router.post("/leads/{lead_id}/actions/{action}")
def lead_action(
    request: Request,
    lead_id: LeadId,
    action: ActionPath,
    who: SignedIn,
    csrf: Annotated[str, Form()] = "",
    reason: ReasonForm = None,
    note: NoteForm = None,
) -> Response:
    """A stage action from the lead page, with the lifecycle's rules (a rep: on their own leads)."""
    from qualify.service.lifecycle.stages import apply_stage_action

    user = _checked(who, csrf)
    return _lead_change(
        request,
        user,
        lead_id,
        lambda uow: apply_stage_action(
            uow, f"#{lead_id}", action, by=user.name, reason=reason or None, note=note or None
        ),
    )


@router.post("/leads/{lead_id}/owner")
def lead_owner(
    request: Request,
    lead_id: LeadId,
    who: Manager,
    csrf: Annotated[str, Form()] = "",
    owner: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    from qualify.service.lifecycle.lead_ops import bulk_action

    user = _checked(who, csrf)
    return _lead_change(request, user, lead_id, lambda uow: bulk_action(uow, [lead_id], "assign", owner, by=user.name))


@router.post("/leads/{lead_id}/nurture")
def lead_nurture(
    request: Request,
    lead_id: LeadId,
    who: Manager,
    csrf: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    from qualify.service.lifecycle.lead_ops import bulk_action

    user = _checked(who, csrf)

    def park(uow: Any) -> None:
        done = bulk_action(uow, [lead_id], "nurture", reason, by=user.name)
        if done.skipped:
            raise IllegalTransition(done.skipped[lead_id])

    return _lead_change(request, user, lead_id, park)


@router.post("/leads/{lead_id}/tags")
def lead_tags(
    request: Request,
    lead_id: LeadId,
    who: SignedIn,
    csrf: Annotated[str, Form()] = "",
    tag: Annotated[str, Form(max_length=300)] = "",
    remove: Annotated[bool, Form()] = False,
) -> Response:
    from qualify.service.lifecycle.lead_ops import bulk_action

    user = _checked(who, csrf)
    action = "untag" if remove else "tag"
    return _lead_change(request, user, lead_id, lambda uow: bulk_action(uow, [lead_id], action, tag, by=user.name))


@router.post("/leads/{lead_id}/notes")
def lead_note(
    request: Request,
    lead_id: LeadId,
    who: SignedIn,
    csrf: Annotated[str, Form()] = "",
    note: Annotated[str, Form(max_length=8000)] = "",
) -> Response:
    from qualify.service.lifecycle.lead_ops import add_note

    user = _checked(who, csrf)
    return _lead_change(request, user, lead_id, lambda uow: add_note(uow, lead_id, note, by=user.name))


def _line_chart(
    series: list[tuple[datetime, float]], marks: list[dict[str, Any]], threshold: float | None = None
) -> dict[str, Any]:
    """Coordinates of an SVG line (640 × 160) for a score over time, with the MQL/SQL entries marked
    and the engagement at which the lead's grade becomes MQL drawn across (`threshold`)."""
    if not series:
        return {"points": "", "marks": [], "peak": 0, "start": "", "end": "", "threshold": None}
    start, end = series[0][0].timestamp(), series[-1][0].timestamp()
    span = max(end - start, 1.0)
    peak = max([value for _, value in series] + [threshold or 0.0]) or 1.0

    def x(moment: datetime) -> float:
        return round(40 + 590 * (moment.timestamp() - start) / span, 1)

    def y(value: float) -> float:
        return round(150 - 130 * value / peak, 1)

    return {
        "points": " ".join(f"{x(t)},{y(v)}" for t, v in series),
        "marks": [{"x": x(m["at"]), "label": m["to"], "at": m["at"]} for m in marks if series[0][0] <= m["at"]],
        "peak": round(peak, 1),
        "start": series[0][0].date().isoformat(),
        "end": series[-1][0].date().isoformat(),
        "threshold": {"y": y(threshold), "value": threshold} if threshold is not None else None,
    }


# --- segments and workflows -----------------------------------------------------------------------


@router.get("/automation")
def automation_page(request: Request, who: Manager) -> HTMLResponse:
    """The segments with their members now and over the last twelve weeks, and the workflows with
    their runs: the picture marketing and sales share."""
    from qualify.service.automation.reading import list_segments, list_workflows, segment_counts

    with _workspace(request).unit_of_work(read_only=True) as uow:
        segments = [(s, segment_counts(uow, s.name, days=84, every_days=7)) for s in list_segments(uow)]
        workflows = list_workflows(uow)
    return _page("automation.html", request, segments=segments, workflows=workflows)


def _checked_automation(document: str) -> tuple[Any, list[dict[str, object]]]:
    from qualify.domain.automation import AutomationError, load_automation

    try:
        return load_automation(document, "editor"), []
    except AutomationError as error:
        return None, [problem.as_dict() for problem in error.problems]


@router.get("/automation/editor")
def automation_editor(request: Request, who: Manager) -> HTMLResponse:
    """Segments and workflows edited in the page: checked as you type, tried, then applied."""
    return _automation_editor(request)


def _automation_editor(
    request: Request, *, document: str | None = None, notice: str | None = None, problem: str | None = None
) -> HTMLResponse:
    from qualify.service.automation.definitions import editor_document

    if document is None:
        with _workspace(request).unit_of_work(read_only=True) as uow:
            document = editor_document(uow)
    return _page(
        "automation_editor.html", request, status=422 if problem else 200, document=document, notice=notice,
        problem=problem,
    )  # fmt: skip


@router.post("/automation/validate")
def automation_validate(
    who: Manager, document: Annotated[str, Form(max_length=1_000_000)] = "", csrf: Annotated[str, Form()] = ""
) -> HTMLResponse:
    """The document's problems (line, field, message), or what it defines."""
    _checked(who, csrf)
    found, problems = _checked_automation(document)
    html = templates.get_template("_automation_validation.html").render(found=found, problems=problems)
    return HTMLResponse(html, status_code=200 if found else 422)


@router.post("/automation/preview")
def automation_preview(
    request: Request, who: Manager, document: Annotated[str, Form(max_length=1_000_000)] = "",
    csrf: Annotated[str, Form()] = "",
) -> HTMLResponse:  # fmt: skip
    """A dry run: who each segment would hold now (and who would enter or leave), and which
    workflows those entries would start. Nothing is written."""
    from qualify.service.automation.segments import preview_segments
    from qualify.service.reading.lead_list import names_of

    _checked(who, csrf)
    found, problems = _checked_automation(document)
    if found is None:
        html = templates.get_template("_automation_validation.html").render(found=None, problems=problems)
        return HTMLResponse(html, status_code=422)
    workspace = _workspace(request)
    previews = preview_segments(workspace, found.segments)
    with workspace.unit_of_work(read_only=True) as uow:
        names = names_of(uow, [i for p in previews.values() for i in (*p.sample, *p.entering_sample)])
    html = templates.get_template("_automation_preview.html").render(found=found, previews=previews, names=names)
    return HTMLResponse(html)


@router.post("/automation/apply")
def automation_apply(
    request: Request, who: Manager, document: Annotated[str, Form(max_length=1_000_000)] = "",
    csrf: Annotated[str, Form()] = "",
) -> HTMLResponse:  # fmt: skip
    """Create or replace the document's segments and workflows (as `qualify workflows apply`),
    then test every lead against the segments that changed."""
    from qualify.service.automation.definitions import put_segments, put_workflows
    from qualify.service.automation.segments import refresh_segments

    user = _checked(who, csrf)
    found, problems = _checked_automation(document)
    if found is None:
        said = "; ".join(f"line {p['line']}, {p['field']}: {p['message']}" for p in problems[:5])
        return _automation_editor(request, document=document, problem=f"Not applied: {said}")
    workspace = _workspace(request)
    try:
        with workspace.unit_of_work() as uow:
            segments = put_segments(uow, found.segments, by=user.name)
            workflows = put_workflows(uow, found, by=user.name)
        touched = [*segments.created, *segments.changed]
        moved = refresh_segments(workspace, names=touched) if touched else None
    except QualifyError as error:
        return _automation_editor(request, document=document, problem=f"Not applied: {error}")
    notice = (
        f"Applied. Segments: {len(segments.created)} created, {len(segments.changed)} changed; workflows: "
        f"{len(workflows.created)} created, {len(workflows.changed)} changed."
    )
    if moved:
        notice += f" {moved['entered']:,} leads entered and {moved['left']:,} left the segments that changed."
    return _automation_editor(request, notice=notice)


@router.get("/automation/segments/{name}")
def segment_page(
    request: Request,
    who: Manager,
    name: Annotated[str, Path(max_length=100)],
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> HTMLResponse:
    """A segment's members, 100 a page, with their scores and when they entered."""
    from qualify.domain.errors import NotFound
    from qualify.service.automation.reading import segment_info, segment_members

    with _workspace(request).unit_of_work(read_only=True) as uow:
        try:
            info = segment_info(uow, name)
            members = segment_members(uow, name, limit=100, after_id=after)
        except NotFound:
            return _page("not_found.html", request, status=404, what=f"segment {name!r}")
    return _page("segment.html", request, info=info, members=members, after=after)


# --- predictive models ------------------------------------------------------------------------------


@router.get("/predictive")
def predictive_page(request: Request, who: Manager) -> HTMLResponse:
    """The stored predictive models with their metrics beside the rule score's on the same leads."""
    return _predictive_list(request)


def _predictive_list(request: Request, *, notice: str | None = None) -> HTMLResponse:
    from qualify.service.predictions.serving import count_scored, list_models

    with _workspace(request).unit_of_work(read_only=True) as uow:
        versions = list_models(uow)
        scored = count_scored(uow)
    return _page("predictive.html", request, versions=list(reversed(versions)), scored=scored, notice=notice)


@router.get("/predictive/{version}")
def predictive_version(
    request: Request, who: Manager, version: Annotated[str, Path(max_length=64, pattern="^[a-z0-9]+$")]
) -> HTMLResponse:
    """One model: test metrics beside the rule score (ROC AUC, PR AUC, lift), calibration,
    leakage check and what its probabilities rest on (feature importance)."""
    from qualify.domain.errors import NotFound
    from qualify.service.predictions.serving import feature_importance, list_models, model_document

    with _workspace(request).unit_of_work(read_only=True) as uow:
        try:
            document = model_document(uow, version)
        except NotFound:
            return _page("not_found.html", request, status=404, what=f"predictive model {version}")
        info = next(v for v in list_models(uow) if v.version == version)
        importance = feature_importance(uow, version)
    report = document.get("report", {})
    test = report.get("test", {})
    return _page(
        "predictive_version.html",
        request,
        info=info,
        report=report,
        model=test.get("model", {}),
        rule=test.get("rule_score"),
        importance=importance,
    )


@router.post("/predictive/{version}/activate")
def predictive_activate(
    request: Request,
    background: BackgroundTasks,
    who: Admin,
    version: Annotated[str, Path(max_length=64, pattern="^[a-z0-9]+$")],
    csrf: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Make a model the active one (`none`: no model); every lead's probability is computed again
    after the answer, in the background."""
    from qualify.service.predictions.serving import activate, refresh_all

    user = _checked(who, csrf)
    chosen = None if version == "none" else version
    try:
        with _workspace(request).unit_of_work() as uow:
            previous, changed = activate(uow, chosen, by=user.name)
    except QualifyError as error:
        return _predictive_list(request, notice=f"Not changed: {error}")
    if not changed:
        return _predictive_list(request, notice="Nothing changed.")
    background.add_task(refresh_all, _workspace(request))
    said = f"Activated {chosen}" if chosen else f"Deactivated {previous}"
    return _predictive_list(request, notice=f"{said}; every lead's probability is being computed again.")


# --- insights ---------------------------------------------------------------------------------------


@router.get("/insights")
def insights_page(request: Request, who: Manager) -> HTMLResponse:
    """Content influence among MQLs, sources with sales' acceptance, and rejection reasons. The first
    two are batch reports, computed off the request (service/analytics/insights.py): the page shows
    the last figures with the instant of their data, and says when newer ones are being computed."""
    from qualify.service.analytics.insights import InsightsCache

    with _INSIGHTS_LOCK:  # one cache, so two first requests at once start one computation
        cache = getattr(request.app.state, "insights", None)
        if cache is None or cache.workspace is not _workspace(request):
            cache = request.app.state.insights = InsightsCache(_workspace(request))
    found = cache.read(wait=INSIGHTS_WAIT)
    if found is None:
        return _page("insights.html", request, found=None)
    content = found.content
    items = content["items"][:12]
    top = max((item["lift"] or 0 for item in items), default=0) or 1
    return _page(
        "insights.html",
        request,
        found=found,
        content=content,
        items=items,
        top=top,
        sources=found.sources,
        rejections=found.rejections,
    )


# --- model ------------------------------------------------------------------------------------------


@router.get("/model")
def model_page(request: Request, who: Manager) -> HTMLResponse:
    return _model_page(request)


def _model_page(
    request: Request, *, notice: str | None = None, problem: str | None = None, status: int = 200
) -> HTMLResponse:
    from qualify.service.lifecycle.scoring_models import active_document, model_history

    with _workspace(request).unit_of_work(read_only=True) as uow:
        version, document = active_document(uow)
        versions = model_history(uow)
    return _page(
        "model.html", request, status=status, version=version, document=document, versions=versions,
        notice=notice, problem=problem,
    )  # fmt: skip


def _checked_model(document: str) -> tuple[Any, list[dict[str, object]]]:
    from qualify.domain.errors import ModelError
    from qualify.domain.model_loader import load_model

    try:
        return load_model(document, "candidate"), []
    except ModelError as error:
        return None, [problem.as_dict() for problem in error.problems]


@router.post("/model/validate")
def model_validate(
    who: Manager, document: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = ""
) -> HTMLResponse:
    """The candidate's problems (line, field, message), or its version: the editor asks as you type."""
    _checked(who, csrf)
    model, problems = _checked_model(document)
    html = templates.get_template("_validation.html").render(model=model, problems=problems)
    return HTMLResponse(html, status_code=200 if model else 422)


@router.post("/model/backtest")
def model_backtest(
    request: Request, who: Manager, document: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = ""
) -> HTMLResponse:
    """Replay the history under the candidate and the active model, and compare (qualify backtest)."""
    from qualify.service.analytics.backtest import backtest

    _checked(who, csrf)
    model, problems = _checked_model(document)
    if model is None:
        html = templates.get_template("_validation.html").render(model=None, problems=problems)
        return HTMLResponse(html, status_code=422)
    workspace = _workspace(request)
    with workspace.unit_of_work(read_only=True) as uow:
        active = uow.active_model()
    try:
        report = backtest(workspace, model, active, changes=10).as_dict()
    except QualifyError as problem:
        return HTMLResponse(f'<p class="error" role="alert">{escape(str(problem))}</p>', status_code=422)
    activation = None
    if who[0].role == "admin" and model.version != active.version:
        before, after = report["models"]["against"]["mqls"], report["models"]["candidate"]["mqls"]
        fields = {"for": "backtest", "version": model.version, "against": active.version, "before": before}
        fields |= {"after": after, "made": utcnow().timestamp()}
        proof = sessions.seal(fields, _key(request))
        activation = {"proof": proof, "document": document, "before": before, "after": after}
    html = templates.get_template("_backtest.html").render(report=report, activation=activation, csrf=who[1].csrf)
    return HTMLResponse(html)


BACKTEST_VALID_SECONDS = 3600  # an activation must follow its backtest within the hour


@router.post("/model/activate")
def model_activate(
    request: Request,
    who: Admin,
    csrf: Annotated[str, Form()] = "",
    document: Annotated[str, Form(max_length=1_000_000)] = "",
    proof: Annotated[str, Form(max_length=400)] = "",
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> HTMLResponse:
    """Make the candidate the active model: an admin, after a backtest of that very version
    against the model active now (within the hour), confirming the MQL change it showed."""
    from qualify.service.lifecycle.scoring_models import activate_model

    user = _checked(who, csrf)
    tested = sessions.unseal(proof, _key(request)) or {}
    version, before, after = tested.get("version"), tested.get("before"), tested.get("after")
    model, _ = _checked_model(document)
    with _workspace(request).unit_of_work(read_only=True) as uow:
        current = uow.active_model().version
    if tested.get("for") != "backtest":
        why = "backtest the candidate first: activation follows a backtest of that very version"
    elif model is None or model.version != version:
        why = "the candidate is not the version that was backtested: backtest it again"
    elif current != tested.get("against"):
        why = (
            f"the active model changed since the backtest ({tested.get('against')} then, {current} now): backtest again"
        )
    elif utcnow().timestamp() - float(tested.get("made", 0)) > BACKTEST_VALID_SECONDS:
        why = "the backtest is over an hour old: backtest again"
    elif confirm != "yes":
        why = f"confirm the change: MQLs in the backtest go from {before} to {after}"
    else:
        why = ""
    if why:
        return _model_page(request, problem=f"Not activated: {why}.", status=422)
    with _workspace(request).unit_of_work() as uow:
        activate_model(uow, document, "the dashboard's editor", by=user.name)
    return _model_page(
        request,
        notice=f"Activated {version} (MQLs in the backtest: {before} → {after}). New events are scored with it; "
        "`qualify score` rescores every lead now.",
    )


# The dashboard's pages load their own script and style sheet and nothing else: no inline script,
# no third party, never inside another site's frame (clickjacking).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class DashboardHeaders:
    """Every answer under /app carries the dashboard's security headers (CONTENT_SECURITY_POLICY)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"] == "/app" or scope["path"].startswith("/app/")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in _PAGE_HEADERS if h[0] not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)


def install_dashboard(app: FastAPI) -> None:
    """Mount the dashboard's pages and static files on `app`."""
    app.add_middleware(DashboardHeaders)
    app.include_router(router)
    app.mount("/app/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")

    def to_sign_in(request: Request, exc: Exception) -> Response:
        return RedirectResponse(f"/app/login?next={quote(request.url.path)}", status_code=303)

    def refused(request: Request, exc: Exception) -> Response:
        return _page("refused.html", request, status=403)

    handlers: dict[type[Exception], Callable[[Request, Exception], Response]] = {
        SignInNeeded: to_sign_in,
        Refused: refused,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
