"""The batch side: the scoring model and the funnel reports compiled into queries that run on several engines (Ibis).

Nothing here writes to the store; it reads the store's tables or a Parquet export of them.
"""
