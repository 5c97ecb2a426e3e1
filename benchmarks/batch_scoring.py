"""Batch scoring on DuckDB: the compiled scoring model against a hand-written SQL query.

    python benchmarks/batch_scoring.py --leads 100000 --events 2000000

Generates a world as Parquet files (the layout of `qualify export parquet`), then scores every
lead as of one instant twice in the same run, on the same files: (a) the batch evaluator (the
benchmark model compiled with Ibis) and (b) one SQL query written by hand for that model. It
checks both give the same row count and totals, and prints the two times and their ratio.
The issue's full size is --leads 1000000 --events 20000000 (several GB of disk and memory).
Not part of the test suite's pass/fail.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from qualify.adapters.parquet_export import AWARDS, TEXT_MAP, TIME
from qualify.analytics.batch_evaluator import scores_as_of
from qualify.analytics.engines import duckdb_sources
from qualify.domain.model_loader import load_model

MODEL = """
name: benchmark
fit:
  grades: {A: 70, B: 45, C: 25}
  rules:
    - name: target industry
      when: {field: account.industry, in: [software, retail]}
      points: 15
  personas:
    - name: buyer
      rules:
        - name: senior
          when: {field: seniority, in: [vp, c_level]}
          points: 40
        - name: big company
          when: {field: account.employees, range: [200, 10000]}
          points: 30
    - name: user
      rules:
        - name: marketing
          when: {field: department, equals: marketing}
          points: 35
engagement:
  half_life_days: 30
  rules:
    - name: pricing page
      event: page_view
      where: {url: {regex: "/pricing"}}
      points: 8
      half_life_days: 14
      cap_per_day: 16
    - name: download
      event: content_download
      points: 10
    - name: unsubscribed
      event: unsubscribe
      points: -20
      half_life_days: null
      once: true
policy:
  mql:
    thresholds: {A: 25, B: 40, C: 70}
"""

HAND_SQL = """
WITH profile AS (
  SELECT l.id, l.seniority, l.department, a.industry, a.employees
  FROM read_parquet('{root}/leads.parquet') l LEFT JOIN read_parquet('{root}/accounts.parquet') a ON l.account_id = a.id
), fit AS (
  SELECT id,
    (CASE WHEN lower(trim(industry)) IN ('software', 'retail') THEN 15 ELSE 0 END) AS shared,
    (CASE WHEN lower(trim(seniority)) IN ('vp', 'c_level') THEN 40 ELSE 0 END)
      + (CASE WHEN employees BETWEEN 200 AND 10000 THEN 30 ELSE 0 END) AS buyer,
    (CASE WHEN lower(trim(department)) = 'marketing' THEN 35 ELSE 0 END) AS user_
  FROM profile
), events AS (
  SELECT id, lead_id, type, occurred_at, properties['url'] AS url
  FROM read_parquet('{root}/events/**/*.parquet', hive_partitioning = true)
  WHERE occurred_at <= TIMESTAMPTZ '{as_of}'
), pricing AS (
  SELECT lead_id, occurred_at,
    greatest(least(16 - (sum(8.0) OVER w - 8.0), 8.0), 0.0) AS award, 14.0 AS half_life
  FROM events WHERE type = 'page_view' AND regexp_matches(url, '(?i)/pricing')
  WINDOW w AS (PARTITION BY lead_id, CAST(occurred_at AS DATE) ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
), downloads AS (
  SELECT lead_id, occurred_at, 10.0 AS award, 30.0 AS half_life FROM events WHERE type = 'content_download'
), unsubscribes AS (
  SELECT lead_id, occurred_at, -greatest(least(20 - (sum(20.0) OVER w - 20.0), 20.0), 0.0) AS award, NULL AS half_life
  FROM events WHERE type = 'unsubscribe'
  WINDOW w AS (PARTITION BY lead_id ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
), awards AS (
  SELECT * FROM pricing UNION ALL SELECT * FROM downloads UNION ALL SELECT * FROM unsubscribes
), engagement AS (
  SELECT lead_id, sum(CASE WHEN half_life IS NULL THEN award
    ELSE award * pow(2.0, -(epoch(TIMESTAMPTZ '{as_of}') - epoch(occurred_at)) / 86400.0 / half_life) END) AS engagement
  FROM awards WHERE award <> 0 GROUP BY lead_id
)
SELECT f.id AS lead_id, greatest(least(greatest(f.shared + f.buyer, f.shared + f.user_), 100), 0) AS fit,
  coalesce(e.engagement, 0.0) AS engagement
FROM fit f LEFT JOIN engagement e ON e.lead_id = f.id
"""


def generate(root: Path, n_leads: int, n_events: int, seed: int) -> datetime:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    n_accounts = max(1, n_leads // 5)
    accounts = pa.table(
        {
            "id": pa.array(range(1, n_accounts + 1), pa.int64()),
            "domain": [f"c{i}.example" for i in range(n_accounts)],
            "industry": [rng.choice(["software", "retail", "finance"]) for _ in range(n_accounts)],
            "employees": [rng.choice([10, 150, 800, 20000]) for _ in range(n_accounts)],
            "attributes": pa.array([[] for _ in range(n_accounts)], TEXT_MAP),
            "name": [None] * n_accounts,
            "revenue": pa.array([None] * n_accounts, pa.float64()),
            "country": ["US"] * n_accounts,
        }
    )
    pq.write_table(accounts, root / "accounts.parquet")
    leads = pa.table(
        {
            "id": pa.array(range(1, n_leads + 1), pa.int64()),
            "email": [f"l{i}@c{i % n_accounts}.example" for i in range(n_leads)],
            "account_id": pa.array([1 + i % n_accounts for i in range(n_leads)], pa.int64()),
            "seniority": [rng.choice(["vp", "manager", "individual", "c_level"]) for _ in range(n_leads)],
            "department": [rng.choice(["marketing", "sales", "it"]) for _ in range(n_leads)],
            "attributes": pa.array([[] for _ in range(n_leads)], TEXT_MAP),
            **{
                c: [None] * n_leads
                for c in ("external_id", "first_name", "last_name", "title", "country", "source", "channel")
            },
            "do_not_email": [False] * n_leads,
            "do_not_call": [False] * n_leads,
        }
    )
    pq.write_table(leads, root / "leads.parquet")
    events_dir = root / "events" / "date=all"
    events_dir.mkdir(parents=True)
    chunk = 1_000_000
    kinds = ["page_view", "page_view", "content_download", "email_open", "unsubscribe"]
    for part, begin in enumerate(range(0, n_events, chunk)):
        size = min(chunk, n_events - begin)
        types = [rng.choice(kinds) for _ in range(size)]
        table = pa.table(
            {
                "id": pa.array(range(begin + 1, begin + size + 1), pa.int64()),
                "event_id": [f"e{begin + i}" for i in range(size)],
                "lead_id": pa.array([rng.randint(1, n_leads) for _ in range(size)], pa.int64()),
                "type": types,
                "occurred_at": pa.array(
                    [start + timedelta(seconds=rng.randint(0, 180 * 86400)) for _ in range(size)], TIME
                ),
                "received_at": pa.array([start] * size, TIME),
                "properties": pa.array(
                    [[("url", rng.choice(["/pricing", "/blog", "/"]))] if t == "page_view" else [] for t in types],
                    TEXT_MAP,
                ),
                "awards": pa.array([[] for _ in range(size)], AWARDS),
            }
        )
        pq.write_table(table, events_dir / f"part-{part}.parquet")
    return start + timedelta(days=181)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spark", action="store_true", help="also run the compiled model on Spark local mode")
    args = parser.parse_args()
    model = load_model(MODEL, "benchmark model")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        began = time.perf_counter()
        as_of = generate(root, args.leads, args.events, args.seed)
        print(f"generated {args.leads:,} leads and {args.events:,} events in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        ours = scores_as_of(model, duckdb_sources(root), as_of).to_pyarrow()
        compiled = time.perf_counter() - began
        began = time.perf_counter()
        hand = duckdb.sql(HAND_SQL.format(root=root, as_of=as_of.isoformat())).to_arrow_table()
        handwritten = time.perf_counter() - began
        spark = _on_spark(model, root, as_of) if args.spark else None
    totals = [round(sum(t.column(c).to_pylist()), 3) for t in (ours, hand) for c in ("fit", "engagement")]
    print(
        f"rows: compiled {ours.num_rows:,}, hand-written {hand.num_rows:,}; totals fit/engagement: "
        f"compiled {totals[0]:,}/{totals[1]:,}, hand-written {totals[2]:,}/{totals[3]:,}"
    )
    assert (
        ours.num_rows == hand.num_rows
        and abs(totals[0] - totals[2]) < 1e-6
        and abs(totals[1] - totals[3]) <= 1e-6 * abs(totals[3])
    )
    print(f"compiled model (Ibis on DuckDB): {compiled:.2f} s")
    print(f"hand-written DuckDB SQL        : {handwritten:.2f} s")
    print(f"ratio compiled / hand-written  : {compiled / handwritten:.2f}  (aim: at most 1.5)")
    if spark is not None:
        table, seconds = spark
        fit, engagement = (round(sum(table.column(c).to_pylist()), 3) for c in ("fit", "engagement"))
        print(
            f"compiled model on Spark (local): {seconds:.2f} s, {table.num_rows:,} rows, totals {fit:,}/{engagement:,}"
        )
        assert (
            table.num_rows == ours.num_rows
            and abs(fit - totals[0]) < 1e-6
            and abs(engagement - totals[1]) <= 1e-6 * abs(totals[1])
        )


def _on_spark(model: Any, root: Path, as_of: datetime) -> tuple[pa.Table, float]:
    from qualify.analytics.engines import spark_session, spark_sources

    session = spark_session()  # started before the clock: the JVM's start is not the query's cost
    began = time.perf_counter()
    table = scores_as_of(model, spark_sources(root, session), as_of).to_pyarrow()
    return table, time.perf_counter() - began


if __name__ == "__main__":
    main()
