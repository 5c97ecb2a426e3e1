"""The application factory: no module-level app, so tests and `qualify serve` build their own."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from swagger_ui_bundle import swagger_ui_path

from qualify import __version__
from qualify.bootstrap import open_workspace
from qualify.entrypoints.api.deps import known_query
from qualify.entrypoints.api.limits import BodySizeLimit
from qualify.entrypoints.api.routes import (
    admin,
    automation,
    email_tracking,
    events,
    history,
    leads,
    models,
    operations,
    segment,
    tracking,
    webhooks,
)
from qualify.entrypoints.api.schemas import Problem
from qualify.entrypoints.observability import RequestIds
from qualify.entrypoints.problems import install_problem_handlers
from qualify.entrypoints.web import install_dashboard
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

DESCRIPTION = """
Lead qualification that explains itself: ingest events, upsert leads and accounts, read scores
with their explanations, and apply sales' stage actions.

Authenticate with an API key made by `qualify keys create --role ROLE NAME`, sent as
`Authorization: Bearer qk_…` (or `X-API-Key`). Each route says the permission it needs
(`x-permission`) and the roles that have it (`x-roles`). Errors are problem details (RFC 9457).
"""


def create_app(settings: Settings | None = None, *, workspace: Workspace | None = None) -> FastAPI:
    """Build the API on the workspace at `settings.database_url` (or on `workspace`, for tests)."""
    settings = settings or (workspace.settings if workspace else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = workspace is None
        app.state.workspace = workspace or open_workspace(settings)
        if owned:
            # What startup made lives as long as the process: out of the collector's way, a full
            # collection walks only what requests made since (on PostgreSQL under load, pauses of
            # 60-80 ms fell to under 5 ms, and the p99 of one event with them: docs/benchmarks.md).
            gc.freeze()
        try:
            yield
        finally:
            insights = getattr(app.state, "insights", None)
            if insights is not None:  # the dashboard's insights being computed: let them end first
                await run_in_threadpool(insights.wait, 60)
            if owned:
                app.state.workspace.close()

    # The interactive docs' assets come from the installed package (swagger-ui-bundle), not from
    # a CDN: `/docs` works on a machine with no way out to the internet.
    app = FastAPI(
        title="Qualify", version=__version__, description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    if workspace is not None:
        app.state.workspace = workspace
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit)  # request bodies over 16 MiB: 413 (docs/api.md, Limits)
    app.add_middleware(RequestIds)  # outermost: every answer carries X-Request-ID, every request is logged
    routers = (
        events, leads, history, models, admin, webhooks, automation, email_tracking, tracking, operations, segment,
    )  # fmt: skip
    for module in routers:
        # A misspelt filter is refused on the key-authenticated routes; the tracking links and the
        # page script's routes take what mail clients and browsers add (utm_*, cache busters).
        strict = module not in (email_tracking, tracking)
        app.include_router(module.router, dependencies=[Depends(known_query)] if strict else [])

    @app.get("/healthz", tags=["health"], summary="Liveness: no key needed")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    install_dashboard(app)
    _add_problem_schema(app)
    _add_offline_docs(app)
    return app


DOCS_ASSETS = "/docs/assets"


def _add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at `/docs`, every file of it served from the installed package."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Qualify API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )


def _add_problem_schema(app: FastAPI) -> None:
    """Name the Problem schema in the OpenAPI document that the error responses refer to."""
    base = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = base()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
            from qualify.entrypoints.api.schemas import EventIn

            schema["components"]["schemas"].setdefault("EventIn", EventIn.model_json_schema())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
