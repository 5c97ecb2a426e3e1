"""Where the batch side runs: DuckDB over a Parquet export (the default), or PostgreSQL."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import ibis
from sqlalchemy.engine import make_url

from qualify.analytics.batch_evaluator import Sources
from qualify.domain.errors import InvalidInput


def duckdb_sources(export: Path, connection: Any | None = None) -> Sources:
    """Tables over the Parquet files of `qualify export parquet` (read in place, not copied)."""
    con = connection or ibis.duckdb.connect()
    events = con.read_parquet(str(export / "events" / "**" / "*.parquet"), hive_partitioning=True)
    return Sources(
        leads=con.read_parquet(str(export / "leads.parquet")),
        accounts=con.read_parquet(str(export / "accounts.parquet")),
        events=events.drop("date"),
        history=_history(con, export),
        deals=_optional(con, export / "deals.parquet"),
    )


def postgres_sources(database_url: str) -> Sources:
    """The store's own tables on PostgreSQL: the query runs where the data is.

    The session runs in UTC, so that the per-day caps count UTC days as the online side does, and
    without PostgreSQL's JIT compilation: the batch queries have hundreds of expressions, which it
    spent 12.5 s compiling for an account query that then ran in milliseconds (a cross join with a
    table of instants looks expensive to the planner, which turns the JIT on).
    """
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise InvalidInput(
            f"the postgres engine needs a postgresql+psycopg:// workspace, not {url.get_backend_name()}", field="engine"
        )
    options = " ".join(filter(None, ["-c TimeZone=UTC -c jit=off", str(url.query.get("options", ""))]))
    con = ibis.postgres.connect(
        host=url.host or "localhost",
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
        options=options,
    )
    return Sources(
        leads=con.table("leads"),
        accounts=con.table("accounts"),
        events=con.table("events"),
        history=con.table("stage_history"),
        deals=con.table("deals"),
    )


def spark_session() -> Any:
    """A local Spark session for one machine (Spark on a cluster: pass your own to spark_sources).

    The session time zone is UTC, so that the per-day caps count UTC days as the online side does.
    Python tasks (the backtest's replay) run in this interpreter's executable, where Qualify is.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    session = (
        SparkSession.builder.master("local[*]")
        .appName("qualify")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_sources(export: Path, session: Any | None = None) -> Sources:
    """Tables over the Parquet files of `qualify export parquet`, read by Spark (PySpark)."""
    con = ibis.pyspark.connect(session or spark_session())
    return Sources(
        leads=con.read_parquet(str(export / "leads.parquet")),
        accounts=con.read_parquet(str(export / "accounts.parquet")),
        events=con.read_parquet(str(export / "events")).drop("date"),
        history=_history(con, export),
        deals=_optional(con, export / "deals.parquet"),
    )


def _history(con: Any, export: Path) -> Any:
    """The stage history, where the files have one: scoring needs none (the batch benchmark's
    generated world has none); the funnel reports say they need it."""
    return _optional(con, export / "stage_history.parquet")


def _optional(con: Any, path: Path) -> Any:
    return con.read_parquet(str(path)) if path.exists() else None
