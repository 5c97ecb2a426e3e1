"""Analytics use cases: backtests, batch scoring on an engine, the Parquet export they read."""
