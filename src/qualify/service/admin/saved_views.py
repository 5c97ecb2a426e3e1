"""A user's saved views of the lead list: a name for a query string (filters and sort)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import delete, select

from qualify.adapters import schema
from qualify.domain.errors import InvalidInput
from qualify.domain.records import check_text
from qualify.service.unit_of_work import UnitOfWork, utcnow

MAX_NAME, MAX_QUERY, MAX_VIEWS = 100, 2000, 50
# What a view keeps of the list's query: its filters and sort, never a page or a one-off notice.
NOT_KEPT = frozenset({"cursor", "csrf"})


@dataclass(frozen=True, slots=True)
class SavedView:
    id: int
    name: str
    query: str


def clean_query(query: str) -> str:
    """The query string without what a view does not keep, and without empty values."""
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=False) if k not in NOT_KEPT]
    return urlencode(kept)


def save_view(uow: UnitOfWork, user_id: int, name: str, query: str) -> SavedView:
    """Save (or replace) the user's view called `name`."""
    name = name.strip()
    if not name:
        raise InvalidInput("give the view a name", field="name")
    check_text(name, "name", MAX_NAME)
    query = clean_query(query)
    check_text(query, "query", MAX_QUERY)
    views = schema.saved_views
    conn = uow.connection
    conn.execute(delete(views).where(views.c.user_id == user_id, views.c.name == name))
    if len(list_views(uow, user_id)) >= MAX_VIEWS:
        raise InvalidInput(f"a user keeps at most {MAX_VIEWS} views: delete one first", field="name")
    made = conn.execute(
        views.insert().values(user_id=user_id, name=name, query=query, created_at=utcnow()).returning(views.c.id)
    ).scalar_one()
    return SavedView(made, name, query)


def list_views(uow: UnitOfWork, user_id: int) -> list[SavedView]:
    views = schema.saved_views
    rows = uow.connection.execute(
        select(views.c.id, views.c.name, views.c.query).where(views.c.user_id == user_id).order_by(views.c.name)
    )
    return [SavedView(*row) for row in rows]


def delete_view(uow: UnitOfWork, user_id: int, view_id: int) -> None:
    """Delete one of the user's views (another user's is never touched)."""
    views = schema.saved_views
    uow.connection.execute(delete(views).where(views.c.user_id == user_id, views.c.id == view_id))
