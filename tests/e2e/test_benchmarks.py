"""The benchmarks still run: each at a tiny size (their figures are not checked, only that they
finish and print their ratio; benchmarks are not part of pass/fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import postgres_url, require_postgres

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "args",
    [
        ["benchmarks/ingest.py", "--events", "600", "--leads", "50", "--batch", "200", "--automation"],
        ["benchmarks/ingest.py", "--long-history", "300"],
        [
            "benchmarks/ingest.py",
            "--accounts",
            "--events",
            "600",
            "--leads",
            "50",
            "--batch",
            "200",
            "--pass-every",
            "1",
        ],
        ["benchmarks/batch_scoring.py", "--leads", "300", "--events", "3000"],
        # The smallest demo world that `train` takes with room to spare: 327 rows, 38 positive
        # (400 leads give exactly the 200 rows it needs at least).
        ["benchmarks/predictive.py", "--only", "demo", "--demo-leads", "600"],
        ["benchmarks/predictive_ingest.py", "--leads", "600", "--events", "400", "--batch", "200"],
        ["benchmarks/dashboard.py", "--leads", "400", "--repeat", "1"],
        ["benchmarks/history_import.py", "--people", "60", "--events", "1500"],
        ["benchmarks/backtest.py", "--leads", "80", "--days", "30", "--chunk", "40"],
    ],
    ids=[
        "ingest",
        "ingest_long_history",
        "ingest_accounts",
        "batch_scoring",
        "predictive_demo",
        "predictive_ingest",
        "dashboard",
        "history_import",
        "backtest",
    ],
)
@pytest.mark.slow
def test_the_benchmark_runs_at_a_tiny_size(args: list[str]) -> None:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ratio" in result.stdout.lower(), result.stdout[-2000:]


@pytest.mark.slow
def test_the_predictive_benchmark_runs_on_the_real_data(shared_data: Path) -> None:
    result = subprocess.run(
        # The demo part runs at a tiny size above, and X Education's training through the command
        # line with its figures checked (test_known_outcomes.py): here the Olist part.
        [sys.executable, "benchmarks/predictive.py", "--data", str(shared_data), "--only", "olist"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ratio to best baseline" in result.stdout and "Olist" in result.stdout


@pytest.mark.slow
def test_the_postgres_volume_benchmark_runs_at_a_tiny_size() -> None:
    require_postgres()
    args = [
        "--leads",
        "400",
        "--template-leads",
        "200",
        "--days",
        "30",
        "--batches",
        "2",
        "--batch",
        "20",
        "--probes",
        "5",
    ]
    result = subprocess.run(
        [sys.executable, "benchmarks/postgres_volume.py", "--db", postgres_url(), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "grown / template" in result.stdout and "400 leads" in result.stdout, result.stdout[-2000:]
