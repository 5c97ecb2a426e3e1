"""Imports: files (CSV, TSV, JSON Lines, Parquet) through a mapping into the lifecycle."""
