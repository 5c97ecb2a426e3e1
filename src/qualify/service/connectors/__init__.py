"""Connectors to the systems teams already run: event streams in the Segment spec (and, later, CRMs)."""
