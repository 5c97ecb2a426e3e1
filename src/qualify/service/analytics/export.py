"""Export a workspace to Parquet (see adapters/parquet_export.py for the layout)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qualify.adapters.parquet_export import export_parquet
from qualify.domain.errors import NotFound
from qualify.service.unit_of_work import Workspace, utcnow


def export_workspace(
    workspace: Workspace, directory: Path, *, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """One consistent snapshot: everything is read in a single transaction."""
    with workspace.unit_of_work() as uow:
        try:
            version: str | None = uow.active_model().version
        except NotFound:
            version = None
        return export_parquet(uow.connection, directory, model_version=version, now=utcnow(), progress=progress)
