"""Where the batch side runs: DuckDB over a Parquet export (the default), or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ibis

from qualify.analytics.batch import Sources


def duckdb_sources(export: Path, connection: Any | None = None) -> Sources:
    """Tables over the Parquet files of `qualify export parquet` (read in place, not copied)."""
    con = connection or ibis.duckdb.connect()
    events = con.read_parquet(str(export / "events" / "**" / "*.parquet"), hive_partitioning=True)
    return Sources(
        leads=con.read_parquet(str(export / "leads.parquet")),
        accounts=con.read_parquet(str(export / "accounts.parquet")),
        events=events.drop("date"),
    )
