"""The HTTP API: `create_app(settings)` builds it; `qualify serve` runs it under uvicorn."""

from qualify.entrypoints.api.app import create_app

__all__ = ["create_app"]
