"""Web tracking: the snippet, page views of anonymous visitors, and their identification (public routes)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["tracking"])
