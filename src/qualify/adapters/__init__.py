"""Adapters: the SQL store and, later, senders. The only place that talks to the outside."""
