"""The history, analysed: training, threshold advice, learned points, backtests, batch scoring, insights, the Parquet export."""
