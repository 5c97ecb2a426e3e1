"""Integrations: announcements (the webhook outbox) and their delivery to subscribers."""
