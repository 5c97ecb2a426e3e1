"""Adapters: the SQL store, files, SMTP, HTTP and the template engine. The only place that talks to the outside."""
