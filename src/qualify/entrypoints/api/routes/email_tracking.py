"""Email tracking: the open pixel, click redirects and the unsubscribe link (public routes).

These are fetched by mail clients and followed by recipients, who have no API key: the email's
random token (and, for a click, the url's signature) is what admits them. They answer people
and image loaders, not API clients, so errors are small HTML pages rather than problem details.
"""

from __future__ import annotations

import base64
import html
import logging
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from qualify.domain.errors import NotFound
from qualify.entrypoints.api.deps import PUBLIC_DOC, WorkspaceDep
from qualify.service.email import links
from qualify.service.email import tracking as email
from qualify.service.unit_of_work import utcnow

log = logging.getLogger(__name__)

router = APIRouter(prefix=links.TRACKING_PREFIX, tags=["email tracking"])

# A transparent 1×1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}
PRIVATE = {**NO_STORE, "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{html.escape(title)}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}
button{{font:inherit;padding:.5rem 1.2rem;border-radius:.3rem;border:1px solid #555;background:#222;color:#fff;cursor:pointer}}</style>
</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    return HTMLResponse(document, status_code=status, headers=PRIVATE)


def _not_ours() -> HTMLResponse:
    return _page("Link not recognised", "<p>This link is not valid (any more).</p>", 404)


@router.get(
    "/o/{token}.gif",
    summary="Open pixel: records `email_open` (public)",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}, "description": "A transparent 1×1 GIF, whatever the token."}},
    openapi_extra=PUBLIC_DOC,
)
def open_pixel(token: str, workspace: WorkspaceDep) -> Response:
    """Always a GIF, for a known token or not: a mail client shows no broken image, and the answer
    does not tell which tokens exist. Only a known token's fetch writes an event."""
    try:
        email.record_open(workspace, token, utcnow())
    except Exception:  # the image is answered whatever happens: the failure is logged, not shown
        log.exception("an email open could not be recorded")
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get(
    "/c/{token}",
    summary="Click redirect: records `email_click`, then 302 to the signed url (public)",
    response_class=RedirectResponse,
    status_code=302,
    responses={
        302: {"description": "To the url the email linked to."},
        403: {"description": "The url's signature does not match: a forged or damaged link."},
        404: {"description": "Unknown email token."},
    },
    openapi_extra=PUBLIC_DOC,
)
def click(
    token: str,
    workspace: WorkspaceDep,
    u: Annotated[str, Query(description="The url the email linked to.", max_length=8000)] = "",
    s: Annotated[str, Query(description="Its signature (HMAC of token and url).", max_length=100)] = "",
) -> Response:
    """Redirects only to a url signed for this email, so the route is no open redirect."""
    try:
        target = email.record_click(workspace, token, u, s, utcnow())
    except NotFound:
        return _not_ours()
    except links.InvalidLink as error:
        return _page("Link refused", f"<p>{html.escape(str(error))}.</p>", 403)
    return RedirectResponse(target, status_code=302, headers=PRIVATE)


@router.get(
    "/u/{token}",
    summary="Unsubscribe page: asks to confirm (public)",
    response_class=HTMLResponse,
    responses={404: {"description": "Unknown email token."}},
    openapi_extra=PUBLIC_DOC,
)
def unsubscribe_page(token: str, workspace: WorkspaceDep) -> HTMLResponse:
    """Only a page with a button: link scanners that fetch every link in an email must not
    unsubscribe anyone, so the change itself takes a POST."""
    address = email.unsubscribe_address(workspace, token)
    if address is None:
        return _not_ours()
    whom = f" for <strong>{html.escape(address)}</strong>" if address else ""
    return _page(
        "Unsubscribe",
        f"<p>Stop receiving these emails{whom}?</p>"
        f'<form method="post" action="{html.escape(links.TRACKING_PREFIX)}/u/{html.escape(token)}">'
        '<button type="submit">Unsubscribe</button></form>',
    )


@router.post(
    "/u/{token}",
    summary="Unsubscribe: sets do_not_email, records `unsubscribe` (public; also RFC 8058 one-click)",
    response_class=HTMLResponse,
    responses={404: {"description": "Unknown email token."}},
    openapi_extra=PUBLIC_DOC,
)
def unsubscribe(token: str, workspace: WorkspaceDep) -> HTMLResponse:
    """The confirmation button and mail clients' one-click POST (`List-Unsubscribe=One-Click`)
    both land here; the body is not needed. Repeating it changes nothing."""
    if not email.unsubscribe(workspace, token, utcnow()):
        return _not_ours()
    return _page("You are unsubscribed", "<p>You will not receive these emails any more.</p>")
