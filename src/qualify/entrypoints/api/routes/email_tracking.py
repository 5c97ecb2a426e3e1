"""Email tracking: the open pixel, click redirects and the unsubscribe link (public routes)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["email tracking"])
